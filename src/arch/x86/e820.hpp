// The guest's physical memory map as firmware would report it (BIOS e820).
// Both boot protocols hand the guest this one list: Linux's boot_params
// e820 table and PVH's hvm_memmap_table.
#pragma once

#include <cstdint>
#include <vector>

namespace popek::arch::x86 {

// Values match the e820 / hvm_memmap_table_entry type field.
enum class E820Type : uint32_t {
    Ram = 1,
    Reserved = 2,
    Acpi = 3,
    Nvs = 4,
};

struct E820Entry {
    uint64_t addr;
    uint64_t size;
    E820Type type;

    [[nodiscard]] uint64_t end() const { return addr + size; }
    bool operator==(const E820Entry&) const = default;
};

// The memory map of a VM with `ram_size` bytes of RAM laid out by
// layout.hpp's ram_ranges(): conventional memory below the EBDA, the
// reserved BIOS area [EBDA, 1 MiB) holding the ACPI tables, RAM up to the
// MMIO gap, the PCI ECAM window (reserved, so Linux trusts MMCONFIG), and RAM
// above 4 GiB. Sorted by address, non-overlapping.
std::vector<E820Entry> e820_map(uint64_t ram_size);

}  // namespace popek::arch::x86
