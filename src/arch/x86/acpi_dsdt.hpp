// The DSDT: \_S5 for power-off through the FADT sleep registers, and under
// \_SB the devices an OS cannot discover on its own (COM1, the i8042, the
// PCI root bridge and its ECAM reservation, the power button and the Generic
// Event Device that reports its presses) and one processor device per CPU.
#pragma once

#include <cstdint>
#include <vector>

#include "arch/x86/acpi.hpp"
#include "base/result.hpp"

namespace popek::arch::x86::acpi {

// The complete DSDT (header and AML), sealed.
base::Result<std::vector<uint8_t>> build_dsdt(const AcpiConfig& config);

}  // namespace popek::arch::x86::acpi
