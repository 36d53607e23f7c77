#include <gtest/gtest.h>

#include <array>
#include <utility>
#include <vector>

#include "memory/guest_memory.hpp"

namespace popek::memory {
namespace {

TEST(GuestMemory, RegionsMapWhereAsked) {
    RamRange ranges[] = {{0, 1 << 20}, {4ull << 30, 2 << 20}};
    auto mem = GuestMemory::create(ranges);
    ASSERT_TRUE(mem.ok()) << mem.error().message;
    EXPECT_EQ(mem->ram_size(), 3u << 20);
    EXPECT_NE(mem->host_ptr(0, 1 << 20), nullptr);
    EXPECT_EQ(mem->host_ptr(0, (1 << 20) + 1), nullptr) << "a range crossing a region's end";
    EXPECT_EQ(mem->host_ptr(2 << 20, 1), nullptr) << "the hole between regions";
    EXPECT_NE(mem->host_ptr((4ull << 30) + 4096, 4096), nullptr);
    std::array<uint8_t, 4> in{1, 2, 3, 4}, out{};
    ASSERT_TRUE(mem->write((4ull << 30) + 10, in).ok());
    ASSERT_TRUE(mem->read((4ull << 30) + 10, out).ok());
    EXPECT_EQ(in, out);
    EXPECT_FALSE(mem->write(3 << 20, in).ok());
}

TEST(GuestMemory, RefusesBadRanges) {
    RamRange unaligned[] = {{0, 1000}};
    EXPECT_FALSE(GuestMemory::create(unaligned).ok());
    RamRange overlapping[] = {{0, 8192}, {4096, 8192}};
    EXPECT_FALSE(GuestMemory::create(overlapping).ok());
    EXPECT_FALSE(GuestMemory::create({}).ok());
}

// zero() discards whole pages and memsets the edges; every
// byte in the range must read back zero and nothing outside it may change.
TEST(GuestMemory, ZeroClearsExactlyTheRange) {
    RamRange ranges[] = {{0, 64 << 10}};
    auto mem = GuestMemory::create(ranges);
    ASSERT_TRUE(mem.ok());
    auto all = mem->span(0, 64 << 10);
    std::fill(all.begin(), all.end(), uint8_t{0xab});
    const uint64_t start = 4096 + 100, len = 3 * 4096 + 50;
    ASSERT_TRUE(mem->zero(start, len).ok());
    for (uint64_t i = 0; i < all.size(); i++) {
        bool inside = i >= start && i < start + len;
        ASSERT_EQ(all[i], inside ? 0 : 0xab) << "byte " << i;
    }
    EXPECT_FALSE(mem->zero(60 << 10, 8 << 10).ok()) << "beyond RAM";
}

using Runs = std::vector<std::pair<uint64_t, uint64_t>>;

Runs populated(const GuestMemory& mem, uint64_t from, uint64_t to) {
    Runs runs;
    auto r = mem.for_each_populated(from, to, [&](uint64_t a, uint64_t b) -> base::Result<void> {
        runs.emplace_back(a, b);
        return {};
    });
    EXPECT_TRUE(r.ok()) << r.error().message;
    return runs;
}

// Anonymous RAM: only pages the kernel handed out are reported, in runs;
// discarded pages are gone again and read as zero; zero() discards too.
TEST(GuestMemory, PopulatedRunsAreThePagesTouchedAndNotDiscarded) {
    RamRange ranges[] = {{0, 1 << 20}, {4ull << 30, 1 << 20}};
    auto mem = GuestMemory::create(ranges);
    ASSERT_TRUE(mem.ok());
    const uint64_t ram = mem->ram_size();
    EXPECT_EQ(populated(*mem, 0, ram), Runs{}) << "fresh RAM holds nothing";
    for (uint64_t page : {3u, 4u, 5u, 9u, 256u, 300u})  // 256+: the second region (RAM layout)
        mem->regions()[page < 256 ? 0 : 1].host[(page % 256) * 4096 + 7] = 1;
    EXPECT_EQ(populated(*mem, 0, ram), (Runs{{3 * 4096, 6 * 4096}, {9 * 4096, 10 * 4096}, {256 * 4096, 257 * 4096},
                                             {300 * 4096, 301 * 4096}}));
    EXPECT_EQ(populated(*mem, 4 * 4096, 9 * 4096), (Runs{{4 * 4096, 6 * 4096}})) << "clipped to the range asked";
    ASSERT_TRUE(mem->discard(4 * 4096, 4096).ok());
    ASSERT_TRUE(mem->zero(9 * 4096, 4096).ok());
    EXPECT_EQ(populated(*mem, 0, 1 << 20), (Runs{{3 * 4096, 4 * 4096}, {5 * 4096, 6 * 4096}}));
    // (Reading maps the kernel's zero page: the page counts as held again.)
    EXPECT_EQ(mem->regions()[0].host[4 * 4096 + 7], 0) << "a discarded page reads as zero";
    EXPECT_EQ(mem->regions()[0].host[9 * 4096 + 7], 0);
    EXPECT_FALSE(mem->discard(100, 4096).ok()) << "not page aligned";
    EXPECT_FALSE(mem->discard(ram - 4096, 8192).ok()) << "beyond RAM";
}

}  // namespace
}  // namespace popek::memory
