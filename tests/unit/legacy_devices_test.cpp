#include <gtest/gtest.h>

#include <vector>

#include "devices/legacy/acpi_power.hpp"
#include "devices/legacy/debug_exit.hpp"
#include "devices/legacy/post_code.hpp"

namespace popek::devices {
namespace {

class RecordingExits final : public ExitHandler {
public:
    void request_exit(GuestExit exit) override { exits.push_back(std::move(exit)); }
    std::vector<GuestExit> exits;
};

void wr(BusDevice& d, uint64_t off, std::vector<uint8_t> bytes) {
    d.write(off, std::span<const uint8_t>(bytes.data(), bytes.size()));
}

TEST(LegacyDebugExit, ByteWriteExitsWithThatValue) {
    RecordingExits exits;
    DebugExit d(exits);
    wr(d, 0, {0x31});
    ASSERT_EQ(exits.exits.size(), 1u);
    EXPECT_EQ(exits.exits[0].kind, GuestExitKind::DebugExit);
    EXPECT_EQ(exits.exits[0].code, 0x31u);
}

TEST(LegacyDebugExit, WordAndDwordWritesAreLittleEndian) {
    RecordingExits exits;
    DebugExit d(exits);
    wr(d, 0, {0x34, 0x12});
    wr(d, 0, {0x78, 0x56, 0x34, 0x12});
    wr(d, 0, {0xff, 0xff, 0xff, 0xff});
    ASSERT_EQ(exits.exits.size(), 3u);
    EXPECT_EQ(exits.exits[0].code, 0x1234u);
    EXPECT_EQ(exits.exits[1].code, 0x12345678u);
    EXPECT_EQ(exits.exits[2].code, 0xffffffffu);
    for (const auto& e : exits.exits) EXPECT_EQ(e.kind, GuestExitKind::DebugExit);
}

TEST(LegacyDebugExit, ReadsZeroAndExitNothing) {
    RecordingExits exits;
    DebugExit d(exits);
    uint8_t buf[4] = {0xee, 0xee, 0xee, 0xee};
    d.read(0, buf);
    for (uint8_t b : buf) EXPECT_EQ(b, 0);
    EXPECT_TRUE(exits.exits.empty());
}

constexpr uint8_t kS5 = 5;
constexpr uint8_t kSlpEn = 0x20;
constexpr uint8_t slp_typ(uint8_t t) { return static_cast<uint8_t>(t << 2); }

TEST(LegacyAcpiPower, SleepEnableWithS5PowersOff) {
    RecordingExits exits;
    AcpiPower p(exits, kS5, kSlpEn);
    wr(p, 0, {static_cast<uint8_t>(slp_typ(kS5) | kSlpEn)});
    ASSERT_EQ(exits.exits.size(), 1u);
    EXPECT_EQ(exits.exits[0].kind, GuestExitKind::PowerOff);
}

TEST(LegacyAcpiPower, OtherSleepTypesDoNothing) {
    RecordingExits exits;
    AcpiPower p(exits, kS5, kSlpEn);
    for (uint8_t t = 0; t < 8; t++) {
        if (t == kS5) continue;
        wr(p, 0, {static_cast<uint8_t>(slp_typ(t) | kSlpEn)});
    }
    EXPECT_TRUE(exits.exits.empty());
}

TEST(LegacyAcpiPower, S5WithoutSleepEnableDoesNothing) {
    RecordingExits exits;
    AcpiPower p(exits, kS5, kSlpEn);
    wr(p, 0, {slp_typ(kS5)});  // OSPM writes SLP_TYP first, then SLP_EN
    EXPECT_TRUE(exits.exits.empty());
    wr(p, 0, {static_cast<uint8_t>(slp_typ(kS5) | kSlpEn)});
    EXPECT_EQ(exits.exits.size(), 1u);
}

TEST(LegacyAcpiPower, TheConfiguredS5ValueIsTheOneHonoured) {
    RecordingExits exits;
    AcpiPower p(exits, 7, kSlpEn);
    wr(p, 0, {static_cast<uint8_t>(slp_typ(kS5) | kSlpEn)});
    EXPECT_TRUE(exits.exits.empty());
    wr(p, 0, {static_cast<uint8_t>(slp_typ(7) | kSlpEn)});
    EXPECT_EQ(exits.exits.size(), 1u);
}

TEST(LegacyAcpiPower, StatusPortWritesDoNothing) {
    RecordingExits exits;
    AcpiPower p(exits, kS5, kSlpEn);
    wr(p, 1, {static_cast<uint8_t>(slp_typ(kS5) | kSlpEn)});
    wr(p, 1, {0xff});
    wr(p, 0, {});  // an empty access is ignored too
    EXPECT_TRUE(exits.exits.empty());
    uint8_t buf[2] = {0xee, 0xee};
    p.read(0, buf);  // status: nothing pending
    EXPECT_EQ(buf[0], 0);
    EXPECT_EQ(buf[1], 0);
}

TEST(LegacyPostCode, CountsWritesAndKeepsTheLastCode) {
    PostCode pc;
    EXPECT_EQ(pc.save().writes, 0u);
    EXPECT_EQ(pc.save().last_code, 0);
    wr(pc, 0, {0x11});
    wr(pc, 0, {0x22});
    wr(pc, 0, {0x33, 0x44});  // a wide write records its low byte
    wr(pc, 0, {});            // an empty access is not a write
    PostCode::State st = pc.save();
    EXPECT_EQ(st.writes, 3u);
    EXPECT_EQ(st.last_code, 0x33);
}

TEST(LegacyPostCode, ReadsFloatHigh) {
    PostCode pc;
    uint8_t buf[2] = {0, 0};
    pc.read(0, buf);
    EXPECT_EQ(buf[0], 0xff);
    EXPECT_EQ(buf[1], 0xff);
    EXPECT_EQ(pc.save().writes, 0u);  // reads are not counted
}

TEST(LegacyPostCode, RestoresFromState) {
    PostCode pc(PostCode::State{0x7e, 41});
    EXPECT_EQ(pc.save().last_code, 0x7e);
    EXPECT_EQ(pc.save().writes, 41u);
    wr(pc, 0, {0x80});
    EXPECT_EQ(pc.save().last_code, 0x80);
    EXPECT_EQ(pc.save().writes, 42u);
}

}  // namespace
}  // namespace popek::devices
