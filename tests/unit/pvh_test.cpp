#include "arch/x86/pvh.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "arch/x86/e820.hpp"
#include "arch/x86/layout.hpp"

namespace popek::arch::x86 {
namespace {

memory::GuestMemory make_memory(uint64_t size) {
    auto ranges = ram_ranges(size);
    auto mem = memory::GuestMemory::create(ranges);
    EXPECT_TRUE(mem.ok()) << mem.error().message;
    return std::move(mem).value();
}

template <class T>
T read_obj(const memory::GuestMemory& mem, uint64_t gpa) {
    T v{};
    EXPECT_TRUE(mem.read(gpa, {reinterpret_cast<uint8_t*>(&v), sizeof v}).ok());
    return v;
}

TEST(Pvh, StructLayoutsMatchXen) {
    EXPECT_EQ(sizeof(HvmStartInfo), 56u);
    EXPECT_EQ(offsetof(HvmStartInfo, nr_modules), 12u);
    EXPECT_EQ(offsetof(HvmStartInfo, cmdline_paddr), 24u);
    EXPECT_EQ(offsetof(HvmStartInfo, reserved), 52u);
    EXPECT_EQ(offsetof(HvmMemmapTableEntry, type), 16u);
    EXPECT_EQ(offsetof(HvmModlistEntry, cmdline_paddr), 16u);
    // The tables fit between their fixed addresses.
    EXPECT_LE(kPvhStartInfo + sizeof(HvmStartInfo), kPvhModlist);
    EXPECT_LE(kPvhModlist + sizeof(HvmModlistEntry), kPvhMemmap);
    EXPECT_LE(kPvhMemmap + kPvhMemmapMax * sizeof(HvmMemmapTableEntry), kZeroPage);
}

TEST(Pvh, WritesStartInfoMemmapAndModule) {
    const uint64_t ram = 8 * GiB;
    auto mem = make_memory(ram);
    const auto map = e820_map(ram);
    ASSERT_TRUE(write_pvh_start_info(mem, {kCmdline, 0x3000000, 0x123456, 0xe0000, map}).ok());

    const auto si = read_obj<HvmStartInfo>(mem, kPvhStartInfo);
    EXPECT_EQ(si.magic, 0x336ec578u);
    EXPECT_EQ(si.version, 1u);
    EXPECT_EQ(si.flags, 0u);
    EXPECT_EQ(si.cmdline_paddr, kCmdline);
    EXPECT_EQ(si.rsdp_paddr, 0xe0000u);
    EXPECT_EQ(si.reserved, 0u);
    ASSERT_EQ(si.nr_modules, 1u);
    EXPECT_EQ(si.modlist_paddr, kPvhModlist);
    const auto mod = read_obj<HvmModlistEntry>(mem, kPvhModlist);
    EXPECT_EQ(mod.paddr, 0x3000000u);
    EXPECT_EQ(mod.size, 0x123456u);
    EXPECT_EQ(mod.cmdline_paddr, 0u);

    EXPECT_EQ(si.memmap_paddr, kPvhMemmap);
    ASSERT_EQ(si.memmap_entries, map.size());
    for (size_t i = 0; i < map.size(); ++i) {
        const auto e = read_obj<HvmMemmapTableEntry>(mem, kPvhMemmap + i * sizeof(HvmMemmapTableEntry));
        EXPECT_EQ(e.addr, map[i].addr) << i;
        EXPECT_EQ(e.size, map[i].size) << i;
        EXPECT_EQ(e.type, static_cast<uint32_t>(map[i].type)) << i;
        EXPECT_EQ(e.reserved, 0u);
    }
    // RAM is type 1, the BIOS area and ECAM type 2.
    const auto first = read_obj<HvmMemmapTableEntry>(mem, kPvhMemmap);
    EXPECT_EQ(first.type, 1u);
    const auto second = read_obj<HvmMemmapTableEntry>(mem, kPvhMemmap + sizeof(HvmMemmapTableEntry));
    EXPECT_EQ(second.type, 2u);
}

TEST(Pvh, NoInitrdMeansNoModules) {
    auto mem = make_memory(64 * MiB);
    const auto map = e820_map(64 * MiB);
    ASSERT_TRUE(write_pvh_start_info(mem, {kCmdline, 0, 0, 0, map}).ok());
    const auto si = read_obj<HvmStartInfo>(mem, kPvhStartInfo);
    EXPECT_EQ(si.nr_modules, 0u);
    EXPECT_EQ(si.modlist_paddr, 0u);
    EXPECT_EQ(si.rsdp_paddr, 0u);
}

TEST(Pvh, RejectsAMemoryMapThatDoesNotFit) {
    auto mem = make_memory(64 * MiB);
    std::vector<E820Entry> map(kPvhMemmapMax + 1, E820Entry{0, 4096, E820Type::Ram});
    auto r = write_pvh_start_info(mem, {kCmdline, 0, 0, 0, map});
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("memory map"), std::string::npos);
}

}  // namespace
}  // namespace popek::arch::x86
