// 8259A pair model (src/hv/emu/platform/pic.*).
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "hv/emu/platform/pic.hpp"

namespace popek::hv::emu::platform {
namespace {

// Linux's init_8259A(auto_eoi) sequence, vectors 0x30/0x38, then the masks.
void linux_init(PicPair& p, bool auto_eoi = false, uint8_t master_mask = 0xfb, uint8_t slave_mask = 0xff) {
    p.write(0x21, 0xff);
    p.write(0xa1, 0xff);
    p.write(0x20, 0x11);  // ICW1: edge, cascade, ICW4 needed
    p.write(0x21, 0x30);  // ICW2
    p.write(0x21, 0x04);  // ICW3: slave on IR2
    p.write(0x21, auto_eoi ? 0x03 : 0x01);
    p.write(0xa0, 0x11);
    p.write(0xa1, 0x38);
    p.write(0xa1, 0x02);  // ICW3: slave id 2
    p.write(0xa1, 0x01);
    p.write(0x21, master_mask);
    p.write(0xa1, slave_mask);
}

uint8_t isr(PicPair& p, uint16_t port) {
    p.write(port, 0x0b);  // OCW3: read ISR
    const uint8_t v = p.read(port);
    p.write(port, 0x0a);  // back to IRR
    return v;
}

TEST(EmuPlatformPic, LinuxInitAndOneInterrupt) {
    PicPair p;
    std::vector<bool> outputs;
    p.on_output = [&](bool v) { outputs.push_back(v); };
    linux_init(p, false, 0x00, 0x00);
    EXPECT_EQ(p.read(0x21), 0x00);
    EXPECT_FALSE(p.output());
    p.set_irq(1, true);
    EXPECT_TRUE(p.output());
    EXPECT_EQ(p.read(0x20), 0x02);  // IRR
    EXPECT_EQ(p.acknowledge(), 0x31);
    EXPECT_FALSE(p.output());
    EXPECT_EQ(p.read(0x20), 0x00);
    EXPECT_EQ(isr(p, 0x20), 0x02);
    p.write(0x20, 0x61);  // specific EOI IRQ1, as Linux does
    EXPECT_EQ(isr(p, 0x20), 0x00);
    EXPECT_EQ(outputs, (std::vector<bool>{true, false}));
    p.set_irq(1, false);
    p.set_irq(1, true);  // a new edge
    EXPECT_TRUE(p.output());
}

TEST(EmuPlatformPic, SeaBiosInitVectors) {
    PicPair p;
    p.write(0x20, 0x11);
    p.write(0x21, 0x08);
    p.write(0x21, 0x04);
    p.write(0x21, 0x01);
    p.write(0xa0, 0x11);
    p.write(0xa1, 0x70);
    p.write(0xa1, 0x02);
    p.write(0xa1, 0x01);
    p.write(0x21, 0xfb);
    p.write(0xa1, 0xff);
    EXPECT_EQ(p.read(0x21), 0xfb);
    EXPECT_EQ(p.read(0xa1), 0xff);
    p.set_irq(0, true);
    EXPECT_EQ(p.acknowledge(), 0x0f);  // IRQ0 masked: spurious IRQ7
    p.write(0x21, 0xfa);
    EXPECT_EQ(p.acknowledge(), 0x08);
    p.write(0xa1, 0xfe);
    p.write(0x20, 0x20);  // non-specific EOI
    p.set_irq(8, true);
    EXPECT_EQ(p.acknowledge(), 0x70);
}

TEST(EmuPlatformPic, PowerOnMasksEverything) {
    PicPair p;
    EXPECT_EQ(p.read(0x21), 0xff);
    EXPECT_EQ(p.read(0xa1), 0xff);
    p.set_irq(4, true);
    EXPECT_FALSE(p.output());
    EXPECT_EQ(p.read(0x20), 0x10);  // requested though masked
}

TEST(EmuPlatformPic, FullyNestedPriority) {
    PicPair p;
    linux_init(p, false, 0x00, 0x00);
    p.set_irq(3, true);
    p.set_irq(1, true);
    EXPECT_EQ(p.acknowledge(), 0x31);  // IRQ1 first
    EXPECT_FALSE(p.output());          // IRQ3 waits for IRQ1's EOI
    p.set_irq(0, true);
    EXPECT_TRUE(p.output());  // IRQ0 preempts
    EXPECT_EQ(p.acknowledge(), 0x30);
    EXPECT_EQ(isr(p, 0x20), 0x03);
    p.write(0x20, 0x20);  // non-specific EOI: the highest in service (IRQ0)
    EXPECT_EQ(isr(p, 0x20), 0x02);
    EXPECT_FALSE(p.output());
    p.write(0x20, 0x20);
    EXPECT_EQ(p.acknowledge(), 0x33);
}

TEST(EmuPlatformPic, CascadeThroughTheSlave) {
    PicPair p;
    linux_init(p, false, 0xfb, 0x00);
    p.set_irq(12, true);
    EXPECT_TRUE(p.output());
    EXPECT_EQ(p.read(0x20), 0x04);  // master sees IR2
    EXPECT_EQ(p.acknowledge(), 0x3c);
    EXPECT_EQ(isr(p, 0x20), 0x04);
    EXPECT_EQ(isr(p, 0xa0), 0x10);
    // IRQ8 meanwhile: higher priority on the slave, but the master's IR2 is
    // in service (not special fully nested), so it waits.
    p.set_irq(8, true);
    EXPECT_FALSE(p.output());
    p.write(0xa0, 0x64);  // Linux: specific EOI on the slave, then IR2 on the master
    p.write(0x20, 0x62);
    EXPECT_TRUE(p.output());
    EXPECT_EQ(p.acknowledge(), 0x38);
    // Two slave requests pending at once: both come through in turn.
    p.write(0xa0, 0x60);
    p.write(0x20, 0x62);
    p.set_irq(9, true);
    p.set_irq(10, true);
    EXPECT_EQ(p.acknowledge(), 0x39);
    p.write(0xa0, 0x61);
    p.write(0x20, 0x62);
    EXPECT_TRUE(p.output());
    EXPECT_EQ(p.acknowledge(), 0x3a);
}

TEST(EmuPlatformPic, SpecialFullyNestedLetsSlaveRequestsNest) {
    PicPair p;
    linux_init(p, false, 0x00, 0x00);
    p.write(0x20, 0x11);
    p.write(0x21, 0x30);
    p.write(0x21, 0x04);
    p.write(0x21, 0x11);  // ICW4: SFNM
    p.set_irq(12, true);
    EXPECT_EQ(p.acknowledge(), 0x3c);
    p.set_irq(8, true);
    EXPECT_TRUE(p.output());  // nests despite master ISR2
    EXPECT_EQ(p.acknowledge(), 0x38);
}

TEST(EmuPlatformPic, SpuriousIrq7And15) {
    PicPair p;
    linux_init(p, false, 0x00, 0x00);
    p.write(0x4d0, 0x08);  // IRQ3 level
    p.write(0x4d1, 0x04);  // IRQ10 level
    EXPECT_EQ(p.read(0x4d0), 0x08);
    p.set_irq(3, true);
    EXPECT_TRUE(p.output());
    p.set_irq(3, false);  // gone before INTA
    EXPECT_EQ(p.acknowledge(), 0x37);
    EXPECT_EQ(isr(p, 0x20), 0x00);  // spurious: no ISR bit (Linux checks this)
    p.set_irq(10, true);
    p.set_irq(10, false);
    // The master latched the slave's edge on IR2; the slave has nothing.
    EXPECT_EQ(p.acknowledge(), 0x3f);
    EXPECT_EQ(isr(p, 0xa0), 0x00);
    EXPECT_EQ(isr(p, 0x20), 0x04);  // master IR2 in service: the OS EOIs it
}

TEST(EmuPlatformPic, LevelModeFollowsTheLine) {
    PicPair p;
    linux_init(p, false, 0x00, 0x00);
    p.write(0x4d1, 0xff);
    EXPECT_EQ(p.read(0x4d1), 0xde);  // IRQ8 and IRQ13 cannot be level
    p.write(0x4d0, 0xff);
    EXPECT_EQ(p.read(0x4d0), 0xf8);
    p.set_irq(11, true);
    EXPECT_EQ(p.acknowledge(), 0x3b);
    p.write(0xa0, 0x20);
    p.write(0x20, 0x20);
    EXPECT_TRUE(p.output());  // still asserted: again
    EXPECT_EQ(p.acknowledge(), 0x3b);
    p.set_irq(11, false);
    p.write(0xa0, 0x20);
    p.write(0x20, 0x20);
    EXPECT_FALSE(p.output());
}

TEST(EmuPlatformPic, AutoEoi) {
    PicPair p;
    linux_init(p, true, 0x00, 0x00);
    p.set_irq(4, true);
    EXPECT_EQ(p.acknowledge(), 0x34);
    EXPECT_EQ(isr(p, 0x20), 0x00);
    p.set_irq(5, true);
    EXPECT_TRUE(p.output());  // nothing in service blocks it
}

TEST(EmuPlatformPic, MaskingAndIrrRead) {
    PicPair p;
    linux_init(p, false, 0xff, 0xff);
    p.set_irq(6, true);
    EXPECT_FALSE(p.output());
    EXPECT_EQ(p.read(0x20), 0x40);
    p.write(0x21, 0xbf);
    EXPECT_TRUE(p.output());
    p.write(0x21, 0xff);
    EXPECT_FALSE(p.output());
}

TEST(EmuPlatformPic, PollCommand) {
    PicPair p;
    linux_init(p, false, 0x00, 0x00);
    p.write(0x20, 0x0c);  // OCW3 poll
    EXPECT_EQ(p.read(0x20), 0x00);
    p.set_irq(5, true);
    p.write(0x20, 0x0c);
    EXPECT_EQ(p.read(0x20), 0x85);
    EXPECT_EQ(isr(p, 0x20), 0x20);  // the poll acknowledged it
    EXPECT_EQ(p.read(0x20), 0x00);  // next read is IRR again
}

TEST(EmuPlatformPic, RotationAndSetPriority) {
    PicPair p;
    linux_init(p, false, 0x00, 0x00);
    p.write(0x20, 0xc3);  // set priority: IRQ3 lowest, IRQ4 highest
    p.set_irq(1, true);
    p.set_irq(5, true);
    EXPECT_EQ(p.acknowledge(), 0x35);
    p.write(0x20, 0xa0);  // rotate on non-specific EOI: IRQ5 becomes lowest
    p.set_irq(6, true);
    EXPECT_EQ(p.acknowledge(), 0x36);  // 6 is now highest
    p.write(0x20, 0xe6);               // rotate on specific EOI 6
    EXPECT_EQ(p.acknowledge(), 0x31);
}

TEST(EmuPlatformPic, SpecialMaskMode) {
    PicPair p;
    linux_init(p, false, 0x00, 0x00);
    p.set_irq(3, true);
    EXPECT_EQ(p.acknowledge(), 0x33);
    p.set_irq(5, true);
    EXPECT_FALSE(p.output());
    p.write(0x21, 0x08);  // mask IRQ3 (in service)
    p.write(0x20, 0x68);  // set special mask mode
    EXPECT_TRUE(p.output());
    EXPECT_EQ(p.acknowledge(), 0x35);
    p.write(0x20, 0x48);  // reset special mask mode
    p.write(0x20, 0x65);
    p.set_irq(6, true);
    EXPECT_FALSE(p.output());  // IRQ3 in service blocks again
}

TEST(EmuPlatformPic, Icw1ForgetsEdgesAndClearsState) {
    PicPair p;
    linux_init(p, false, 0x00, 0x00);
    p.set_irq(4, true);
    EXPECT_EQ(p.acknowledge(), 0x34);
    p.set_irq(5, true);
    linux_init(p, false, 0x00, 0x00);
    EXPECT_EQ(isr(p, 0x20), 0x00);
    EXPECT_EQ(p.read(0x20), 0x00);
    EXPECT_FALSE(p.output());
    EXPECT_EQ(p.read(0x1234), 0xff);  // not a PIC port
}

TEST(EmuPlatformPic, SaveRestore) {
    PicPair p;
    linux_init(p, false, 0x00, 0x00);
    p.write(0x4d0, 0x20);
    p.set_irq(5, true);
    p.set_irq(12, true);
    EXPECT_EQ(p.acknowledge(), 0x3c);
    const auto blob = p.save();
    PicPair q;
    std::vector<bool> outputs;
    q.on_output = [&](bool v) { outputs.push_back(v); };
    ASSERT_TRUE(q.restore(blob));
    EXPECT_EQ(q.save(), blob);
    EXPECT_EQ(isr(q, 0xa0), 0x10);
    EXPECT_EQ(q.read(0x4d0), 0x20);
    EXPECT_FALSE(q.output());  // IRQ5 waits behind IR2 in service
    q.write(0xa0, 0x64);
    q.write(0x20, 0x62);
    EXPECT_EQ(outputs, std::vector<bool>{true});
    EXPECT_EQ(q.acknowledge(), 0x35);

    EXPECT_FALSE(q.restore({}));
    auto bad = blob;
    bad[8 + 4] = 0x07;  // master ELCR bits that cannot be level
    EXPECT_FALSE(q.restore(bad));
    std::mt19937_64 rng(3);
    for (int i = 0; i < 20000; ++i) {
        std::vector<uint8_t> b = blob;
        if (i % 2) {
            b.resize(rng() % 64);
            for (auto& x : b) x = static_cast<uint8_t>(rng());
        } else {
            b[rng() % b.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
        }
        PicPair r;
        if (r.restore(b)) {
            for (unsigned k = 0; k < 16; ++k) r.set_irq(k, true);
            (void)r.acknowledge();
            (void)r.read(0x20);
            r.write(0x20, 0x20);
        }
    }
}

}  // namespace
}  // namespace popek::hv::emu::platform
