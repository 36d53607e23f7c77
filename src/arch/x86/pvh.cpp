#include "arch/x86/pvh.hpp"

#include <fmt/format.h>

#include <vector>

#include "arch/x86/layout.hpp"

namespace popek::arch::x86 {

using base::Error;
using base::Result;

Result<void> write_pvh_start_info(const memory::GuestMemory& mem, const PvhBootData& data) {
    if (data.memmap.size() > kPvhMemmapMax)
        return Error{fmt::format("PVH memory map has {} entries; at most {} fit", data.memmap.size(),
                                 kPvhMemmapMax)};
    std::vector<HvmMemmapTableEntry> table;
    table.reserve(data.memmap.size());
    for (const auto& e : data.memmap)
        table.push_back({e.addr, e.size, static_cast<uint32_t>(e.type), 0});
    POPEK_TRY(mem.write(kPvhMemmap,
                        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(table.data()),
                                                 table.size() * sizeof(HvmMemmapTableEntry))));

    HvmStartInfo info{};
    info.magic = kHvmStartMagic;
    info.version = kHvmStartVersion;
    info.cmdline_paddr = data.cmdline_addr;
    info.rsdp_paddr = data.rsdp_addr;
    info.memmap_paddr = kPvhMemmap;
    info.memmap_entries = static_cast<uint32_t>(table.size());
    if (data.initrd_size != 0) {
        const HvmModlistEntry module{data.initrd_addr, data.initrd_size, 0, 0};
        POPEK_TRY(mem.write_obj(kPvhModlist, module));
        info.nr_modules = 1;
        info.modlist_paddr = kPvhModlist;
    }
    return mem.write_obj(kPvhStartInfo, info);
}

}  // namespace popek::arch::x86
