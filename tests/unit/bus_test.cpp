#include "devices/bus.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace popek::devices {
namespace {

// Records accesses; reads return the offset's low byte plus the byte index.
class RecordingDevice final : public BusDevice {
public:
    struct Access {
        bool write;
        uint64_t offset;
        std::vector<uint8_t> data;
    };
    void read(uint64_t offset, std::span<uint8_t> data) override {
        for (size_t i = 0; i < data.size(); i++) data[i] = static_cast<uint8_t>(offset + i + 0x10);
        log.push_back({false, offset, {data.begin(), data.end()}});
    }
    void write(uint64_t offset, std::span<const uint8_t> data) override {
        log.push_back({true, offset, {data.begin(), data.end()}});
    }
    std::vector<Access> log;
};

TEST(Bus, InsertRefusesEmptyAndWrappingRanges) {
    Bus bus("pio");
    RecordingDevice d;
    auto empty = bus.insert(0x100, 0, &d, "empty");
    ASSERT_FALSE(empty.ok());
    EXPECT_NE(empty.error().message.find("empty"), std::string::npos);  // names the device
    EXPECT_NE(empty.error().message.find("pio"), std::string::npos);    // and the bus
    EXPECT_FALSE(bus.insert(~uint64_t{0} - 1, 4, &d, "wraps").ok());
    EXPECT_TRUE(bus.entries().empty());
}

TEST(Bus, InsertRefusesOverlapsOnEitherSide) {
    Bus bus("pio");
    RecordingDevice a, b;
    ASSERT_TRUE(bus.insert(0x100, 0x10, &a, "a").ok());  // [0x100, 0x110)

    // Overlapping the start, the end, inside, around, the same base.
    EXPECT_FALSE(bus.insert(0xf8, 0x9, &b, "b").ok());
    EXPECT_FALSE(bus.insert(0x10f, 0x10, &b, "b").ok());
    EXPECT_FALSE(bus.insert(0x104, 0x4, &b, "b").ok());
    EXPECT_FALSE(bus.insert(0x0, 0x1000, &b, "b").ok());
    EXPECT_FALSE(bus.insert(0x100, 0x1, &b, "b").ok());
    auto err = bus.insert(0x10f, 0x1, &b, "late");
    ASSERT_FALSE(err.ok());
    EXPECT_NE(err.error().message.find("late"), std::string::npos);
    EXPECT_NE(err.error().message.find(" a "), std::string::npos) << err.error().message;
    ASSERT_EQ(bus.entries().size(), 1u);

    // Touching ranges on both sides are fine.
    EXPECT_TRUE(bus.insert(0xf0, 0x10, &b, "below").ok());
    EXPECT_TRUE(bus.insert(0x110, 0x10, &b, "above").ok());
    // And a later overlap against a neighbour that is not adjacent in insertion order.
    EXPECT_FALSE(bus.insert(0x11f, 0x2, &b, "b").ok());
    EXPECT_FALSE(bus.insert(0xe0, 0x11, &b, "b").ok());

    const auto& e = bus.entries();
    ASSERT_EQ(e.size(), 3u);
    EXPECT_EQ(e[0].id, "below");
    EXPECT_EQ(e[1].id, "a");
    EXPECT_EQ(e[2].id, "above");
}

TEST(Bus, LookupHitsBothEdgesAndMissesJustOutside) {
    Bus bus("pio");
    RecordingDevice d;
    ASSERT_TRUE(bus.insert(0x3f8, 8, &d, "com1").ok());
    uint8_t b = 0;
    EXPECT_FALSE(bus.read(0x3f7, std::span<uint8_t>(&b, 1)));
    EXPECT_TRUE(bus.read(0x3f8, std::span<uint8_t>(&b, 1)));
    EXPECT_TRUE(bus.read(0x3ff, std::span<uint8_t>(&b, 1)));
    EXPECT_FALSE(bus.read(0x400, std::span<uint8_t>(&b, 1)));
    EXPECT_FALSE(bus.write(0x400, std::span<const uint8_t>(&b, 1)));
    EXPECT_FALSE(bus.write(0x3f7, std::span<const uint8_t>(&b, 1)));
    ASSERT_EQ(d.log.size(), 2u);
    EXPECT_EQ(d.log[0].offset, 0u);
    EXPECT_EQ(d.log[1].offset, 7u);
}

TEST(Bus, PassesRelativeOffsetsAndDataThrough) {
    Bus bus("mmio");
    RecordingDevice lo, hi;
    ASSERT_TRUE(bus.insert(0xfee00000, 0x1000, &hi, "hi").ok());
    ASSERT_TRUE(bus.insert(0xd0000000, 0x100, &lo, "lo").ok());

    const uint8_t w[4] = {1, 2, 3, 4};
    EXPECT_TRUE(bus.write(0xd0000010, w));
    uint8_t r[2] = {0, 0};
    EXPECT_TRUE(bus.read(0xfee00ffe, r));
    EXPECT_EQ(r[0], static_cast<uint8_t>(0xffe + 0x10));
    EXPECT_EQ(r[1], static_cast<uint8_t>(0xfff + 0x10));

    ASSERT_EQ(lo.log.size(), 1u);
    EXPECT_TRUE(lo.log[0].write);
    EXPECT_EQ(lo.log[0].offset, 0x10u);
    EXPECT_EQ(lo.log[0].data, std::vector<uint8_t>({1, 2, 3, 4}));
    ASSERT_EQ(hi.log.size(), 1u);
    EXPECT_FALSE(hi.log[0].write);
    EXPECT_EQ(hi.log[0].offset, 0xffeu);
    EXPECT_EQ(hi.log[0].data.size(), 2u);
}

TEST(Bus, UnmappedAccessesReturnFalseAndTouchNoDevice) {
    Bus bus("pio");
    uint8_t b = 0;
    EXPECT_FALSE(bus.read(0, std::span<uint8_t>(&b, 1)));  // empty bus
    RecordingDevice d;
    ASSERT_TRUE(bus.insert(0x60, 1, &d, "kbd").ok());
    ASSERT_TRUE(bus.insert(0x64, 1, &d, "kbd-cmd").ok());
    for (uint64_t port : {0x0ull, 0x5full, 0x61ull, 0x63ull, 0x65ull, 0xffffull, ~0ull}) {
        EXPECT_FALSE(bus.read(port, std::span<uint8_t>(&b, 1))) << port;
        EXPECT_FALSE(bus.write(port, std::span<const uint8_t>(&b, 1))) << port;
    }
    EXPECT_TRUE(d.log.empty());
    EXPECT_TRUE(bus.read(0x64, std::span<uint8_t>(&b, 1)));
    ASSERT_EQ(d.log.size(), 1u);
    EXPECT_EQ(d.log[0].offset, 0u);
}

TEST(Bus, RangesReachingTheTopOfTheAddressSpaceWork) {
    Bus bus("mmio");
    RecordingDevice d;
    ASSERT_TRUE(bus.insert(~uint64_t{0} - 0xf, 0xf, &d, "top").ok());  // [2^64-16, 2^64-1)
    uint8_t b = 0;
    EXPECT_TRUE(bus.read(~uint64_t{0} - 1, std::span<uint8_t>(&b, 1)));
    EXPECT_FALSE(bus.read(~uint64_t{0}, std::span<uint8_t>(&b, 1)));
    ASSERT_EQ(d.log.size(), 1u);
    EXPECT_EQ(d.log[0].offset, 0xeu);
}

}  // namespace
}  // namespace popek::devices
