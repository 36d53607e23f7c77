// The PVH boot ABI (Xen's arch-x86/hvm/start_info.h): the kernel is entered
// in 32-bit protected mode with EBX pointing at struct hvm_start_info, which
// locates the command line, the modules (initrd) and the memory map.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "arch/x86/e820.hpp"
#include "base/result.hpp"
#include "memory/guest_memory.hpp"

namespace popek::arch::x86 {

constexpr uint32_t kHvmStartMagic = 0x336ec578;  // XEN_HVM_START_MAGIC_VALUE
constexpr uint32_t kHvmStartVersion = 1;         // has memmap_paddr/memmap_entries

struct HvmStartInfo {
    uint32_t magic;
    uint32_t version;
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr;
    uint64_t rsdp_paddr;
    uint64_t memmap_paddr;    // version >= 1
    uint32_t memmap_entries;  // version >= 1
    uint32_t reserved;
};
static_assert(sizeof(HvmStartInfo) == 56);
static_assert(offsetof(HvmStartInfo, modlist_paddr) == 16);
static_assert(offsetof(HvmStartInfo, rsdp_paddr) == 32);
static_assert(offsetof(HvmStartInfo, memmap_paddr) == 40);
static_assert(offsetof(HvmStartInfo, memmap_entries) == 48);

struct HvmModlistEntry {
    uint64_t paddr;
    uint64_t size;
    uint64_t cmdline_paddr;
    uint64_t reserved;
};
static_assert(sizeof(HvmModlistEntry) == 32);

struct HvmMemmapTableEntry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;  // E820Type values: 1 RAM, 2 reserved, ...
    uint32_t reserved;
};
static_assert(sizeof(HvmMemmapTableEntry) == 24);

// What the PVH boot structures point at; the data itself is already in guest
// memory (the command line at cmdline_addr, the initrd at initrd_addr).
struct PvhBootData {
    uint64_t cmdline_addr;
    uint64_t initrd_addr;  // 0 with initrd_size 0: no module
    uint64_t initrd_size;
    uint64_t rsdp_addr;
    std::span<const E820Entry> memmap;
};

// Writes hvm_start_info at kPvhStartInfo, the memory map at kPvhMemmap and,
// with an initrd, a one-entry module list at kPvhModlist.
base::Result<void> write_pvh_start_info(const memory::GuestMemory& mem, const PvhBootData& data);

}  // namespace popek::arch::x86
