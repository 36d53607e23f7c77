// The platform models wired the way the emu backend wires them (contract in
// PLATFORM_CONTRACT.md): PIT -> PIC IRQ0 + IOAPIC pin 2, PIC INTR -> BSP
// LINT0, IOAPIC and ICR messages -> a router over the local APICs, level EOIs
// back to the IOAPIC. Then random guest accesses to all of them, checking
// that nothing crashes and that no timer is left due after a tick().
#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <vector>

#include "hv/emu/platform/hpet.hpp"
#include "hv/emu/platform/ioapic.hpp"
#include "hv/emu/platform/lapic.hpp"
#include "hv/emu/platform/pic.hpp"
#include "hv/emu/platform/pit.hpp"
#include "hv/emu/platform/pm_timer.hpp"

namespace popek::hv::emu::platform {
namespace {

constexpr uint64_t kHz = 1'000'000'000;

struct Machine {
    std::vector<std::unique_ptr<Lapic>> cpus;
    std::unique_ptr<IoApic> ioapic;
    PicPair pic;
    Pit pit;
    Hpet hpet;

    void route(const InterruptMessage& m) {
        for (auto& c : cpus) {
            if (!c->accepts(m)) continue;
            c->deliver(m);
            if (m.delivery_mode == kLowestPriority && m.shorthand == kNoShorthand) break;
        }
    }
    void set_gsi(unsigned gsi, bool level) {
        if (gsi < 16) pic.set_irq(gsi, level);
        ioapic->set_irq(gsi == 0 ? 2 : gsi, level);
    }

