// IOAPIC model (src/hv/emu/platform/ioapic.*).
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "hv/emu/platform/ioapic.hpp"
#include "hv/emu/platform/lapic.hpp"

namespace popek::hv::emu::platform {
namespace {

struct Fixture {
    std::vector<InterruptMessage> sent;
    IoApic io{[this](const InterruptMessage& m) { sent.push_back(m); }};

    void program(unsigned pin, uint32_t low, uint32_t high = 0) {
        io.write(IoApic::kRegSel, 0x10 + 2 * pin + 1);
        io.write(IoApic::kWindow, high);
        io.write(IoApic::kRegSel, 0x10 + 2 * pin);
        io.write(IoApic::kWindow, low);
    }
    uint32_t reg(uint32_t index) {
        io.write(IoApic::kRegSel, index);
        return io.read(IoApic::kWindow);
    }
};

TEST(EmuPlatformIoApic, IdVersionAndResetState) {
    Fixture f;
    EXPECT_EQ(f.reg(0x01), 0x00170011u);  // 24 entries, version 0x11
    f.io.write(IoApic::kRegSel, 0);
    f.io.write(IoApic::kWindow, 0x0a000000);
    EXPECT_EQ(f.reg(0x00), 0x0a000000u);
    EXPECT_EQ(f.reg(0x02), 0x0a000000u);
    EXPECT_EQ(f.io.read(IoApic::kRegSel), 0x02u);
    for (unsigned pin = 0; pin < IoApic::kPins; ++pin) EXPECT_EQ(f.io.redirection(pin), 1u << 16);
    f.io.set_irq(3, true);  // masked: nothing
    EXPECT_TRUE(f.sent.empty());
    EXPECT_EQ(f.io.read(0x20), 0u);  // other offsets
}

TEST(EmuPlatformIoApic, RedirectionEntryFields) {
    Fixture f;
    f.program(4, 0x0000ffff, 0xffffffff);
    // Delivery status (12) and Remote-IRR (14) are read-only; bits 55:32 reserved.
    EXPECT_EQ(f.reg(0x18), 0x0000afffu);
    EXPECT_EQ(f.reg(0x19), 0xff000000u);
    f.program(4, 0x00000131, 0x03000000);  // lowest priority, physical, vector 0x31, dest 3
    f.io.set_irq(4, true);
    ASSERT_EQ(f.sent.size(), 1u);
    EXPECT_EQ(f.sent[0].vector, 0x31);
    EXPECT_EQ(f.sent[0].delivery_mode, kLowestPriority);
    EXPECT_FALSE(f.sent[0].logical);
    EXPECT_FALSE(f.sent[0].level);
    EXPECT_EQ(f.sent[0].dest, 3u);
    f.program(5, 0x00000832, 0x0f000000);  // logical
    f.io.set_irq(5, true);
    EXPECT_TRUE(f.sent[1].logical);
    EXPECT_EQ(f.sent[1].dest, 0x0fu);
}

TEST(EmuPlatformIoApic, EdgeTriggeredDeliversOnRisingEdges) {
    Fixture f;
    f.program(2, 0x30);
    f.io.set_irq(2, true);
    f.io.set_irq(2, true);  // no new edge
    EXPECT_EQ(f.sent.size(), 1u);
    f.io.set_irq(2, false);
    f.io.set_irq(2, true);
    EXPECT_EQ(f.sent.size(), 2u);
    f.io.set_irq(2, false);
    // Masked edges are lost, and unmasking does not replay them.
    f.program(2, 0x10030);
    f.io.set_irq(2, true);
    f.program(2, 0x30);
    EXPECT_EQ(f.sent.size(), 2u);
    f.io.eoi(0x30);  // EOI means nothing to an edge pin
    EXPECT_EQ(f.sent.size(), 2u);
}

TEST(EmuPlatformIoApic, LevelTriggeredRemoteIrrAndEoi) {
    Fixture f;
    f.program(10, 0x8041);  // level, vector 0x41
    f.io.set_irq(10, true);
    ASSERT_EQ(f.sent.size(), 1u);
    EXPECT_TRUE(f.sent[0].level);
    EXPECT_EQ(f.reg(0x10 + 20) & (1u << 14), 1u << 14);  // Remote-IRR
    f.io.set_irq(10, true);
    f.io.set_irq(10, false);
    f.io.set_irq(10, true);
    EXPECT_EQ(f.sent.size(), 1u);  // held by Remote-IRR
    f.io.eoi(0x42);                // other vector: nothing
    EXPECT_EQ(f.sent.size(), 1u);
    f.io.eoi(0x41);  // still asserted: delivered again
    EXPECT_EQ(f.sent.size(), 2u);
    EXPECT_EQ(f.reg(0x10 + 20) & (1u << 14), 1u << 14);
    f.io.set_irq(10, false);
    f.io.eoi(0x41);
    EXPECT_EQ(f.sent.size(), 2u);
    EXPECT_EQ(f.reg(0x10 + 20) & (1u << 14), 0u);
}

TEST(EmuPlatformIoApic, UnmaskingAnAssertedLevelPinDelivers) {
    Fixture f;
    f.program(9, 0x18050);  // level, masked
    f.io.set_irq(9, true);
    EXPECT_TRUE(f.sent.empty());
    f.program(9, 0x8050);
    EXPECT_EQ(f.sent.size(), 1u);
    // Switching to edge clears Remote-IRR.
    f.program(9, 0x0050);
    EXPECT_EQ(f.reg(0x10 + 18) & (1u << 14), 0u);
}

TEST(EmuPlatformIoApic, WithLapicLevelEoiLoop) {
    // The IOAPIC delivers to a LAPIC whose EOI comes back through on_eoi.
    Lapic cpu(0, true, 1'000'000'000, 1'000'000'000);
    cpu.write(Lapic::kSvr, 0x1ff, 0);
    IoApic io([&](const InterruptMessage& m) {
        if (cpu.accepts(m)) cpu.deliver(m);
    });
    cpu.on_eoi = [&](uint8_t v) { io.eoi(v); };
    io.write(IoApic::kRegSel, 0x10 + 2 * 11);
    io.write(IoApic::kWindow, 0x8060);
    io.set_irq(11, true);
    EXPECT_EQ(cpu.acknowledge(), 0x60);
    cpu.write(Lapic::kEoi, 0, 0);  // line still high: re-delivered
    EXPECT_EQ(cpu.pending_vector(), 0x60);
    EXPECT_EQ(cpu.acknowledge(), 0x60);
    io.set_irq(11, false);  // the device handler lowered the line
    cpu.write(Lapic::kEoi, 0, 0);
    EXPECT_EQ(cpu.pending_vector(), -1);
}

TEST(EmuPlatformIoApic, SaveRestore) {
    Fixture f;
    f.program(1, 0x8033, 0x01000000);
    f.io.set_irq(1, true);
    f.program(7, 0x34);
    f.io.write(IoApic::kRegSel, 0x0f);
    const auto blob = f.io.save();
    Fixture g;
    ASSERT_TRUE(g.io.restore(blob));
    EXPECT_EQ(g.io.save(), blob);
    EXPECT_EQ(g.io.read(IoApic::kRegSel), 0x0fu);
    g.io.eoi(0x33);  // Remote-IRR and the asserted line came along
    ASSERT_EQ(g.sent.size(), 1u);
    EXPECT_EQ(g.sent[0].dest, 1u);

    EXPECT_FALSE(g.io.restore({}));
    auto bad = blob;
    bad[8 + 8 + 8 * 3 + 1] |= 0x10;  // delivery status bit of pin 3
    EXPECT_FALSE(g.io.restore(bad));
    bad = blob;
    bad.back() = 0xff;  // line bits beyond pin 23
    EXPECT_FALSE(g.io.restore(bad));
    std::mt19937_64 rng(2);
    for (int i = 0; i < 20000; ++i) {
        std::vector<uint8_t> b = blob;
        if (i % 2) {
            b.resize(rng() % 256);
            for (auto& x : b) x = static_cast<uint8_t>(rng());
        } else {
            b[rng() % b.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
        }
        Fixture h;
        if (h.io.restore(b)) {
            for (unsigned pin = 0; pin < 24; ++pin) h.io.set_irq(pin, true);
            h.io.eoi(static_cast<uint8_t>(rng()));
        }
    }
}

}  // namespace
}  // namespace popek::hv::emu::platform
