#include "arch/x86/e820.hpp"

#include <algorithm>

#include "arch/x86/layout.hpp"

namespace popek::arch::x86 {

std::vector<E820Entry> e820_map(uint64_t ram_size) {
    std::vector<E820Entry> map;
    auto add = [&map](uint64_t start, uint64_t end, E820Type type) {
        if (end > start) map.push_back({start, end - start, type});
    };
    for (const auto& r : ram_ranges(ram_size)) {
        const uint64_t end = r.gpa + r.size;
        if (r.gpa >= kKernelStart) {
            add(r.gpa, end, E820Type::Ram);
            continue;
        }
        // The first range starts at 0: split out the legacy BIOS area.
        add(r.gpa, std::min(end, kEbdaStart), E820Type::Ram);
        add(kEbdaStart, kKernelStart, E820Type::Reserved);
        add(kKernelStart, end, E820Type::Ram);
    }
    add(kPciEcamStart, kPciEcamStart + kPciEcamSize, E820Type::Reserved);
    std::sort(map.begin(), map.end(),
              [](const E820Entry& a, const E820Entry& b) { return a.addr < b.addr; });
    return map;
}

}  // namespace popek::arch::x86