    explicit Machine(unsigned n) {
        for (unsigned i = 0; i < n; ++i) cpus.push_back(std::make_unique<Lapic>(i, i == 0, kHz, kHz));
        ioapic = std::make_unique<IoApic>([this](const InterruptMessage& m) { route(m); });
        for (auto& c : cpus) {
            c->on_eoi = [this](uint8_t v) { ioapic->eoi(v); };
            c->on_ipi = [this](const InterruptMessage& m) { route(m); };
        }
        pic.on_output = [this](bool level) { cpus[0]->set_lint(0, level); };
        pit.on_irq0 = [this](bool level) { set_gsi(0, level); };
        hpet.on_irq = [this](unsigned line, bool level) { set_gsi(line, level); };
    }
};

void linux_pic_init(PicPair& p) {
    const std::pair<uint16_t, uint8_t> seq[] = {{0x21, 0xff}, {0xa1, 0xff}, {0x20, 0x11}, {0x21, 0x30},
                                                {0x21, 0x04}, {0x21, 0x01}, {0xa0, 0x11}, {0xa1, 0x38},
                                                {0xa1, 0x02}, {0xa1, 0x01}, {0x21, 0xfa}, {0xa1, 0xff}};
    for (auto [port, v] : seq) p.write(port, v);
}

TEST(EmuPlatformWiring, PitThroughThePicToLint0ExtInt) {
    Machine m(1);
    Lapic& cpu = *m.cpus[0];
    cpu.write(Lapic::kSvr, 0x1ff, 0);
    linux_pic_init(m.pic);
    m.pit.write(0x43, 0x34, 0);
    m.pit.write(0x40, 0xa9, 0);
    m.pit.write(0x40, 0x04, 0);  // 1193 ticks, about 1 ms
    EXPECT_FALSE(cpu.extint_pending());
    const uint64_t t = m.pit.next_event_ns();
    m.pit.tick(t);
    ASSERT_TRUE(cpu.has_event());
    ASSERT_TRUE(cpu.take_extint());
    EXPECT_EQ(m.pic.acknowledge(), 0x30);
    EXPECT_FALSE(cpu.extint_pending());  // INTR dropped after INTA
    m.pic.write(0x20, 0x60);             // EOI
    m.pit.tick(m.pit.next_event_ns());
    EXPECT_TRUE(cpu.take_extint());
    EXPECT_EQ(m.pic.acknowledge(), 0x30);
}

TEST(EmuPlatformWiring, PitThroughIoApicPin2AndLevelPciLine) {
    Machine m(2);
    for (auto& c : m.cpus) c->write(Lapic::kSvr, 0x1ff, 0);
    // IOAPIC pin 2 -> CPU 1, vector 0x31 (Linux's timer route after check_timer()).
    m.ioapic->write(IoApic::kRegSel, 0x15);
    m.ioapic->write(IoApic::kWindow, 0x01000000);
    m.ioapic->write(IoApic::kRegSel, 0x14);
    m.ioapic->write(IoApic::kWindow, 0x31);
    m.pit.write(0x43, 0x34, 0);
    m.pit.write(0x40, 0x00, 0);
    m.pit.write(0x40, 0x10, 0);
    m.pit.tick(m.pit.next_event_ns());
    EXPECT_EQ(m.cpus[0]->pending_vector(), -1);
    EXPECT_EQ(m.cpus[1]->pending_vector(), 0x31);
    // A level-triggered PCI line (GSI 16): EOI from the LAPIC reaches the IOAPIC.
    m.ioapic->write(IoApic::kRegSel, 0x10 + 32);
    m.ioapic->write(IoApic::kWindow, 0xa051);  // level, active low, vector 0x51, dest 0
    m.set_gsi(16, true);
    EXPECT_EQ(m.cpus[0]->acknowledge(), 0x51);
    m.cpus[0]->write(Lapic::kEoi, 0, 0);
    EXPECT_EQ(m.cpus[0]->pending_vector(), 0x51);  // still asserted
    EXPECT_EQ(m.cpus[0]->acknowledge(), 0x51);
    m.set_gsi(16, false);
    m.cpus[0]->write(Lapic::kEoi, 0, 0);
    EXPECT_EQ(m.cpus[0]->pending_vector(), -1);
}

TEST(EmuPlatformWiring, InitSipiThroughTheRouter) {
    Machine m(3);
    for (auto& c : m.cpus) c->write(Lapic::kSvr, 0x1ff, 0);
    // Linux's wakeup_secondary_cpu_via_init(): INIT assert, INIT de-assert, SIPI x2 to APIC 2.
    Lapic& bsp = *m.cpus[0];
    bsp.write(Lapic::kIcrHigh, 2u << 24, 0);
    bsp.write(Lapic::kIcrLow, 0x0000c500, 0);
    bsp.write(Lapic::kIcrLow, 0x00008500, 0);
    bsp.write(Lapic::kIcrLow, 0x00000699, 0);
    EXPECT_FALSE(m.cpus[1]->has_event());
    EXPECT_TRUE(m.cpus[2]->take_init());
    m.cpus[2]->init_reset();
    EXPECT_EQ(m.cpus[2]->take_sipi(), 0x99);
    // An IPI to all others.
    bsp.write(Lapic::kIcrLow, 0x000c00f3, 0);
    EXPECT_EQ(bsp.pending_vector(), -1);
    EXPECT_EQ(m.cpus[1]->pending_vector(), 0xf3);
}

TEST(EmuPlatformWiring, RandomGuestAccessesNeverLeaveATimerDue) {
    std::mt19937_64 rng(7);
    Machine m(2);
    PmTimer pm;
    uint64_t now = 0;
    // Count what fired, to show the run exercised the timers at all.
    size_t pit_irqs = 0, hpet_irqs = 0, wakeups = 0;
    m.pit.on_irq0 = [&](bool level) {
        pit_irqs += level;
        m.set_gsi(0, level);
    };
    m.hpet.on_irq = [&](unsigned line, bool level) {
        hpet_irqs += level;
        m.set_gsi(line, level);
    };
    for (auto& c : m.cpus) c->on_wakeup = [&] { ++wakeups; };
    const uint32_t lapic_regs[] = {0x20, 0x80, 0xb0, 0xd0, 0xe0, 0xf0, 0x280, 0x300, 0x310, 0x320,
                                   0x330, 0x340, 0x350, 0x360, 0x370, 0x380, 0x390, 0x3e0, 0x3f0};
    const uint16_t ports[] = {0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1, 0x40, 0x41, 0x42, 0x43, 0x61};
    for (int i = 0; i < 200000; ++i) {
        now += rng() % 5000;
        const uint64_t tsc = now * 2;
        Lapic& cpu = *m.cpus[rng() % 2];
        switch (rng() % 12) {
        case 0: cpu.write(lapic_regs[rng() % std::size(lapic_regs)], static_cast<uint32_t>(rng()), now); break;
        case 1: (void)cpu.read(static_cast<uint32_t>(rng() % 0x1000), now); break;
        case 2: (void)cpu.set_apic_base(rng() % 3 ? 0xfee00800 : rng()); break;
        case 3: cpu.set_tsc_deadline(tsc + rng() % 100000, tsc, now); break;
        case 4: m.pic.write(ports[rng() % 6], static_cast<uint8_t>(rng())); break;
        case 5: m.pit.write(ports[6 + rng() % 5], static_cast<uint8_t>(rng()), now); break;
        case 6: (void)m.pit.read(ports[rng() % std::size(ports)], now); break;
        case 7:
            m.ioapic->write(rng() % 2 ? 0 : 0x10, static_cast<uint32_t>(rng()));
            m.ioapic->set_irq(static_cast<unsigned>(rng() % 24), rng() % 2);
            break;
        case 8: {
            // Mostly the registers that matter, with values near the counter.
            const uint32_t hpet_regs[] = {0x10, 0x20, 0xf0, 0x100, 0x108, 0x120, 0x128, 0x140, 0x148};
            const uint32_t off =
                rng() % 4 ? hpet_regs[rng() % std::size(hpet_regs)] : static_cast<uint32_t>(rng() % 0x400) & ~3u;
            const uint64_t v = rng() % 2 ? rng() : (off & 8 ? now / 10 + rng() % 100000 : rng() % 0x4000);
            m.hpet.write(off, v, rng() % 2 ? 4 : 8, now);
            (void)m.hpet.read(static_cast<uint32_t>(rng() % 0x400) & ~3u, 4, now);
            break;
        }
        case 9:
            (void)cpu.take_extint();
            (void)cpu.take_nmi();
            if (cpu.pending_vector() >= 0) (void)cpu.acknowledge();
            cpu.write(Lapic::kEoi, 0, now);
            (void)m.pic.acknowledge();
            break;
        case 10: m.pic.set_irq(static_cast<unsigned>(rng() % 16), rng() % 2); break;
        default: (void)pm.read(now); break;
        }
        // The backend's loop: tick whatever is due; afterwards nothing may be.
        for (auto& c : m.cpus) {
            c->tick(now, tsc);
            ASSERT_GT(c->next_timer_ns(), now) << i;
        }
        m.pit.tick(now);
        ASSERT_GT(m.pit.next_event_ns(), now) << i;
        m.hpet.tick(now);
        ASSERT_GT(m.hpet.next_event_ns(), now) << i;
    }
    EXPECT_GT(pit_irqs, 0u);
    EXPECT_GT(hpet_irqs, 0u);
    EXPECT_GT(wakeups, 0u);
}

}  // namespace
}  // namespace popek::hv::emu::platform
