// PciConfigSpace: header registers and their write masks, the BAR sizing
// protocol, the capability list and INTx, with hostile accesses.
#include "devices/pci/config_space.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace popek::devices::pci {
namespace {

class FakeLine final : public IrqLine {
public:
    void set_level(bool level) override { levels.push_back(level); }
    [[nodiscard]] bool level() const { return !levels.empty() && levels.back(); }
    std::vector<bool> levels;
};

uint32_t rd(const PciConfigSpace& c, uint16_t off, size_t size = 4) {
    uint8_t b[4] = {};
    c.read(off, std::span<uint8_t>(b, size));
    uint32_t v = 0;
    for (size_t i = 0; i < size; ++i) v |= uint32_t{b[i]} << (8 * i);
    return v;
}

void wr(PciConfigSpace& c, uint16_t off, uint32_t v, size_t size = 4) {
    uint8_t b[4];
    for (size_t i = 0; i < 4; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
    c.write(off, std::span<const uint8_t>(b, size));
}

PciConfigSpace make() {
    return PciConfigSpace(PciIds{0x1af4, 0x1042, 0x1af4, 0x1100, 1, 0x010000});
}

TEST(PciConfigSpace, HeaderIdsAndReadOnlyFields) {
    PciConfigSpace c = make();
    EXPECT_EQ(rd(c, 0x00), 0x10421af4u);
    EXPECT_EQ(rd(c, 0x08), 0x01000001u);  // class 01 00 00, revision 1
    EXPECT_EQ(rd(c, 0x2c), 0x11001af4u);
    EXPECT_EQ(rd(c, 0x0e, 1), 0u);         // header type 0, single function
    EXPECT_EQ(rd(c, 0x34, 1), 0u);         // no capabilities yet
    EXPECT_EQ(rd(c, 0x06, 2) & 0x10, 0u);
    // The guest cannot change ids, class, header type or the cap pointer.
    for (uint16_t off : {uint16_t{0x00}, uint16_t{0x08}, uint16_t{0x0c}, uint16_t{0x2c}, uint16_t{0x30}, uint16_t{0x34}}) {
        uint32_t before = rd(c, off);
        wr(c, off, 0x5a5a5a5a);
        EXPECT_EQ(rd(c, off) & (off == 0x0c ? 0xffffff00u : ~0u), before & (off == 0x0c ? 0xffffff00u : ~0u))
            << std::hex << off;
    }
    EXPECT_EQ(rd(c, 0x0c, 1), 0x5au) << "cache line size is read-write";
    EXPECT_EQ(rd(c, 0x30), 0u) << "no expansion ROM";
}

TEST(PciConfigSpace, CommandMaskAndStatusWriteOneToClear) {
    PciConfigSpace c = make();
    wr(c, 0x04, 0xffff, 2);
    EXPECT_EQ(rd(c, 0x04, 2), 0x0546u) << "memory, bus master, parity, SERR, INTx disable";
    wr(c, 0x04, 0x0006, 2);
    EXPECT_EQ(rd(c, 0x04, 2), 0x0006u);
    // Status error bits are RW1C; the device sets them. Writing 1s to a
    // clear status changes nothing (no bit sticks).
    wr(c, 0x06, 0xffff, 2);
    EXPECT_EQ(rd(c, 0x06, 2), 0u);
    c.store(0x06, 0x8100, 2);  // device: detected parity error, master data parity error
    wr(c, 0x06, 0x8000, 2);
    EXPECT_EQ(rd(c, 0x06, 2), 0x0100u);
}

TEST(PciConfigSpace, Bar32SizingProtocol) {
    PciConfigSpace c = make();
    ASSERT_TRUE(c.add_bar({0, 0x10000, false, false}).ok());
    c.set_bar_address(0, 0xc0010000);
    EXPECT_EQ(rd(c, 0x10), 0xc0010000u);
    wr(c, 0x10, 0xffffffff);
    EXPECT_EQ(rd(c, 0x10), 0xffff0000u) << "size mask: 64 KiB";
    wr(c, 0x10, 0xc0010000);  // the OS restores the address
    EXPECT_EQ(rd(c, 0x10), 0xc0010000u);
    // A different address is not honored: popek placed the BAR.
    wr(c, 0x10, 0xd0000000);
    EXPECT_EQ(rd(c, 0x10), 0xc0010000u);
    EXPECT_EQ(c.bar_address(0), 0xc0010000u);
    // Unimplemented BARs read 0 and size to 0.
    for (uint16_t off = 0x14; off < 0x28; off += 4) {
        wr(c, off, 0xffffffff);
        EXPECT_EQ(rd(c, off), 0u) << std::hex << off;
    }
}

TEST(PciConfigSpace, Bar64PrefetchableSizing) {
    PciConfigSpace c = make();
    ASSERT_TRUE(c.add_bar({2, 0x4000, true, true}).ok());
    c.set_bar_address(2, 0x1'2345'8000);
    EXPECT_EQ(rd(c, 0x18), 0x2345800cu) << "64-bit (bits 2:1 = 10b), prefetchable (bit 3)";
    EXPECT_EQ(rd(c, 0x1c), 0x1u);
    wr(c, 0x18, 0xffffffff);
    wr(c, 0x1c, 0xffffffff);
    EXPECT_EQ(rd(c, 0x18), 0xffffc00cu);
    EXPECT_EQ(rd(c, 0x1c), 0xffffffffu);
    wr(c, 0x18, 0x2345800c);
    wr(c, 0x1c, 0x1);
    EXPECT_EQ(rd(c, 0x18), 0x2345800cu);
    EXPECT_EQ(rd(c, 0x1c), 0x1u);
    // Sizing takes a dword write (as every OS does it); a partial write that
    // is neither all-ones nor the address leaves the BAR where it is.
    wr(c, 0x19, 0xff, 1);
    EXPECT_EQ(rd(c, 0x18), 0x2345800cu);
    wr(c, 0x1a, 0xffff, 2);
    EXPECT_EQ(rd(c, 0x18), 0x2345800cu);
}

TEST(PciConfigSpace, RefusesBadBars) {
    PciConfigSpace c = make();
    EXPECT_FALSE(c.add_bar({6, 0x1000, false, false}).ok());
    EXPECT_FALSE(c.add_bar({5, 0x1000, true, false}).ok()) << "a 64-bit BAR5 has no upper register";
    EXPECT_FALSE(c.add_bar({0, 0x1800, false, false}).ok()) << "not a power of two";
    EXPECT_FALSE(c.add_bar({0, 8, false, false}).ok()) << "below 16 bytes";
    ASSERT_TRUE(c.add_bar({0, 0x1000, true, false}).ok());
    EXPECT_FALSE(c.add_bar({1, 0x1000, false, false}).ok()) << "BAR1 is BAR0's upper half";
}

TEST(PciConfigSpace, CapabilityListWalk) {
    PciConfigSpace c = make();
    const uint8_t a[] = {0xaa, 0xbb}, b[] = {1, 2, 3, 4, 5, 6, 7}, mask[] = {0, 0xff, 0, 0, 0, 0, 0};
    auto first = c.add_capability(0x09, a);
    auto second = c.add_capability(0x11, b, mask);
    ASSERT_TRUE(first.ok() && second.ok());
    EXPECT_EQ(*first, 0x40);
    EXPECT_EQ(*second, 0x44) << "4-byte aligned after a 4-byte capability";
    EXPECT_TRUE(rd(c, 0x06, 2) & 0x10) << "status: capability list";
    EXPECT_EQ(rd(c, 0x34, 1), 0x40u);
    EXPECT_EQ(rd(c, 0x40, 4), 0xbbaa4409u);  // id, next, body
    EXPECT_EQ(rd(c, 0x44, 2), 0x0011u) << "last capability: next = 0";
    wr(c, 0x46, 0xffffffff);
    EXPECT_EQ(rd(c, 0x46, 4), 0x0403ff01u) << "only the writable byte changed";
    std::vector<uint8_t> huge(300, 0);
    EXPECT_FALSE(c.add_capability(0x09, huge).ok());
    EXPECT_FALSE(c.add_capability(0x09, b, a).ok()) << "mask length differs";
}

TEST(PciConfigSpace, IntxFollowsLevelUnlessDisabled) {
    PciConfigSpace c = make();
    FakeLine line;
    c.connect_intx(&line, 17);
    EXPECT_EQ(rd(c, 0x3c, 2), 0x0111u) << "pin INTA, line 17";
    c.set_intx_level(true);
    EXPECT_TRUE(line.level());
    EXPECT_TRUE(rd(c, 0x06, 2) & 0x08) << "status: interrupt";
    wr(c, 0x04, 0x0400, 2);  // INTx disable
    EXPECT_FALSE(line.level());
    EXPECT_TRUE(rd(c, 0x06, 2) & 0x08) << "status still shows the pending interrupt";
    wr(c, 0x04, 0x0000, 2);
    EXPECT_TRUE(line.level());
    c.set_intx_level(false);
    EXPECT_FALSE(line.level());
    EXPECT_FALSE(rd(c, 0x06, 2) & 0x08);
    EXPECT_EQ(line.levels, (std::vector<bool>{true, false, true, false})) << "no redundant edges";
}

TEST(PciConfigSpace, HostileAccessesAreHarmless) {
    PciConfigSpace c = make();
    uint8_t buf[8];
    for (size_t size : {0u, 3u, 5u, 8u}) {
        std::fill(std::begin(buf), std::end(buf), 0);
        c.read(0, std::span<uint8_t>(buf, size));
        for (size_t i = 0; i < size; ++i) EXPECT_EQ(buf[i], 0xff) << size;
        c.write(0x04, std::span<const uint8_t>(buf, size));
    }
    EXPECT_EQ(rd(c, 0x04, 2), 0u);
    EXPECT_EQ(rd(c, 4095, 1), 0u);
    EXPECT_EQ(rd(c, 4094, 4), 0xffffffffu) << "runs past the end";
    EXPECT_EQ(rd(c, 4096, 1), 0xffu);
    wr(c, 4094, 0x12345678);  // ignored, no crash
    EXPECT_EQ(rd(c, 0x100, 4), 0u) << "extended space: no extended capabilities";
    // An unaligned dword across the command/status boundary still applies the masks.
    wr(c, 0x03, 0xffffffff);
    EXPECT_EQ(rd(c, 0x04, 2), 0x0546u);
    EXPECT_EQ(rd(c, 0x06, 1), 0u);
}

}  // namespace
}  // namespace popek::devices::pci
