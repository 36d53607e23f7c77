// The guest's ACPI tables (ACPI 6.3, hardware-reduced): RSDP, XSDT, FADT,
// MADT, MCFG (PCI ECAM) and a DSDT with the legacy devices, the PCI root
// bridge, the CPUs and \_S5.
//
// Everything sits in [kAcpiStart, kAcpiEnd): the RSDP first (16-byte aligned,
// where a BIOS-style scan finds it), then the tables, each 8-byte aligned.
#pragma once

#include <cstdint>
#include <vector>

#include "base/result.hpp"
#include "memory/guest_memory.hpp"

namespace popek::arch::x86 {

// CPU i gets APIC id i and ACPI processor UID i. Ids below 255 are described
// by xAPIC entries, the rest by x2APIC entries (which the guest then needs
// x2APIC mode to reach).
constexpr uint32_t kAcpiMaxCpus = 1024;

// The I/O APIC's id in the MADT: KVM's in-kernel IOAPIC resets its ID
// register to 0, and xAPIC-era I/O APIC ids do not share a namespace with
// local APIC ids, so 0 is both true and unambiguous.
constexpr uint8_t kIoapicId = 0;

struct AcpiConfig {
    uint32_t cpu_count = 1;  // 1..kAcpiMaxCpus
    // Describe ISA IRQ 0 (the PIT) as wired to GSI 2, as on PC hardware and
    // QEMU. Only true if the VMM routes GSI 0 to IOAPIC pin 2
    // (KVM_SET_GSI_ROUTING); KVM's default routing keeps it on pin 0.
    bool isa_irq0_on_gsi2 = false;
};

// The tables as one blob to copy to guest memory at blob_addr.
struct AcpiTables {
    uint64_t rsdp_addr = 0;
    uint64_t blob_addr = 0;
    std::vector<uint8_t> blob;
};

base::Result<AcpiTables> build_acpi_tables(const AcpiConfig& config);

// Builds the tables and writes them to guest memory; returns the RSDP's address.
base::Result<uint64_t> write_acpi_tables(const memory::GuestMemory& memory, const AcpiConfig& config);

}  // namespace popek::arch::x86
