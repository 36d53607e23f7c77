// Local APIC model (src/hv/emu/platform/lapic.*) driven with fake time.
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "hv/emu/platform/lapic.hpp"

namespace popek::hv::emu::platform {
namespace {

constexpr uint64_t kTscHz = 2'000'000'000;  // 2 GHz: 2 TSC ticks per ns
constexpr uint64_t kBusHz = 1'000'000'000;  // 1 GHz: 1 bus tick per ns

using L = Lapic;

// A software-enabled APIC with spurious vector 0xff.
struct Enabled : Lapic {
    explicit Enabled(uint32_t id = 0, bool bsp = true) : Lapic(id, bsp, kTscHz, kBusHz) { write(L::kSvr, 0x1ff, 0); }
};

InterruptMessage fixed(uint8_t vector, bool level = false) {
    InterruptMessage m;
    m.vector = vector;
    m.level = level;
    return m;
}

TEST(EmuPlatformLapic, ResetState) {
    Lapic a(3, false, kTscHz, kBusHz);
    EXPECT_EQ(a.read(L::kId, 0), 3u << 24);
    EXPECT_EQ(a.read(L::kVersion, 0), 0x00050014u);
    EXPECT_EQ(a.read(L::kSvr, 0), 0xffu);
    EXPECT_EQ(a.read(L::kDfr, 0), 0xffffffffu);
    for (uint32_t off : {L::kLvtTimer, L::kLvtThermal, L::kLvtPerf, L::kLvtLint0, L::kLvtLint1, L::kLvtError})
        EXPECT_EQ(a.read(off, 0), 0x10000u) << std::hex << off;
    EXPECT_EQ(a.apic_base(), 0xfee00800u);  // enabled, not the BSP
    Lapic bsp(0, true, kTscHz, kBusHz);
    EXPECT_EQ(bsp.apic_base(), 0xfee00900u);
    EXPECT_EQ(bsp.read(L::kLvtLint0, 0), 0x700u);  // virtual wire: ExtINT, unmasked
    EXPECT_EQ(bsp.read(L::kLvtLint1, 0), 0x10000u);
    EXPECT_EQ(a.next_timer_ns(), UINT64_MAX);
}

TEST(EmuPlatformLapic, IdWritableVersionReadOnly) {
    Enabled a(2);
    a.write(L::kVersion, 0, 0);
    EXPECT_EQ(a.read(L::kVersion, 0), 0x00050014u);
    a.write(L::kId, 0x07abcdef, 0);
    EXPECT_EQ(a.read(L::kId, 0), 7u << 24);
    EXPECT_EQ(a.id(), 7u);
    InterruptMessage m = fixed(0x40);
    m.dest = 7;
    EXPECT_TRUE(a.accepts(m));
    m.dest = 2;
    EXPECT_FALSE(a.accepts(m));
    a.init_reset();  // INIT keeps the id
    EXPECT_EQ(a.id(), 7u);
    EXPECT_EQ(a.read(L::kSvr, 0), 0xffu);
}

TEST(EmuPlatformLapic, FixedInterruptIrrIsrEoi) {
    Enabled a;
    int wakeups = 0;
    a.on_wakeup = [&] { ++wakeups; };
    a.deliver(fixed(0x41));
    EXPECT_EQ(wakeups, 1);
    EXPECT_EQ(a.read(L::kIrr + 0x20, 0), 1u << 1);  // vector 0x41: IRR word 2, bit 1
    EXPECT_EQ(a.pending_vector(), 0x41);
    EXPECT_TRUE(a.has_event());
    EXPECT_EQ(a.acknowledge(), 0x41);
    EXPECT_EQ(a.read(L::kIrr + 0x20, 0), 0u);
    EXPECT_EQ(a.read(L::kIsr + 0x20, 0), 1u << 1);
    EXPECT_EQ(a.read(L::kPpr, 0), 0x40u);
    EXPECT_EQ(a.pending_vector(), -1);
    a.write(L::kEoi, 0, 0);
    EXPECT_EQ(a.read(L::kIsr + 0x20, 0), 0u);
    EXPECT_EQ(a.read(L::kPpr, 0), 0u);
    EXPECT_FALSE(a.has_event());
}

TEST(EmuPlatformLapic, PriorityClassesTprAndPpr) {
    Enabled a;
    a.write(L::kTpr, 0x55, 0);
    EXPECT_EQ(a.read(L::kPpr, 0), 0x55u);
    a.deliver(fixed(0x50));  // same class as TPR: blocked
    EXPECT_EQ(a.pending_vector(), -1);
    EXPECT_EQ(a.acknowledge(), 0xff);  // spurious vector, IRR untouched
    EXPECT_EQ(a.read(L::kIrr + 0x20, 0), 1u << 16);
    a.deliver(fixed(0x61));
    EXPECT_EQ(a.pending_vector(), 0x61);
    a.write(L::kTpr, 0, 0);
    EXPECT_EQ(a.pending_vector(), 0x61);  // highest first
    EXPECT_EQ(a.acknowledge(), 0x61);
    // In service 0x61: 0x50 (lower class) waits, 0x62 (same class) waits, 0x70 preempts.
    EXPECT_EQ(a.pending_vector(), -1);
    a.deliver(fixed(0x62));
    EXPECT_EQ(a.pending_vector(), -1);
    a.deliver(fixed(0x70));
    EXPECT_EQ(a.pending_vector(), 0x70);
    EXPECT_EQ(a.acknowledge(), 0x70);
    EXPECT_EQ(a.read(L::kPpr, 0), 0x70u);
    a.write(L::kEoi, 0, 0);  // EOI goes to the highest in service: 0x70
    EXPECT_EQ(a.read(L::kPpr, 0), 0x60u);
    a.write(L::kEoi, 0, 0);
    EXPECT_EQ(a.pending_vector(), 0x62);
    EXPECT_EQ(a.acknowledge(), 0x62);
    a.write(L::kEoi, 0, 0);
    EXPECT_EQ(a.acknowledge(), 0x50);
}

TEST(EmuPlatformLapic, LevelTriggeredEoiCallsBack) {
    Enabled a;
    std::vector<uint8_t> eois;
    a.on_eoi = [&](uint8_t v) { eois.push_back(v); };
    a.deliver(fixed(0x30, true));
    EXPECT_EQ(a.read(L::kTmr + 0x10, 0), 1u << 16);
    a.deliver(fixed(0x40, false));
    EXPECT_EQ(a.acknowledge(), 0x40);
    a.write(L::kEoi, 0, 0);
    EXPECT_TRUE(eois.empty());  // edge: no broadcast
    EXPECT_EQ(a.acknowledge(), 0x30);
    a.write(L::kEoi, 0, 0);
    ASSERT_EQ(eois.size(), 1u);
    EXPECT_EQ(eois[0], 0x30);
    // Re-delivered edge-triggered: TMR cleared again.
    a.deliver(fixed(0x30, false));
    EXPECT_EQ(a.read(L::kTmr + 0x10, 0), 0u);
}

TEST(EmuPlatformLapic, LevelDeassertMessagesCarryNoInterrupt) {
    Enabled a;
    InterruptMessage m = fixed(0x40, true);
    m.assert = false;
    a.deliver(m);
    EXPECT_EQ(a.pending_vector(), -1);
    EXPECT_FALSE(a.has_event());
    m.assert = true;
    a.deliver(m);
    EXPECT_EQ(a.pending_vector(), 0x40);
}

TEST(EmuPlatformLapic, SoftwareDisable) {
    Lapic a(0, false, kTscHz, kBusHz);  // SVR 0xff at reset: software-disabled
    a.deliver(fixed(0x40));
    EXPECT_EQ(a.pending_vector(), -1);
    EXPECT_EQ(a.read(L::kIrr + 0x20, 0), 0u);  // dropped
    a.write(L::kLvtTimer, 0x20, 0);            // cannot unmask while disabled
    EXPECT_EQ(a.read(L::kLvtTimer, 0), 0x10020u);
    a.write(L::kSvr, 0x1ff, 0);
    a.write(L::kLvtTimer, 0x20, 0);
    EXPECT_EQ(a.read(L::kLvtTimer, 0), 0x20u);
    a.deliver(fixed(0x40));
    EXPECT_EQ(a.pending_vector(), 0x40);
    a.write(L::kSvr, 0xff, 0);  // disabling masks every LVT, holds IRR
    EXPECT_EQ(a.read(L::kLvtTimer, 0), 0x10020u);
    EXPECT_EQ(a.pending_vector(), -1);
    EXPECT_EQ(a.read(L::kIrr + 0x20, 0), 1u);
    // NMI/INIT/SIPI still go through.
    InterruptMessage nmi;
    nmi.delivery_mode = kNmi;
    a.deliver(nmi);
    EXPECT_TRUE(a.take_nmi());
    EXPECT_FALSE(a.take_nmi());
}

TEST(EmuPlatformLapic, IllegalVectorsAndEsr) {
    Enabled a;
    a.deliver(fixed(0x05));
    EXPECT_EQ(a.pending_vector(), -1);
    EXPECT_EQ(a.read(L::kEsr, 0), 0u);  // not latched until written
    a.write(L::kEsr, 0, 0);
    EXPECT_EQ(a.read(L::kEsr, 0), 0x40u);  // received illegal vector
    a.write(L::kEsr, 0, 0);
    EXPECT_EQ(a.read(L::kEsr, 0), 0u);
    // Error LVT unmasked: an error raises its vector.
    a.write(L::kLvtError, 0xfe, 0);
    std::vector<InterruptMessage> ipis;
    a.on_ipi = [&](const InterruptMessage& m) { ipis.push_back(m); };
    a.write(L::kIcrLow, 0x0003, 0);  // fixed IPI with vector 3: not sent
    EXPECT_TRUE(ipis.empty());
    EXPECT_EQ(a.pending_vector(), 0xfe);
    a.write(L::kEsr, 0, 0);
    EXPECT_EQ(a.read(L::kEsr, 0), 0x20u);  // send illegal vector
    a.write(0x3f0, 1, 0);                  // reserved register
    a.write(L::kEsr, 0, 0);
    EXPECT_EQ(a.read(L::kEsr, 0), 0x80u);
}

TEST(EmuPlatformLapic, IcrSendsIpis) {
    Enabled a(1);
    std::vector<InterruptMessage> ipis;
    a.on_ipi = [&](const InterruptMessage& m) { ipis.push_back(m); };
    a.write(L::kIcrHigh, 0x02abcdef, 0);
    EXPECT_EQ(a.read(L::kIcrHigh, 0), 0x02000000u);
    a.write(L::kIcrLow, 0x00004831, 0);  // fixed, logical, assert, vector 0x31
    ASSERT_EQ(ipis.size(), 1u);
    EXPECT_EQ(ipis[0].vector, 0x31);
    EXPECT_EQ(ipis[0].delivery_mode, kFixed);
    EXPECT_TRUE(ipis[0].logical);
    EXPECT_EQ(ipis[0].dest, 2u);
    EXPECT_EQ(ipis[0].shorthand, kNoShorthand);
    EXPECT_EQ(ipis[0].source_apic, 1u);
    EXPECT_FALSE(ipis[0].level);
    EXPECT_EQ(a.read(L::kIcrLow, 0) & (1u << 12), 0u);  // delivery status idle
    a.write(L::kIcrLow, 0x000c4500, 0);  // INIT, all excluding self, assert
    EXPECT_EQ(ipis[1].delivery_mode, kInit);
    EXPECT_EQ(ipis[1].shorthand, kAllExcludingSelf);
    EXPECT_TRUE(ipis[1].assert);
    a.write(L::kIcrLow, 0x000c8500, 0);  // INIT level de-assert
    EXPECT_EQ(ipis[2].delivery_mode, kInit);
    EXPECT_TRUE(ipis[2].level);
    EXPECT_FALSE(ipis[2].assert);
    a.write(L::kIcrLow, 0x00000699, 0);  // SIPI vector 0x99, physical
    EXPECT_EQ(ipis[3].delivery_mode, kStartup);
    EXPECT_EQ(ipis[3].vector, 0x99);
    EXPECT_FALSE(ipis[3].logical);
}

TEST(EmuPlatformLapic, SelfIpiThroughTheCallbackDoesNotDeadlock) {
    Enabled a(4);
    a.on_ipi = [&](const InterruptMessage& m) {
        if (a.accepts(m)) a.deliver(m);
    };
    a.write(L::kIcrLow, 0x00040042, 0);  // self shorthand, vector 0x42
    EXPECT_EQ(a.pending_vector(), 0x42);
}

TEST(EmuPlatformLapic, DestinationMatching) {
    Enabled a(5);
    InterruptMessage m = fixed(0x40);
    m.dest = 5;
    EXPECT_TRUE(a.accepts(m));
    m.dest = 6;
    EXPECT_FALSE(a.accepts(m));
    m.dest = 0xff;
    EXPECT_TRUE(a.accepts(m));
    // Logical flat: LDR bit set for this APIC.
    m.logical = true;
    a.write(L::kLdr, 0x04000000, 0);
    m.dest = 0x0c;
    EXPECT_TRUE(a.accepts(m));
    m.dest = 0x03;
    EXPECT_FALSE(a.accepts(m));
    // Cluster model: cluster 2, member bit 1.
    a.write(L::kDfr, 0x0fffffff, 0);
    EXPECT_EQ(a.read(L::kDfr, 0), 0x0fffffffu);
    a.write(L::kLdr, 0x22000000, 0);
    m.dest = 0x23;
    EXPECT_TRUE(a.accepts(m));
    m.dest = 0x13;
    EXPECT_FALSE(a.accepts(m));  // other cluster
    m.dest = 0x24;
    EXPECT_FALSE(a.accepts(m));  // other member
    m.dest = 0xf2;
    EXPECT_TRUE(a.accepts(m));  // cluster broadcast
    // Shorthands.
    InterruptMessage s = fixed(0x40);
    s.shorthand = kSelf;
    s.source_apic = 5;
    EXPECT_TRUE(a.accepts(s));
    s.source_apic = 1;
    EXPECT_FALSE(a.accepts(s));
    s.shorthand = kAllExcludingSelf;
    EXPECT_TRUE(a.accepts(s));
    s.source_apic = 5;
    EXPECT_FALSE(a.accepts(s));
    s.shorthand = kAllIncludingSelf;
    EXPECT_TRUE(a.accepts(s));
    // Globally disabled: accepts nothing.
    ASSERT_TRUE(a.set_apic_base(0xfee00000));
    EXPECT_FALSE(a.accepts(s));
}

TEST(EmuPlatformLapic, PendingEventsNmiInitSipiExtint) {
    Enabled a(1, false);
    int wakeups = 0;
    a.on_wakeup = [&] { ++wakeups; };
    InterruptMessage m;
    m.delivery_mode = kInit;
    m.level = true;
    m.assert = false;  // de-assert: ignored
    a.deliver(m);
    EXPECT_FALSE(a.take_init());
    m.assert = true;
    a.deliver(m);
    m.delivery_mode = kStartup;
    m.vector = 0x9a;
    a.deliver(m);
    EXPECT_TRUE(a.has_event());
    EXPECT_TRUE(a.take_init());
    EXPECT_FALSE(a.take_init());
    a.init_reset();
    EXPECT_EQ(a.take_sipi(), 0x9a);  // survives the INIT reset
    EXPECT_EQ(a.take_sipi(), -1);
    m.delivery_mode = kExtInt;
    a.deliver(m);
    EXPECT_TRUE(a.extint_pending());
    EXPECT_TRUE(a.take_extint());
    EXPECT_FALSE(a.take_extint());
    EXPECT_EQ(wakeups, 3);
    EXPECT_FALSE(a.has_event());
}

TEST(EmuPlatformLapic, Lint0ExtIntAndLint1Nmi) {
    Enabled a(0, true);  // BSP: LINT0 ExtINT at reset
    int wakeups = 0;
    a.on_wakeup = [&] { ++wakeups; };
    a.set_lint(0, true);
    EXPECT_EQ(wakeups, 1);
    EXPECT_TRUE(a.extint_pending());
    EXPECT_TRUE(a.take_extint());  // the line is level: still there
    EXPECT_TRUE(a.take_extint());
    a.set_lint(0, false);
    EXPECT_FALSE(a.take_extint());
    a.write(L::kLvtLint0, 0x10700, 0);  // masked
    a.set_lint(0, true);
    EXPECT_FALSE(a.extint_pending());
    a.write(L::kLvtLint0, 0x700, 0);  // unmasking with the line high wakes
    EXPECT_TRUE(a.extint_pending());
    EXPECT_EQ(wakeups, 2);
    // LINT1 as NMI, edge.
    a.write(L::kLvtLint1, 0x400, 0);
    a.set_lint(1, true);
    a.set_lint(1, true);
    EXPECT_TRUE(a.take_nmi());
    EXPECT_FALSE(a.take_nmi());
    // LINT1 as fixed vector.
    a.write(L::kLvtLint1, 0x055, 0);
    a.set_lint(1, false);
    a.set_lint(1, true);
    EXPECT_EQ(a.pending_vector(), 0x55);
    // Globally disabled APIC: LINT0 is INTR regardless of the LVT.
    Lapic b(1, false, kTscHz, kBusHz);
    ASSERT_TRUE(b.set_apic_base(0xfee00000));
    b.set_lint(0, true);
    EXPECT_TRUE(b.take_extint());
    b.set_lint(1, true);
    EXPECT_TRUE(b.take_nmi());
}

TEST(EmuPlatformLapic, ApicBaseMsr) {
    Enabled a(0, true);
    EXPECT_FALSE(a.set_apic_base(0xfee00c00));            // x2APIC enable
    EXPECT_FALSE(a.set_apic_base(0xfee00801));            // reserved bit 0
    EXPECT_FALSE(a.set_apic_base(0x0010'0000'fee0'0800));  // above 52 bits
    EXPECT_EQ(a.apic_base(), 0xfee00900u);
    EXPECT_TRUE(a.set_apic_base(0xfed00800));  // relocate, BSP bit kept
    EXPECT_EQ(a.apic_base(), 0xfed00900u);
    a.write(L::kTpr, 0x20, 0);
    EXPECT_TRUE(a.set_apic_base(0xfee00100));  // global disable resets
    EXPECT_FALSE(a.enabled());
    EXPECT_EQ(a.read(L::kTpr, 0), 0u);
    a.write(L::kTpr, 0x30, 0);  // not decoded while disabled
    EXPECT_TRUE(a.set_apic_base(0xfee00900));
    EXPECT_EQ(a.read(L::kTpr, 0), 0u);
    EXPECT_EQ(a.read(L::kSvr, 0), 0xffu);
}

TEST(EmuPlatformLapic, OneShotTimerWithDivider) {
    Enabled a;
    a.write(L::kTimerDivide, 0x1, 1000);  // divide by 4
    a.write(L::kLvtTimer, 0x30, 1000);    // one-shot, vector 0x30
    a.write(L::kTimerInitial, 1000, 1000);
    EXPECT_EQ(a.read(L::kTimerInitial, 1000), 1000u);
    EXPECT_EQ(a.next_timer_ns(), 1000u + 4000u);
    EXPECT_EQ(a.read(L::kTimerCurrent, 1000), 1000u);
    EXPECT_EQ(a.read(L::kTimerCurrent, 3000), 500u);
    a.tick(4999, 0);
    EXPECT_EQ(a.pending_vector(), -1);
    a.tick(5000, 0);
    EXPECT_EQ(a.pending_vector(), 0x30);
    EXPECT_EQ(a.read(L::kTimerCurrent, 5000), 0u);
    EXPECT_EQ(a.next_timer_ns(), UINT64_MAX);
    EXPECT_EQ(a.acknowledge(), 0x30);
    a.write(L::kEoi, 0, 6000);
    a.tick(100000, 0);
    EXPECT_EQ(a.pending_vector(), -1);  // one shot only
    // Writing 0 stops a running timer.
    a.write(L::kTimerInitial, 10, 200000);
    a.write(L::kTimerInitial, 0, 200001);
    EXPECT_EQ(a.next_timer_ns(), UINT64_MAX);
}

TEST(EmuPlatformLapic, AllDivideValues) {
    const std::pair<uint32_t, uint64_t> table[] = {{0x0, 2},  {0x1, 4},  {0x2, 8},   {0x3, 16},
                                                   {0x8, 32}, {0x9, 64}, {0xa, 128}, {0xb, 1}};
    for (auto [dcr, div] : table) {
        Enabled a;
        a.write(L::kTimerDivide, dcr, 0);
        a.write(L::kLvtTimer, 0x30, 0);
        a.write(L::kTimerInitial, 100, 0);
        EXPECT_EQ(a.next_timer_ns(), 100 * div) << dcr;
    }
}

TEST(EmuPlatformLapic, MaskedTimerExpiresSilently) {
    Enabled a;
    a.write(L::kTimerDivide, 0xb, 0);
    a.write(L::kLvtTimer, 0x10030, 0);
    a.write(L::kTimerInitial, 10, 0);
    a.tick(10, 0);
    EXPECT_EQ(a.pending_vector(), -1);
    EXPECT_EQ(a.next_timer_ns(), UINT64_MAX);
}

TEST(EmuPlatformLapic, PeriodicTimer) {
    Enabled a;
    int wakeups = 0;
    a.on_wakeup = [&] { ++wakeups; };
    a.write(L::kTimerDivide, 0xb, 0);             // divide by 1: 1 count per ns
    a.write(L::kLvtTimer, (1u << 17) | 0x31, 0);  // periodic
    a.write(L::kTimerInitial, 1'000'000, 0);      // 1 ms
    EXPECT_EQ(a.next_timer_ns(), 1'000'000u);
    a.tick(1'000'000, 0);
    EXPECT_EQ(wakeups, 1);
    EXPECT_EQ(a.next_timer_ns(), 2'000'000u);
    EXPECT_EQ(a.read(L::kTimerCurrent, 1'250'000), 750'000u);
    EXPECT_EQ(a.acknowledge(), 0x31);
    a.write(L::kEoi, 0, 1'300'000);
    // Late tick: missed periods coalesce into one interrupt, phase kept.
    EXPECT_EQ(a.read(L::kTimerCurrent, 4'500'000), 500'000u);
    a.tick(4'500'000, 0);
    EXPECT_EQ(wakeups, 2);
    EXPECT_EQ(a.next_timer_ns(), 5'000'000u);
    EXPECT_EQ(a.pending_vector(), 0x31);
    // Switching to one-shot keeps the count; it then stops after expiry.
    a.write(L::kLvtTimer, 0x31, 4'600'000);
    a.tick(5'000'000, 0);
    EXPECT_EQ(a.next_timer_ns(), UINT64_MAX);
}

TEST(EmuPlatformLapic, TinyPeriodsAreClampedTo100us) {
    Enabled a;
    a.write(L::kTimerDivide, 0xb, 0);
    a.write(L::kLvtTimer, (1u << 17) | 0x31, 0);
    a.write(L::kTimerInitial, 1, 0);  // 1 ns period asked
    a.tick(a.next_timer_ns(), 0);
    const uint64_t t1 = a.next_timer_ns();
    a.tick(t1, 0);
    EXPECT_EQ(a.next_timer_ns() - t1, 100'000u);
    EXPECT_EQ(a.read(L::kTimerCurrent, t1 + 10), 1u);  // reads stay within the initial count
}

TEST(EmuPlatformLapic, DivideChangeKeepsTheCount) {
    Enabled a;
    a.write(L::kTimerDivide, 0xb, 0);  // 1 count per ns
    a.write(L::kLvtTimer, 0x30, 0);
    a.write(L::kTimerInitial, 1000, 0);
    a.write(L::kTimerDivide, 0x0, 400);  // divide by 2: 600 counts left = 1200 ns
    EXPECT_EQ(a.read(L::kTimerCurrent, 400), 600u);
    EXPECT_EQ(a.next_timer_ns(), 1600u);
    EXPECT_EQ(a.read(L::kTimerCurrent, 1000), 300u);
}

TEST(EmuPlatformLapic, TscDeadlineTimer) {
    Enabled a;
    int wakeups = 0;
    a.on_wakeup = [&] { ++wakeups; };
    // Not in TSC-deadline mode: the MSR is ignored and reads 0.
    a.set_tsc_deadline(5000, 0, 0);
    EXPECT_EQ(a.tsc_deadline(), 0u);
    a.write(L::kLvtTimer, 0x30, 0);
    a.write(L::kTimerInitial, 1000, 0);
    a.write(L::kLvtTimer, (2u << 17) | 0x32, 10);  // switching disarms
    EXPECT_EQ(a.read(L::kTimerInitial, 10), 0u);
    EXPECT_EQ(a.next_timer_ns(), UINT64_MAX);
    a.write(L::kTimerInitial, 50, 10);  // ignored in this mode
    EXPECT_EQ(a.read(L::kTimerInitial, 10), 0u);
    EXPECT_EQ(a.read(L::kTimerCurrent, 10), 0u);
    // Arm: TSC 20000 at ns 10; deadline 30000 = 5000 ns later.
    a.set_tsc_deadline(30000, 20000, 10);
    EXPECT_EQ(a.tsc_deadline(), 30000u);
    EXPECT_EQ(a.next_timer_ns(), 5010u);
    a.tick(5009, 29999);
    EXPECT_EQ(wakeups, 0);
    a.tick(5010, 30000);
    EXPECT_EQ(wakeups, 1);
    EXPECT_EQ(a.pending_vector(), 0x32);
    EXPECT_EQ(a.tsc_deadline(), 0u);  // disarmed after firing
    EXPECT_EQ(a.next_timer_ns(), UINT64_MAX);
    EXPECT_EQ(a.acknowledge(), 0x32);
    a.write(L::kEoi, 0, 6000);
    // Disarm by writing 0.
    a.set_tsc_deadline(90000, 40000, 6000);
    a.set_tsc_deadline(0, 40000, 6000);
    a.tick(100000, 1000000);
    EXPECT_EQ(wakeups, 1);
    // A deadline already in the past fires at once.
    a.set_tsc_deadline(100, 40000, 6000);
    EXPECT_EQ(wakeups, 2);
    EXPECT_EQ(a.pending_vector(), 0x32);
    // Leaving TSC-deadline mode disarms.
    a.set_tsc_deadline(90000, 40000, 6000);
    a.write(L::kLvtTimer, 0x32, 6000);
    EXPECT_EQ(a.next_timer_ns(), UINT64_MAX);
    EXPECT_EQ(a.tsc_deadline(), 0u);
}

TEST(EmuPlatformLapic, SaveRestoreRoundTrip) {
    Enabled a(2, false);
    a.write(L::kTpr, 0x10, 0);
    a.write(L::kLdr, 0x08000000, 0);
    a.deliver(fixed(0x44, true));
    a.deliver(fixed(0x80));
    EXPECT_EQ(a.acknowledge(), 0x80);
    a.write(L::kTimerDivide, 0xb, 0);
    a.write(L::kLvtTimer, (1u << 17) | 0x33, 0);
    a.write(L::kTimerInitial, 700'000, 100);
    InterruptMessage nmi;
    nmi.delivery_mode = kNmi;
    a.deliver(nmi);
    const auto blob = a.save();
    EXPECT_EQ(blob.size(), 8u + 1024u + 8 + 4 + 32 + 5 + 2);
    EXPECT_EQ(blob[8 + L::kPpr], 0x80);  // the page carries PPR, as KVM's does

    Lapic b(2, false, kTscHz, kBusHz);
    ASSERT_TRUE(b.restore(blob));
    EXPECT_EQ(b.save(), blob);
    EXPECT_EQ(b.read(L::kLdr, 0), 0x08000000u);
    EXPECT_EQ(b.read(L::kPpr, 0), 0x80u);
    EXPECT_EQ(b.next_timer_ns(), 700'100u);
    EXPECT_TRUE(b.take_nmi());
    b.write(L::kEoi, 0, 200);
    EXPECT_EQ(b.acknowledge(), 0x44);
    b.tick(700'100, 0);
    EXPECT_EQ(b.next_timer_ns(), 1'400'100u);
    // The APIC id is a (writable) register: it comes with the state.
    Lapic c(3, false, kTscHz, kBusHz);
    ASSERT_TRUE(c.restore(blob));
    EXPECT_EQ(c.id(), 2u);
    // Another BSP flag is refused, and leaves the APIC alone.
    Lapic d(2, true, kTscHz, kBusHz);
    EXPECT_FALSE(d.restore(blob));
    EXPECT_EQ(d.read(L::kSvr, 0), 0xffu);
}

TEST(EmuPlatformLapic, RestoreRejectsBadBlobs) {
    Enabled a(0, true);
    a.write(L::kLvtTimer, 0x30, 0);
    a.write(L::kTimerInitial, 100, 0);
    const auto good = a.save();
    Lapic b(0, true, kTscHz, kBusHz);
    EXPECT_FALSE(b.restore({}));
    EXPECT_FALSE(b.restore(std::span(good).first(good.size() - 1)));
    auto longer = good;
    longer.push_back(0);
    EXPECT_FALSE(b.restore(longer));
    auto bad_version = good;
    bad_version[4] = 2;
    EXPECT_FALSE(b.restore(bad_version));
    auto bad_lvt = good;
    bad_lvt[8 + L::kLvtTimer + 3] = 0x80;  // reserved bit 31
    EXPECT_FALSE(b.restore(bad_lvt));
    auto bad_base = good;
    bad_base[8 + 1024 + 1] |= 0x04;  // x2APIC enable
    EXPECT_FALSE(b.restore(bad_base));
    auto bad_bool = good;
    bad_bool[good.size() - 3] = 2;
    EXPECT_FALSE(b.restore(bad_bool));
    // Random blobs and random corruptions of a good one never crash, and
    // whatever is accepted works afterwards.
    std::mt19937_64 rng(1);
    for (int i = 0; i < 20000; ++i) {
        std::vector<uint8_t> blob;
        if (i % 2) {
            blob.resize(rng() % 1200);
            for (auto& x : blob) x = static_cast<uint8_t>(rng());
        } else {
            blob = good;
            for (int k = 0; k < 1 + static_cast<int>(rng() % 4); ++k) blob[rng() % blob.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
        }
        Lapic c(0, true, kTscHz, kBusHz);
        if (c.restore(blob)) {
            c.tick(rng(), rng());
            (void)c.read(L::kTimerCurrent, rng());
            (void)c.acknowledge();
            c.write(L::kEoi, 0, 0);
            (void)c.next_timer_ns();
        }
    }
}

TEST(EmuPlatformLapic, ConcurrentDeliveryAndAcknowledge) {
    Enabled a;
    std::atomic<bool> delivered_all{false};
    std::atomic<int> taken{0};
    // The "vCPU" is the only thread that acknowledges and EOIs, so between its
    // iterations nothing is in service and pending_vector() < 0 means the IRR
    // is empty; it stops once every delivery happened and none is left.
    std::thread vcpu([&] {
        for (;;) {
            const bool last = delivered_all.load();
            if (a.pending_vector() >= 0) {
                (void)a.acknowledge();
                a.write(L::kEoi, 0, 0);
                taken.fetch_add(1);
            } else if (last) {
                break;
            }
        }
    });
    for (int i = 0; i < 20000; ++i) {
        a.deliver(fixed(static_cast<uint8_t>(0x40 + i % 0x80)));
        a.tick(static_cast<uint64_t>(i), 0);
    }
    delivered_all = true;
    vcpu.join();
    EXPECT_GT(taken.load(), 0);
    EXPECT_EQ(a.read(L::kPpr, 0), 0u);
    EXPECT_EQ(a.pending_vector(), -1);
}

TEST(EmuPlatformLapic, DecodeMsi) {
    const InterruptMessage m = decode_msi(0xfee0300c, 0x0000c1a5);
    EXPECT_EQ(m.dest, 3u);
    EXPECT_TRUE(m.logical);
    EXPECT_EQ(m.vector, 0xa5);
    EXPECT_EQ(m.delivery_mode, kLowestPriority);
    EXPECT_TRUE(m.level);
    EXPECT_TRUE(m.assert);
    const InterruptMessage e = decode_msi(0xfee01000, 0x0000'0031);
    EXPECT_EQ(e.dest, 1u);
    EXPECT_FALSE(e.logical);
    EXPECT_FALSE(e.level);
    EXPECT_EQ(e.delivery_mode, kFixed);
    EXPECT_TRUE(is_msi_address(0xfee01000));
    EXPECT_FALSE(is_msi_address(0xfec00000));
}

}  // namespace
}  // namespace popek::hv::emu::platform
