// ACPI PM timer model (src/hv/emu/platform/pm_timer.*).
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "hv/emu/platform/pm_timer.hpp"

namespace popek::hv::emu::platform {
namespace {

TEST(EmuPlatformPmTimer, CountsAt3579545HzAndWraps) {
    PmTimer t;
    EXPECT_EQ(t.read(0), 0u);
    EXPECT_EQ(t.read(1'000'000'000), 3579545u);
    EXPECT_EQ(t.read(1'000'000'000) - t.read(999'000'000), 3580u);  // 1 ms, floor rounding
    // 24 bits wrap after 2^24 ticks (about 4.69 s).
    const uint64_t wrap_ns = (1ull << 24) * 1'000'000'000 / PmTimer::kHz + 1;
    EXPECT_LT(t.read(wrap_ns), 10u);
    PmTimer wide(true);
    EXPECT_EQ(wide.read(wrap_ns), (1u << 24) + wide.read(wrap_ns) - (1u << 24));
    EXPECT_GE(wide.read(wrap_ns), 1u << 24);
}

TEST(EmuPlatformPmTimer, SaveRestore) {
    PmTimer wide(true);
    PmTimer t;
    ASSERT_TRUE(t.restore(wide.save()));
    EXPECT_GE(t.read(5'000'000'000), 1u << 24);
    EXPECT_FALSE(t.restore({}));
    auto bad = wide.save();
    bad.back() = 2;
    EXPECT_FALSE(t.restore(bad));
    std::mt19937_64 rng(6);
    for (int i = 0; i < 2000; ++i) {
        std::vector<uint8_t> b(rng() % 16);
        for (auto& x : b) x = static_cast<uint8_t>(rng());
        PmTimer p;
        if (p.restore(b)) (void)p.read(rng());
    }
}

}  // namespace
}  // namespace popek::hv::emu::platform
