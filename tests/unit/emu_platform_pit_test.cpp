// 8254 PIT model (src/hv/emu/platform/pit.*) with fake time.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "hv/emu/platform/pit.hpp"

namespace popek::hv::emu::platform {
namespace {

constexpr uint64_t kSec = 1'000'000'000;

// Guest-clock time of PIT tick t (rounded up, as the model schedules).
uint64_t at_tick(uint64_t t) { return (t * kSec + Pit::kHz - 1) / Pit::kHz; }

struct Fixture {
    Pit pit;
    std::vector<bool> irq;
    Fixture() {
        pit.on_irq0 = [this](bool level) { irq.push_back(level); };
    }
    size_t pulses() const {
        size_t n = 0;
        for (size_t i = 0; i + 1 < irq.size(); ++i)
            if (irq[i] && !irq[i + 1]) ++n;
        return n;
    }
    uint16_t latched(unsigned ch, uint64_t now) {
        pit.write(0x43, static_cast<uint8_t>(ch << 6), now);  // counter latch
        const uint8_t lo = pit.read(static_cast<uint16_t>(0x40 + ch), now + 5000);
        const uint8_t hi = pit.read(static_cast<uint16_t>(0x40 + ch), now + 9000);
        return static_cast<uint16_t>(lo | hi << 8);
    }
};

TEST(EmuPlatformPit, LinuxPeriodicClockevent) {
    Fixture f;
    const uint16_t latch = (Pit::kHz + 125) / 250;  // HZ=250 -> 4773
    f.pit.write(0x43, 0x34, 1000);                   // ch0, lohi, mode 2
    EXPECT_EQ(f.pit.next_event_ns(), UINT64_MAX);   // no count yet
    f.pit.write(0x40, latch & 0xff, 1000);
    EXPECT_EQ(f.pit.next_event_ns(), UINT64_MAX);
    f.pit.write(0x40, latch >> 8, 1000);
    const uint64_t first = f.pit.next_event_ns();
    EXPECT_EQ(first, 1000 + at_tick(latch));
    f.pit.tick(first - 1);
    EXPECT_TRUE(f.irq.empty());
    f.pit.tick(first);
    EXPECT_EQ(f.irq, (std::vector<bool>{true, false}));  // one pulse, line rests low
    EXPECT_EQ(f.pit.next_event_ns(), 1000 + at_tick(2u * latch));
    // Counting down within the period, read through a latch.
    const uint64_t quarter = 1000 + at_tick(latch + latch / 4);
    const uint16_t v = f.latched(0, quarter);
    EXPECT_LE(v, latch - latch / 4 + 1);
    EXPECT_GE(v, latch - latch / 4 - 1);
    // 10 periods later in one tick: coalesced into one interrupt, phase kept.
    f.pit.tick(1000 + at_tick(12u * latch) + 10);
    EXPECT_EQ(f.pulses(), 2u);
    EXPECT_EQ(f.pit.next_event_ns(), 1000 + at_tick(13u * latch));
}

TEST(EmuPlatformPit, Mode0OneShotAndShutdown) {
    Fixture f;
    f.pit.write(0x43, 0x30, 0);  // ch0, lohi, mode 0
    f.pit.write(0x40, 100, 0);
    f.pit.write(0x40, 0, 0);
    EXPECT_EQ(f.pit.next_event_ns(), at_tick(100));
    f.pit.tick(at_tick(100));
    EXPECT_EQ(f.pulses(), 1u);
    EXPECT_EQ(f.pit.next_event_ns(), UINT64_MAX);
    f.pit.tick(kSec);
    EXPECT_EQ(f.pulses(), 1u);
    // Linux's shutdown writes mode 0 with count 0: 65536 ticks, once.
    f.pit.write(0x43, 0x30, kSec);
    f.pit.write(0x40, 0, kSec);
    f.pit.write(0x40, 0, kSec);
    EXPECT_EQ(f.pit.next_event_ns(), kSec + at_tick(0x10000));
    // Reprogramming with a control word cancels it.
    f.pit.write(0x43, 0x30, kSec + 10);
    EXPECT_EQ(f.pit.next_event_ns(), UINT64_MAX);
}

TEST(EmuPlatformPit, Mode0FirstByteStopsTheCount) {
    Fixture f;
    f.pit.write(0x43, 0x30, 0);
    f.pit.write(0x40, 0x10, 0);
    f.pit.write(0x40, 0x00, 0);
    f.pit.write(0x40, 0x20, 100);  // first byte of a new count
    EXPECT_EQ(f.pit.next_event_ns(), UINT64_MAX);
    f.pit.write(0x40, 0x00, 200);
    EXPECT_EQ(f.pit.next_event_ns(), 200 + at_tick(0x20));
}

TEST(EmuPlatformPit, Channel2CalibrationThroughPort61) {
    // pit_calibrate_tsc(): gate on, speaker off, mode 0 on channel 2, then
    // poll port 0x61 bit 5 until OUT2 goes high.
    Fixture f;
    EXPECT_EQ(f.pit.read(0x61, 0) & 0x01, 0);
    f.pit.write(0x61, static_cast<uint8_t>((f.pit.read(0x61, 0) & ~0x02) | 0x01), 0);
    f.pit.write(0x43, 0xb0, 0);
    const uint16_t latch = Pit::kHz / 20;  // 50 ms
    f.pit.write(0x42, latch & 0xff, 500);
    f.pit.write(0x42, latch >> 8, 500);
    EXPECT_EQ(f.pit.read(0x61, 500) & 0x20, 0);
    EXPECT_EQ(f.pit.read(0x61, 500 + at_tick(latch) - 1) & 0x20, 0);
    EXPECT_EQ(f.pit.read(0x61, 500 + at_tick(latch)) & 0x20, 0x20);
    EXPECT_EQ(f.pit.read(0x61, 500 + at_tick(latch)) & 0x0f, 0x01);
    EXPECT_TRUE(f.irq.empty());  // channel 2 raises no interrupt
}

TEST(EmuPlatformPit, QuickCalibrationMsbPolling) {
    // quick_pit_calibrate(): count 0xffff, then unlatched lo/hi reads whose
    // MSB must fall by one every 256 ticks.
    Fixture f;
    f.pit.write(0x61, 0x01, 0);
    f.pit.write(0x43, 0xb0, 0);
    f.pit.write(0x42, 0xff, 0);
    f.pit.write(0x42, 0xff, 0);
    for (uint64_t t : {0ull, 100ull, 256ull, 1000ull, 5000ull, 30000ull}) {
        const uint64_t now = at_tick(t);
        (void)f.pit.read(0x42, now);           // LSB
        const uint8_t msb = f.pit.read(0x42, now);  // MSB
        EXPECT_EQ(msb, (0xffff - t) >> 8) << t;
    }
}

TEST(EmuPlatformPit, GateLowPausesMode0) {
    Fixture f;
    f.pit.write(0x61, 0x01, 0);
    f.pit.write(0x43, 0xb0, 0);
    f.pit.write(0x42, 0xe8, 0);
    f.pit.write(0x42, 0x03, 0);  // 1000
    f.pit.write(0x61, 0x00, at_tick(300));
    EXPECT_EQ(f.latched(2, at_tick(900)), 700u);
    f.pit.write(0x61, 0x01, at_tick(2000));
    // 700 ticks left (give or take the one-tick rounding of ns <-> ticks).
    EXPECT_EQ(f.pit.read(0x61, at_tick(2000 + 698)) & 0x20, 0);
    EXPECT_EQ(f.pit.read(0x61, at_tick(2000 + 701)) & 0x20, 0x20);
}

TEST(EmuPlatformPit, Mode3SquareWaveAndGateRestart) {
    Fixture f;
    f.pit.write(0x61, 0x03, 0);  // gate on, speaker on
    f.pit.write(0x43, 0xb6, 0);  // ch2, lohi, mode 3
    f.pit.write(0x42, 100, 0);
    f.pit.write(0x42, 0, 0);
    EXPECT_EQ(f.pit.read(0x61, at_tick(10)) & 0x20, 0x20);
    EXPECT_EQ(f.pit.read(0x61, at_tick(60)) & 0x20, 0);
    EXPECT_EQ(f.pit.read(0x61, at_tick(110)) & 0x20, 0x20);
    EXPECT_EQ(f.latched(2, at_tick(10)) % 2, 0u);  // counts by two
    f.pit.write(0x61, 0x02, at_tick(160));          // gate low: output high
    EXPECT_EQ(f.pit.read(0x61, at_tick(170)) & 0x20, 0x20);
    f.pit.write(0x61, 0x03, at_tick(1000));  // rising gate restarts the period
    EXPECT_EQ(f.pit.read(0x61, at_tick(1040)) & 0x20, 0x20);
    EXPECT_EQ(f.pit.read(0x61, at_tick(1060)) & 0x20, 0);
}

TEST(EmuPlatformPit, Mode3OnChannel0InterruptsEachPeriod) {
    Fixture f;
    f.pit.write(0x43, 0x36, 0);  // ch0, lohi, mode 3 (the BIOS's 18.2 Hz)
    f.pit.write(0x40, 0, 0);
    f.pit.write(0x40, 0, 0);
    EXPECT_EQ(f.pit.next_event_ns(), at_tick(0x10000));
    f.pit.tick(at_tick(0x10000));
    EXPECT_EQ(f.pit.next_event_ns(), at_tick(0x20000));
    EXPECT_EQ(f.pulses(), 1u);
}

TEST(EmuPlatformPit, ReadBackStatusAndCount) {
    Fixture f;
    f.pit.write(0x43, 0x74, 0);  // ch1, lohi, mode 2
    f.pit.write(0x43, 0xe4, 0);  // read-back status of ch1
    EXPECT_EQ(f.pit.read(0x41, 0), 0x40 | 0x80 | 0x30 | 0x04);  // null count, OUT high
    f.pit.write(0x41, 0x00, 0);
    f.pit.write(0x41, 0x10, 0);  // 4096
    f.pit.write(0x43, 0xc4, at_tick(96));  // status and count of ch1
    EXPECT_EQ(f.pit.read(0x41, at_tick(500)), 0x80 | 0x30 | 0x04);  // status first
    EXPECT_EQ(f.pit.read(0x41, at_tick(500)), 0xa0);  // count 4000 = 0x0fa0 latched at tick 96
    // Latching again before the count is fully read: the count latch is
    // ignored, the (free) status latch is taken and read first.
    f.pit.write(0x43, 0xc4, at_tick(700));
    EXPECT_EQ(f.pit.read(0x41, at_tick(800)), 0x80 | 0x30 | 0x04);
    EXPECT_EQ(f.pit.read(0x41, at_tick(800)), 0x0f);
    // Nothing latched any more: live reads.
    const uint8_t lo = f.pit.read(0x41, at_tick(900));
    const uint8_t hi = f.pit.read(0x41, at_tick(900));
    EXPECT_EQ(lo | hi << 8, 4096 - 900);
    EXPECT_EQ(f.pit.read(0x43, 0), 0xff);
}

TEST(EmuPlatformPit, LobyteAndHibyteAccess) {
    Fixture f;
    f.pit.write(0x43, 0x14, 0);  // ch0, lobyte, mode 2
    f.pit.write(0x40, 200, 0);
    EXPECT_EQ(f.pit.next_event_ns(), at_tick(200));
    EXPECT_EQ(f.pit.read(0x40, at_tick(50)), 150);
    EXPECT_EQ(f.pit.read(0x40, at_tick(60)), 140);
    f.pit.write(0x43, 0x24, 0);  // ch0, hibyte, mode 2
    f.pit.write(0x40, 2, 0);     // 512
    EXPECT_EQ(f.pit.next_event_ns(), at_tick(512));
    EXPECT_EQ(f.pit.read(0x40, at_tick(10)), 1);
}

TEST(EmuPlatformPit, Mode4Strobe) {
    Fixture f;
    f.pit.write(0x61, 0x01, 0);
    f.pit.write(0x43, 0xb8, 0);  // ch2, lohi, mode 4
    f.pit.write(0x42, 50, 0);
    f.pit.write(0x42, 0, 0);
    EXPECT_EQ(f.pit.read(0x61, at_tick(49)) & 0x20, 0x20);
    EXPECT_EQ(f.pit.read(0x61, at_tick(50)) & 0x20, 0);  // one low clock
    EXPECT_EQ(f.pit.read(0x61, at_tick(51)) & 0x20, 0x20);
    f.pit.write(0x43, 0x38, 0);  // mode 4 on ch0: one interrupt
    f.pit.write(0x40, 50, 0);
    f.pit.write(0x40, 0, 0);
    f.pit.tick(at_tick(50));
    f.pit.tick(at_tick(5000000));
    EXPECT_EQ(f.pulses(), 1u);
}

TEST(EmuPlatformPit, Port61RefreshToggle) {
    Pit pit;
    const uint8_t a = pit.read(0x61, 0) & 0x10;
    const uint8_t b = pit.read(0x61, 15085) & 0x10;
    EXPECT_NE(a, b);
    EXPECT_EQ(pit.read(0x44, 0), 0xff);
}

TEST(EmuPlatformPit, SaveRestore) {
    Fixture f;
    f.pit.write(0x43, 0x34, 0);
    f.pit.write(0x40, 0x00, 0);
    f.pit.write(0x40, 0x10, 0);
    f.pit.write(0x61, 0x01, 0);
    f.pit.write(0x43, 0xb0, 0);
    f.pit.write(0x42, 0x00, 0);
    f.pit.write(0x42, 0x20, 0);
    f.pit.write(0x43, 0x00, 1000);  // ch0 latched
    const auto blob = f.pit.save();
    Fixture g;
    ASSERT_TRUE(g.pit.restore(blob));
    EXPECT_EQ(g.pit.save(), blob);
    EXPECT_EQ(g.pit.next_event_ns(), f.pit.next_event_ns());
    EXPECT_EQ(g.pit.read(0x61, at_tick(0x2000)) & 0x20, 0x20);
    g.pit.tick(g.pit.next_event_ns());
    EXPECT_EQ(g.pulses(), 1u);

    EXPECT_FALSE(g.pit.restore({}));
    auto bad = blob;
    bad[8] = 6;  // mode 6 is stored as 2
    EXPECT_FALSE(g.pit.restore(bad));
    std::mt19937_64 rng(4);
    for (int i = 0; i < 20000; ++i) {
        std::vector<uint8_t> b = blob;
        if (i % 2) {
            b.resize(rng() % 256);
            for (auto& x : b) x = static_cast<uint8_t>(rng());
        } else {
            b[rng() % b.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
        }
        Pit p;
        if (p.restore(b)) {
            const uint64_t now = rng();
            p.tick(now);
            for (int port : {0x40, 0x41, 0x42, 0x61}) (void)p.read(static_cast<uint16_t>(port), now);
            p.write(0x61, 0x01, now);
            (void)p.next_event_ns();
        }
    }
}

}  // namespace
}  // namespace popek::hv::emu::platform
