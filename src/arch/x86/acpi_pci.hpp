// ACPI for popek's PCI host bridge: the MCFG table (where ECAM is) and the
// DSDT objects for the root bridge \_SB.PCI0 and the motherboard resource
// that reserves the ECAM window.
#pragma once

#include <cstdint>
#include <vector>

#include "arch/x86/aml.hpp"

namespace popek::arch::x86::acpi {

// MCFG (PCI Firmware 3.2, section 4.1.2): one allocation, kPciEcamStart,
// segment 0, buses 0-0. Sealed.
std::vector<uint8_t> build_mcfg();

// Device (PCI0): PNP0A08 (PCIe root) compatible with PNP0A03, segment 0,
// bus 0; _CRS with bus 0-0, the I/O windows around the 0xcf8 config ports
// and the 32-bit MMIO window; _PRT routing INTA of each slot to GSI
// pci_intx_gsi(slot) (layout.hpp).
aml::Term pci_root_bridge();

// Device (MBRD): PNP0C02 reserving the ECAM window. Linux trusts MCFG only
// if a motherboard resource covers it ("MMCONFIG ... reserved as ACPI
// motherboard resource").
aml::Term ecam_reservation();

}  // namespace popek::arch::x86::acpi
