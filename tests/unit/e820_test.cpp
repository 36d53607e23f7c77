#include "arch/x86/e820.hpp"

#include <gtest/gtest.h>

#include "arch/x86/layout.hpp"

namespace popek::arch::x86 {
namespace {

void expect_sorted_disjoint(const std::vector<E820Entry>& map) {
    for (size_t i = 1; i < map.size(); ++i) EXPECT_LE(map[i - 1].end(), map[i].addr) << "entry " << i;
}

uint64_t ram_total(const std::vector<E820Entry>& map) {
    uint64_t total = 0;
    for (const auto& e : map)
        if (e.type == E820Type::Ram) total += e.size;
    return total;
}

const E820Entry kLowRam{0, kEbdaStart, E820Type::Ram};
const E820Entry kBiosArea{kEbdaStart, kKernelStart - kEbdaStart, E820Type::Reserved};
const E820Entry kEcam{kPciEcamStart, kPciEcamSize, E820Type::Reserved};

TEST(E820, Map256MiB) {
    const auto map = e820_map(256 * MiB);
    const std::vector<E820Entry> want{
        kLowRam, kBiosArea, {kKernelStart, 255 * MiB, E820Type::Ram}, kEcam};
    EXPECT_EQ(map, want);
    expect_sorted_disjoint(map);
}

TEST(E820, Map3GiBFillsLowMemoryUpToTheMmioGap) {
    const auto map = e820_map(3 * GiB);
    const std::vector<E820Entry> want{
        kLowRam, kBiosArea, {kKernelStart, kMmioGapStart - kKernelStart, E820Type::Ram}, kEcam};
    EXPECT_EQ(map, want);
    EXPECT_EQ(ram_total(map), 3 * GiB - (kKernelStart - kEbdaStart));
}

TEST(E820, Map4GiBPutsTheRestAbove4GiB) {
    const auto map = e820_map(4 * GiB);
    const std::vector<E820Entry> want{kLowRam,
                                      kBiosArea,
                                      {kKernelStart, kMmioGapStart - kKernelStart, E820Type::Ram},
                                      kEcam,
                                      {kHighRamStart, 4 * GiB - kMmioGapStart, E820Type::Ram}};
    EXPECT_EQ(map, want);
    expect_sorted_disjoint(map);
}

TEST(E820, Map8GiB) {
    const auto map = e820_map(8 * GiB);
    ASSERT_EQ(map.size(), 5u);
    EXPECT_EQ(map.back(), (E820Entry{kHighRamStart, 8 * GiB - kMmioGapStart, E820Type::Ram}));
    EXPECT_EQ(ram_total(map), 8 * GiB - (kKernelStart - kEbdaStart));
    expect_sorted_disjoint(map);
}

TEST(E820, AcpiTablesAndEcamAreReservedNotRam) {
    for (uint64_t size : {256 * MiB, 3 * GiB, 4 * GiB, 8 * GiB}) {
        for (const auto& e : e820_map(size)) {
            const bool has_acpi = e.addr <= kAcpiStart && kAcpiEnd <= e.end();
            const bool has_ecam = e.addr <= kPciEcamStart && kPciEcamStart < e.end();
            if (has_acpi || has_ecam) {
                EXPECT_EQ(e.type, E820Type::Reserved);
            }
        }
    }
}

}  // namespace
}  // namespace popek::arch::x86
