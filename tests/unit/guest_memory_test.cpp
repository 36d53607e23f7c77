#include <gtest/gtest.h>

#include <array>

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

// zero() punches whole pages out of the memfd and memsets the edges; every
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

}  // namespace
}  // namespace popek::memory
