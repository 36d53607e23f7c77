// The guest-physical memory map of an x86 popek VM. One place for every
// fixed address: boot structures, ACPI, the MMIO gap and its devices.
#pragma once

#include <cstdint>
#include <vector>

#include "base/bytes.hpp"
#include "memory/guest_memory.hpp"

namespace popek::arch::x86 {

using base::GiB;
using base::KiB;
using base::MiB;

// Low memory (below 1 MiB).
constexpr uint64_t kBootGdt = 0x500;           // GDT for 64-bit bzImage entry
constexpr uint64_t kPvhStartInfo = 0x6000;     // struct hvm_start_info
constexpr uint64_t kPvhModlist = 0x6200;       // hvm_modlist_entry[] (the initrd is module 0)
constexpr uint64_t kPvhMemmap = 0x6400;        // hvm_memmap_table_entry[]
constexpr uint64_t kPvhMemmapMax = 64;         // entries that fit before kZeroPage
constexpr uint64_t kZeroPage = 0x7000;         // Linux boot_params
constexpr uint64_t kBootPml4 = 0x9000;         // identity page tables for 64-bit entry
constexpr uint64_t kBootPdpt = 0xa000;
constexpr uint64_t kBootPd = 0xb000;           // 4 pages: identity-map 4 GiB with 2 MiB pages
constexpr uint64_t kBootStack = 0x8ff0;
constexpr uint64_t kCmdline = 0x20000;
constexpr uint64_t kCmdlineMax = 4096;         // including the terminating NUL
constexpr uint64_t kEbdaStart = 0x9fc00;       // [EBDA, 1 MiB) is reported reserved
constexpr uint64_t kAcpiStart = 0xe0000;       // RSDP (legacy search area), then the tables
constexpr uint64_t kAcpiEnd = 0x100000;
constexpr uint64_t kKernelStart = 1 * MiB;     // bzImage protected-mode code

// The 32-bit MMIO gap and what sits in it.
constexpr uint64_t kMmioGapStart = 0xc0000000;
constexpr uint64_t kMmioGapEnd = 4 * GiB;
constexpr uint64_t kPciMmio32Start = 0xc0000000;   // BARs
constexpr uint64_t kPciMmio32Size = 0x20000000;
constexpr uint64_t kPciEcamStart = 0xe0000000;     // PCIe MMCONFIG, bus 0 only
constexpr uint64_t kPciEcamSize = 1 * MiB;
// Platform devices sit between ECAM and the IOAPIC, outside the PCI window
// (which is all the guest ever places BARs in).
constexpr uint64_t kGedStart = 0xfea00000;         // ACPI Generic Event Device (power button)
constexpr uint64_t kGedSize = 4 * KiB;
constexpr uint32_t kGedEventPowerButton = 1u << 0;  // in the GED's event register at offset 0
constexpr uint64_t kIoapicStart = 0xfec00000;
constexpr uint64_t kLapicStart = 0xfee00000;
constexpr uint64_t kHighRamStart = 4 * GiB;

// Fixed I/O ports.
constexpr uint16_t kPortCom1 = 0x3f8;
constexpr uint16_t kPortI8042Data = 0x60;
constexpr uint16_t kPortI8042Cmd = 0x64;
constexpr uint16_t kPortPostCode = 0x80;
constexpr uint16_t kPortDebugExit = 0xf4;         // 4 bytes, QEMU isa-debug-exit compatible
constexpr uint16_t kPortAcpiSleepControl = 0x600; // FADT SLEEP_CONTROL_REG (hardware-reduced)
constexpr uint16_t kPortAcpiSleepStatus = 0x601;  // FADT SLEEP_STATUS_REG
constexpr uint8_t kAcpiS5SleepType = 5;           // \_S5 package value, written as SLP_TYP
constexpr uint8_t kAcpiSleepEnable = 1u << 5;     // SLP_EN in the sleep control register

// PCI configuration mechanism #1: CONFIG_ADDRESS at 0xcf8, CONFIG_DATA at 0xcfc-0xcff.
constexpr uint16_t kPortPciConfig = 0xcf8;
constexpr uint16_t kPortPciConfigLen = 8;

// PCI INTx: INTA of bus-0 slot s is wired to IOAPIC input 16 + (s % 8),
// level-triggered and shared. The DSDT's _PRT and the PCI bus both use this.
constexpr uint32_t kPciIntxGsiBase = 16;
constexpr uint32_t kPciIntxGsiCount = 8;
constexpr uint32_t pci_intx_gsi(uint32_t slot) { return kPciIntxGsiBase + slot % kPciIntxGsiCount; }

constexpr uint8_t kIrqCom1 = 4;
constexpr uint8_t kIrqI8042 = 1;                 // keyboard (ISA IRQ 1)
// The GED's interrupt. KVM's IOAPIC has 24 inputs and PCI INTx takes
// 16-23, so it is an ISA one: 9, where PCs put ACPI's SCI, free here
// because a hardware-reduced FADT has no SCI. Level-triggered, active high
// (the MADT overrides ISA IRQ 9 to say so, as QEMU's PC does for its SCI):
// the GED holds the line high while events are pending, and KVM's IOAPIC
// delivers a level that was raised while the pin was masked as soon as the
// guest unmasks it, where an edge would be lost.
constexpr uint32_t kGsiGed = 9;

static_assert(kPciMmio32Start + kPciMmio32Size <= kPciEcamStart, "PCI window overlaps ECAM");
static_assert(kPciEcamStart + kPciEcamSize <= kGedStart && kGedStart + kGedSize <= kIoapicStart,
              "the GED page must sit between ECAM and the IOAPIC");
static_assert(kGedStart % (4 * KiB) == 0, "the GED register page is page-aligned");
static_assert(kGsiGed < kPciIntxGsiBase && kGsiGed != kIrqCom1 && kGsiGed != kIrqI8042 && kGsiGed != 0 &&
                  kGsiGed != 2,
              "the GED's GSI collides with another interrupt (0 and 2 are the PIT's)");

constexpr uint64_t kMinRam = 16 * MiB;
constexpr uint64_t kMaxRam = 1024 * GiB;

// RAM ranges for a VM of `ram_size` bytes: low RAM up to the MMIO gap, the
// rest above 4 GiB.
inline std::vector<memory::RamRange> ram_ranges(uint64_t ram_size) {
    std::vector<memory::RamRange> out;
    uint64_t low = ram_size < kMmioGapStart ? ram_size : kMmioGapStart;
    out.push_back({0, low});
    if (ram_size > low) out.push_back({kHighRamStart, ram_size - low});
    return out;
}

}  // namespace popek::arch::x86
