// Loading a kernel into a fresh VM: format detection, the image, the
// command line, the initrd and every boot structure the kernel reads, plus
// the boot CPU's initial registers. The one entry point the VMM uses.
//
// Formats: an ELF executable with a Xen PVH entry note (entered in 32-bit
// protected mode, hvm_start_info in EBX), or a Linux bzImage (entered at its
// 64-bit entry point in long mode, boot_params in RSI).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "base/result.hpp"
#include "hv/x86_state.hpp"
#include "memory/guest_memory.hpp"

namespace popek::arch::x86 {

enum class BootProtocol { Pvh, Linux64 };

struct BootConfig {
    std::span<const uint8_t> kernel;
    std::span<const uint8_t> initrd;  // empty: no initrd
    std::string_view cmdline;
    uint64_t rsdp_addr = 0;           // 0: let the kernel search for the RSDP
};

struct BootInfo {
    BootProtocol protocol;
    uint64_t entry;         // guest-physical entry point
    uint64_t kernel_start;  // lowest loaded byte
    uint64_t kernel_end;    // first byte above the kernel (incl. its boot-time buffers)
    uint64_t initrd_addr;   // 0 if no initrd
    uint64_t initrd_size;
    uint64_t boot_data;     // kPvhStartInfo (EBX) or kZeroPage (RSI)
};

// Detects the kernel format, loads it and writes the command line (at
// kCmdline), the initrd (page aligned, as high in low RAM as it goes), the
// memory map, and the protocol's structures: hvm_start_info for PVH; the
// zero page, GDT and identity page tables for Linux64. The RSDP is only
// referenced: the ACPI tables are someone else's to write.
base::Result<BootInfo> load_kernel(const memory::GuestMemory& mem, const BootConfig& cfg);

// The boot CPU's initial state for the loaded kernel. PVH: 32-bit protected
// mode, paging off, flat 4 GiB segments, EBX = kPvhStartInfo. Linux64: long
// mode on the identity page tables, CS = 0x10, DS = 0x18, RSI = kZeroPage.
// Both: RIP = entry, RFLAGS = 2, a busy TSS in TR, an LDT, the LAPIC enabled.
void boot_cpu_state(const BootInfo& info, hv::Regs& regs, hv::Sregs& sregs);

}  // namespace popek::arch::x86
