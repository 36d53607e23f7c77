// The ACPI Generic Event Device: the power-button event, read-to-clear, the
// interrupt line, snapshots, and agreement with the DSDT and the probe.
#include "devices/legacy/ged.hpp"

#include <gtest/gtest.h>

#include <array>
#include <thread>
#include <vector>

#include "../../guest/probe/layout.h"  // plain #defines: the probe's view of the platform
#include "arch/x86/layout.hpp"
#include "base/bytes.hpp"

namespace popek::devices {
namespace {

namespace x86 = arch::x86;

static_assert(Ged::kEventPowerButton == x86::kGedEventPowerButton, "the DSDT's _EVT tests the device's bit");
static_assert(GED_BASE == x86::kGedStart, "the probe polls where popek maps the GED");
static_assert(GED_EVENT_POWER_BUTTON == x86::kGedEventPowerButton);

// Records every level the device drives onto its interrupt line.
class FakeIrq final : public IrqLine {
public:
    void set_level(bool level) override { levels.push_back(level); }
    [[nodiscard]] bool level() const { return !levels.empty() && levels.back(); }
    std::vector<bool> levels;
};

uint32_t read32(Ged& ged, uint64_t offset = 0) {
    std::array<uint8_t, 4> b{};
    ged.read(offset, b);
    return base::load<uint32_t>(b, 0);
}

TEST(Ged, StartsQuiet) {
    FakeIrq irq;
    Ged ged(&irq);
    EXPECT_TRUE(irq.levels.empty());
    EXPECT_EQ(read32(ged), 0u);
    EXPECT_TRUE(irq.levels.empty());
    EXPECT_EQ(ged.save().pending, 0u);
}

TEST(Ged, PressRaisesTheLineAndReadClears) {
    FakeIrq irq;
    Ged ged(&irq);
    ged.press_power_button();
    EXPECT_EQ(irq.levels, (std::vector<bool>{true}));
    EXPECT_EQ(ged.save().pending, Ged::kEventPowerButton);
    EXPECT_EQ(read32(ged), Ged::kEventPowerButton);
    EXPECT_EQ(irq.levels, (std::vector<bool>{true, false}));
    EXPECT_EQ(read32(ged), 0u);  // cleared by the first read
    EXPECT_EQ(irq.levels.size(), 2u);
}

// A second press before the guest reads is the same batch: the line is
// already high, and one read takes it.
TEST(Ged, PressesBeforeTheReadCoalesce) {
    FakeIrq irq;
    Ged ged(&irq);
    ged.press_power_button();
    ged.press_power_button();
    EXPECT_EQ(irq.levels, (std::vector<bool>{true}));
    EXPECT_EQ(read32(ged), Ged::kEventPowerButton);
    ged.press_power_button();  // after the read: a new rising edge
    EXPECT_EQ(irq.levels, (std::vector<bool>{true, false, true}));
}

TEST(Ged, NarrowReadsClearOnlyWhatTheyReturn) {
    FakeIrq irq;
    Ged ged(&irq);
    ged.press_power_button();
    std::array<uint8_t, 1> byte{0xaa};
    ged.read(1, byte);  // bits 15:8: nothing there, bit 0 stays pending
    EXPECT_EQ(byte[0], 0);
    EXPECT_TRUE(irq.level());
    ged.read(0, byte);
    EXPECT_EQ(byte[0], Ged::kEventPowerButton);
    EXPECT_FALSE(irq.level());
}

TEST(Ged, OtherOffsetsAndWritesDoNothing) {
    FakeIrq irq;
    Ged ged(&irq);
    ged.press_power_button();
    EXPECT_EQ(read32(ged, 4), 0u);
    EXPECT_EQ(read32(ged, 0xffc), 0u);
    const std::array<uint8_t, 4> ones{0xff, 0xff, 0xff, 0xff};
    ged.write(0, ones);
    EXPECT_EQ(ged.save().pending, Ged::kEventPowerButton);
    std::array<uint8_t, 8> wide{};
    wide.fill(0xaa);
    ged.read(0, wide);  // an 8-byte read: the register, then zeros
    EXPECT_EQ(wide, (std::array<uint8_t, 8>{1, 0, 0, 0, 0, 0, 0, 0}));
    EXPECT_FALSE(irq.level());
}

TEST(Ged, StateRoundTripRaisesThePendingLine) {
    FakeIrq irq;
    Ged ged(&irq);
    ged.press_power_button();
    Ged::State saved = ged.save();
    EXPECT_EQ(saved.pending, Ged::kEventPowerButton);

    FakeIrq irq2;
    Ged restored(&irq2, saved);
    EXPECT_EQ(irq2.levels, (std::vector<bool>{true}));
    EXPECT_EQ(restored.save().pending, saved.pending);
    EXPECT_EQ(read32(restored), Ged::kEventPowerButton);
    EXPECT_FALSE(irq2.level());
}

TEST(Ged, WorksWithoutAnInterruptLine) {
    Ged ged(nullptr);
    ged.press_power_button();
    EXPECT_EQ(read32(ged), Ged::kEventPowerButton);
}

// Presses from other threads while a vCPU reads: every press is seen by
// some read, and the line ends low with nothing pending.
TEST(Ged, PressesFromOtherThreads) {
    FakeIrq irq;
    Ged ged(&irq);
    constexpr int kPresses = 2000;
    std::thread presser([&] {
        for (int i = 0; i < kPresses; ++i) ged.press_power_button();
    });
    bool seen = false;
    while (!seen) seen = read32(ged) == Ged::kEventPowerButton;  // a press stays pending until read
    presser.join();
    (void)read32(ged);
    EXPECT_EQ(ged.save().pending, 0u);
    EXPECT_FALSE(irq.level());
    for (size_t i = 1; i < irq.levels.size(); ++i) EXPECT_NE(irq.levels[i], irq.levels[i - 1]) << i;
}

}  // namespace
}  // namespace popek::devices
