// HPET model (src/hv/emu/platform/hpet.*) with fake time: 100 MHz, so one
// counter tick is exactly 10 ns.
#include <gtest/gtest.h>

#include <random>
#include <utility>
#include <vector>

#include "hv/emu/platform/hpet.hpp"

namespace popek::hv::emu::platform {
namespace {

constexpr uint32_t kCap = 0x000, kConfig = 0x010, kStatus = 0x020, kCounter = 0x0f0;
constexpr uint32_t tconf(unsigned n) { return 0x100 + 0x20 * n; }
constexpr uint32_t tcmp(unsigned n) { return 0x108 + 0x20 * n; }

struct Fixture {
    Hpet hpet;
    std::vector<std::pair<unsigned, bool>> irq;
    Fixture() {
        hpet.on_irq = [this](unsigned line, bool level) { irq.emplace_back(line, level); };
    }
    size_t pulses(unsigned line) const {
        size_t n = 0;
        for (size_t i = 0; i + 1 < irq.size(); ++i)
            if (irq[i] == std::pair{line, true} && irq[i + 1] == std::pair{line, false}) ++n;
        return n;
    }
};

TEST(EmuPlatformHpet, Capabilities) {
    Hpet h;
    const uint64_t cap = h.read(kCap, 8, 0);
    EXPECT_EQ(cap >> 32, 10'000'000u);  // femtoseconds per tick: 100 MHz
    EXPECT_EQ((cap >> 8) & 0x1f, 2u);   // three timers
    EXPECT_TRUE(cap & (1u << 15));      // legacy replacement capable
    EXPECT_TRUE(cap & (1u << 13));      // 64-bit counter
    EXPECT_EQ(cap & 0xff, 1u);
    EXPECT_EQ(h.read(kCap + 4, 4, 0), 10'000'000u);  // Linux reads the period this way
    EXPECT_EQ(h.read(kCap, 4, 0), cap & 0xffffffffu);
    const uint64_t t0 = h.read(tconf(0), 8, 0);
    EXPECT_TRUE(t0 & (1u << 4));  // periodic capable
    EXPECT_TRUE(t0 & (1u << 5));  // 64-bit capable
    EXPECT_EQ(t0 >> 32, 0x00f00000u);
    EXPECT_FALSE(h.read(tconf(1), 8, 0) & (1u << 4));
    EXPECT_EQ(h.read(3, 4, 0), 0u);  // misaligned
    EXPECT_EQ(h.read(0, 2, 0), 0u);  // bad size
}

TEST(EmuPlatformHpet, MainCounter) {
    Hpet h;
    EXPECT_EQ(h.read(kCounter, 8, 5000), 0u);  // halted
    h.write(kConfig, 1, 4, 1000);
    EXPECT_EQ(h.read(kCounter, 8, 1000 + 10'000), 1000u);
    EXPECT_EQ(h.read(kCounter, 4, 1000 + 10'005), 1000u);
    h.write(kConfig, 0, 4, 21'000);  // halt: 2000 ticks
    EXPECT_EQ(h.read(kCounter, 8, 99'000), 2000u);
    h.write(kCounter, 0xffff'fff0, 4, 99'000);
    h.write(kCounter + 4, 0x1, 4, 99'000);
    EXPECT_EQ(h.read(kCounter, 8, 99'000), 0x1'ffff'fff0u);
    h.write(kConfig, 1, 8, 100'000);
    EXPECT_EQ(h.read(kCounter, 8, 100'200), 0x1'ffff'fff0u + 20);
    EXPECT_EQ(h.read(kCounter + 4, 4, 100'200), 0x2u);
}

TEST(EmuPlatformHpet, LinuxLegacyPeriodicClockevent) {
    Fixture f;
    f.hpet.write(kConfig, 3, 4, 0);  // enable + legacy replacement
    const uint32_t delta = 40'000;   // 400 us
    // hpet_clkevt_set_state_periodic(): cfg, then comparator with SETVAL, then period.
    uint32_t cfg = static_cast<uint32_t>(f.hpet.read(tconf(0), 4, 0));
    cfg |= (1u << 2) | (1u << 3) | (1u << 6) | (1u << 8);
    f.hpet.write(tconf(0), cfg, 4, 0);
    const uint64_t now = 50'000;  // counter 5000
    const auto cmp = static_cast<uint32_t>(f.hpet.read(kCounter, 4, now)) + delta;
    f.hpet.write(tcmp(0), cmp, 4, now);
    f.hpet.write(tcmp(0), delta, 4, now + 1000);
    EXPECT_FALSE(f.hpet.read(tconf(0), 4, now) & (1u << 6));  // SETVAL clears itself
    EXPECT_EQ(f.hpet.read(tcmp(0), 4, now), cmp);
    EXPECT_EQ(f.hpet.next_event_ns(), now + uint64_t{delta} * 10);
    f.hpet.tick(now + uint64_t{delta} * 10 - 1);
    EXPECT_TRUE(f.irq.empty());
    f.hpet.tick(now + uint64_t{delta} * 10);
    EXPECT_EQ(f.pulses(0), 1u);  // legacy route: timer 0 is IRQ0
    EXPECT_EQ(f.hpet.read(tcmp(0), 4, now), cmp + delta);
    EXPECT_EQ(f.hpet.next_event_ns(), now + 2ull * delta * 10);
    // Late by several periods: one interrupt, phase kept.
    f.hpet.tick(now + 5ull * delta * 10 + 7);
    EXPECT_EQ(f.pulses(0), 2u);
    EXPECT_EQ(f.hpet.next_event_ns(), now + 6ull * delta * 10);
}

TEST(EmuPlatformHpet, OneShot32BitAndThePassedCheck) {
    Fixture f;
    f.hpet.write(kConfig, 3, 4, 0);
    f.hpet.write(tconf(0), (1u << 2) | (1u << 8), 4, 0);  // oneshot, 32-bit, enabled
    // hpet_clkevt_set_next_event(): comparator = counter + delta.
    f.hpet.write(tcmp(0), 100 + 500, 4, 1000);
    EXPECT_EQ(f.hpet.next_event_ns(), 6000u);
    f.hpet.tick(6000);
    EXPECT_EQ(f.pulses(0), 1u);
    f.hpet.tick(1'000'000);
    EXPECT_EQ(f.pulses(0), 1u);  // once
    // A comparator already passed fires only after the 32-bit wrap (Linux
    // detects this by re-reading the counter and retries).
    f.hpet.write(tcmp(0), 10, 4, 1'000'000);
    EXPECT_EQ(f.hpet.next_event_ns(), (10 + (1ull << 32)) * 10);
    // Legacy timer 1 is IRQ8 (the RTC's line).
    f.hpet.write(tconf(1), (1u << 2), 4, 1'000'000);
    f.hpet.write(tcmp(1), 200'000, 8, 1'000'000);
    f.hpet.tick(2'000'000);
    EXPECT_EQ(f.pulses(8), 1u);
}

TEST(EmuPlatformHpet, RoutedAndLevelTriggered) {
    Fixture f;
    f.hpet.write(kConfig, 1, 4, 0);  // no legacy route
    f.hpet.write(tconf(2), (1u << 1) | (1u << 2) | (21u << 9), 4, 0);  // level, pin 21
    EXPECT_EQ((f.hpet.read(tconf(2), 4, 0) >> 9) & 0x1f, 21u);
    f.hpet.write(tconf(2), (1u << 1) | (1u << 2) | (5u << 9), 4, 0);  // pin 5 not in the cap
    EXPECT_EQ((f.hpet.read(tconf(2), 4, 0) >> 9) & 0x1f, 21u);
    f.hpet.write(tcmp(2), 1000, 8, 0);
    f.hpet.tick(10'000);
    ASSERT_EQ(f.irq.size(), 1u);
    EXPECT_EQ(f.irq[0], std::make_pair(21u, true));
    EXPECT_EQ(f.hpet.read(kStatus, 4, 10'000), 0x4u);
    f.hpet.write(kStatus, 0x3, 4, 10'000);  // other bits: nothing
    EXPECT_EQ(f.irq.size(), 1u);
    f.hpet.write(kStatus, 0x4, 4, 10'000);
    ASSERT_EQ(f.irq.size(), 2u);
    EXPECT_EQ(f.irq[1], std::make_pair(21u, false));
    EXPECT_EQ(f.hpet.read(kStatus, 4, 10'000), 0u);
    // Timers 1 and 2 cannot be periodic.
    f.hpet.write(tconf(2), (1u << 3), 4, 0);
    EXPECT_FALSE(f.hpet.read(tconf(2), 4, 0) & (1u << 3));
}

TEST(EmuPlatformHpet, DisabledInterruptOrCounterDoesNotFire) {
    Fixture f;
    f.hpet.write(tconf(0), (1u << 2), 4, 0);
    f.hpet.write(tcmp(0), 100, 4, 0);
    EXPECT_EQ(f.hpet.next_event_ns(), UINT64_MAX);  // counter halted
    f.hpet.write(kConfig, 1, 4, 0);
    EXPECT_EQ(f.hpet.next_event_ns(), 1000u);
    f.hpet.write(tconf(0), 0, 4, 0);
    EXPECT_EQ(f.hpet.next_event_ns(), UINT64_MAX);
    f.hpet.tick(1'000'000);
    EXPECT_TRUE(f.irq.empty());
}

TEST(EmuPlatformHpet, SaveRestore) {
    Fixture f;
    f.hpet.write(kConfig, 3, 4, 0);
    f.hpet.write(tconf(0), (1u << 2) | (1u << 3) | (1u << 6), 4, 0);
    f.hpet.write(tcmp(0), 1000, 8, 0);
    f.hpet.write(tcmp(0), 1000, 8, 0);
    f.hpet.write(tconf(2), (1u << 1) | (1u << 2) | (22u << 9), 4, 0);
    f.hpet.write(tcmp(2), 50, 8, 0);
    f.hpet.tick(600);
    const auto blob = f.hpet.save();
    Fixture g;
    ASSERT_TRUE(g.hpet.restore(blob));
    EXPECT_EQ(g.hpet.save(), blob);
    EXPECT_EQ(g.hpet.read(kCounter, 8, 5000), 500u);
    EXPECT_EQ(g.hpet.read(kStatus, 8, 5000), 4u);
    EXPECT_EQ(g.hpet.next_event_ns(), 10'000u);
    g.hpet.tick(10'000);
    EXPECT_EQ(g.pulses(0), 1u);

    EXPECT_FALSE(g.hpet.restore({}));
    auto bad = blob;
    bad[8] = 4;  // unknown general config bit
    EXPECT_FALSE(g.hpet.restore(bad));
    std::mt19937_64 rng(5);
    for (int i = 0; i < 20000; ++i) {
        std::vector<uint8_t> b = blob;
        if (i % 2) {
            b.resize(rng() % 160);
            for (auto& x : b) x = static_cast<uint8_t>(rng());
        } else {
            b[rng() % b.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
        }
        Hpet h;
        if (h.restore(b)) {
            const uint64_t now = rng();
            h.tick(now);
            (void)h.read(kCounter, 8, now);
            h.write(kStatus, 7, 4, now);
            h.write(kConfig, 1, 4, now);
            (void)h.next_event_ns();
        }
    }
}

}  // namespace
}  // namespace popek::hv::emu::platform
