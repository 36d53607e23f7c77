// The boot CPU's environment for kernel entry: the boot GDT, the identity
// page tables for 64-bit entry, and the segment values derived from the GDT.
#pragma once

#include <cstdint>

#include "base/result.hpp"
#include "hv/x86_state.hpp"
#include "memory/guest_memory.hpp"

namespace popek::arch::x86 {

// Selectors in the boot GDT at kBootGdt. Linux's 64-bit boot protocol wants
// __BOOT_CS = 0x10 and __BOOT_DS = 0x18.
constexpr uint16_t kBootCode32Selector = 0x08;
constexpr uint16_t kBootCode64Selector = 0x10;
constexpr uint16_t kBootDataSelector = 0x18;
constexpr uint16_t kBootTssSelector = 0x20;   // 16 bytes: a 64-bit TSS descriptor
constexpr uint16_t kBootGdtEntries = 6;

// Control register and EFER bits used at boot.
constexpr uint64_t kCr0Pe = 1u << 0;
constexpr uint64_t kCr0Et = 1u << 4;
constexpr uint64_t kCr0Pg = 1u << 31;
constexpr uint64_t kCr4Pae = 1u << 5;
constexpr uint64_t kEferLme = 1u << 8;
constexpr uint64_t kEferLma = 1u << 10;
constexpr uint64_t kApicBaseBsp = 1u << 8;
constexpr uint64_t kApicBaseEnable = 1u << 11;

// The GDT's descriptor for a selector, as the CPU would cache it.
hv::Segment boot_segment(uint16_t selector);

// Writes the boot GDT at kBootGdt.
base::Result<void> write_boot_gdt(const memory::GuestMemory& mem);

// Writes page tables at kBootPml4/kBootPdpt/kBootPd identity-mapping the
// first 4 GiB with 2 MiB pages.
base::Result<void> write_boot_page_tables(const memory::GuestMemory& mem);

}  // namespace popek::arch::x86
