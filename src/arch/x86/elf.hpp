// ELF executables as boot images: the loadable segments and the PVH entry
// point (Xen's XEN_ELFNOTE_PHYS32_ENTRY note). Parses untrusted bytes: every
// offset and size is checked against the file before it is read.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "base/result.hpp"
#include "memory/guest_memory.hpp"

namespace popek::arch::x86 {

constexpr uint32_t kXenElfNotePhys32Entry = 18;  // XEN_ELFNOTE_PHYS32_ENTRY

// A PT_LOAD segment: file bytes [offset, offset+file_size) go to guest
// physical address paddr; [paddr+file_size, paddr+mem_size) is zeroed.
struct ElfSegment {
    uint64_t paddr;
    uint64_t offset;
    uint64_t file_size;
    uint64_t mem_size;
};

struct ElfImage {
    bool is_64bit = false;
    uint64_t entry = 0;                  // e_entry (a virtual address for Linux)
    std::optional<uint64_t> pvh_entry;   // physical 32-bit entry from the Xen note
    std::vector<ElfSegment> segments;    // PT_LOAD segments with mem_size > 0
};

// True if the bytes start with the ELF magic.
bool is_elf(std::span<const uint8_t> file);

// Parses an ELF32 (i386) or ELF64 (x86-64) executable: header, program
// headers and notes (PT_NOTE segments, else SHT_NOTE sections).
base::Result<ElfImage> parse_elf(std::span<const uint8_t> file);

// Copies the segments of a parsed image into guest memory. Every segment must
// lie wholly in guest RAM at or above kKernelStart. Returns the end of the
// highest segment (the first free byte above the kernel).
base::Result<uint64_t> load_elf_segments(const memory::GuestMemory& mem,
                                         std::span<const uint8_t> file, const ElfImage& image);

}  // namespace popek::arch::x86
