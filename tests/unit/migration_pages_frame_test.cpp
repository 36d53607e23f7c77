// PagesZ frames: each sender lane's Pages payloads as one zstd stream that
// runs across frames; the inflater keeps a stream per lane and refuses bad
// lanes, damaged streams and frames that inflate past the limit.
#include "migration/pages_frame.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace popek::migration {
namespace {

// A Pages-like payload: `n` bytes from `seed` (the inflater does not parse).
std::vector<uint8_t> payload(uint32_t seed, size_t n) {
    std::mt19937 rng(seed);
    std::vector<uint8_t> v(n);
    for (auto& b : v) b = static_cast<uint8_t>(rng() % 16);  // compressible, not trivially
    return v;
}

std::string inflate_error(PagesInflater& in, std::span<const uint8_t> z) {
    auto r = in.inflate(z);
    return r.ok() ? "(inflated)" : r.error().message;
}

TEST(PagesFrame, LanesRoundTripInterleaved) {
    PagesDeflater lane0(0, 1), lane1(1, 1);
    PagesInflater in;
    std::vector<uint8_t> z;
    for (uint32_t i = 0; i < 6; ++i) {
        PagesDeflater& d = i % 2 == 0 ? lane0 : lane1;
        const auto p = payload(i, 100000 + i * 777);
        ASSERT_TRUE(d.deflate(p, z).ok());
        EXPECT_EQ(z[0], i % 2);
        EXPECT_LT(z.size(), p.size());
        auto out = in.inflate(z);
        ASSERT_TRUE(out.ok()) << out.error().message;
        EXPECT_TRUE(std::equal(out->begin(), out->end(), p.begin(), p.end())) << "frame " << i;
    }
}

// The stream runs across frames: a frame repeating the lane's previous one
// is a fraction of it, which a fresh compression per frame could not do.
TEST(PagesFrame, LaterFramesReferToEarlierOnes) {
    PagesDeflater d(0, 1);
    PagesInflater in;
    const auto p = payload(7, 200000);
    std::vector<uint8_t> first, second;
    ASSERT_TRUE(d.deflate(p, first).ok());
    ASSERT_TRUE(d.deflate(p, second).ok());
    EXPECT_LT(second.size() * 20, first.size()) << first.size() << " then " << second.size();
    ASSERT_TRUE(in.inflate(first).ok());
    auto out = in.inflate(second);
    ASSERT_TRUE(out.ok()) << out.error().message;
    EXPECT_TRUE(std::equal(out->begin(), out->end(), p.begin(), p.end()));
    // Without the first frame the second cannot be read.
    PagesInflater fresh;
    EXPECT_FALSE(fresh.inflate(second).ok());
}

TEST(PagesFrame, RefusesBadLanesDamageAndBombs) {
    PagesInflater in;
    EXPECT_NE(inflate_error(in, {}).find("empty"), std::string::npos);
    const std::vector<uint8_t> lane99{99, 1, 2, 3};
    EXPECT_NE(inflate_error(in, lane99).find("lane 99"), std::string::npos);
    std::vector<uint8_t> garbage(300, 0x5a);
    garbage[0] = 0;
    EXPECT_NE(inflate_error(in, garbage).find("damaged"), std::string::npos);

    // More than a sender ever puts in a frame: refused, not inflated.
    PagesDeflater d(1, 1);
    std::vector<uint8_t> big(kMaxInflatedPages + 4096, 0), z;
    ASSERT_TRUE(d.deflate(big, z).ok());
    EXPECT_LT(z.size(), 4096u);
    EXPECT_NE(inflate_error(in, z).find("inflates"), std::string::npos);

    // Every single-byte corruption of a valid frame: refused or (rarely, in
    // literal bytes) a different payload, never a crash.
    PagesDeflater ok(2, 1);
    const auto p = payload(3, 5000);
    ASSERT_TRUE(ok.deflate(p, z).ok());
    for (size_t i = 1; i < z.size(); i += 3) {
        PagesInflater each;
        auto bad = z;
        bad[i] ^= 0x21;
        (void)each.inflate(bad);
    }
}

}  // namespace
}  // namespace popek::migration
