// HPET (IA-PC HPET specification 1.0a). Linux's hpet.c shows what a kernel
// relies on: the capabilities' period and timer count, ENABLE/LEG_RT, a
// 32-bit main counter read, comparators written with SETVAL then the period
// for periodic mode, and the "already passed" check after a one-shot write.
#include "hv/emu/platform/hpet.hpp"

#include "hv/emu/platform/blob.hpp"
#include "hv/emu/platform/muldiv.hpp"

namespace popek::hv::emu::platform {

namespace {

constexpr uint32_t kMagic = 0x54455048;  // "HPET"
constexpr uint32_t kBlobVersion = 1;
constexpr uint64_t kNsPerSec = 1'000'000'000;
constexpr uint64_t kPeriodFs = 1'000'000'000'000'000 / Hpet::kHz;

constexpr uint32_t kRegCap = 0x000;
constexpr uint32_t kRegConfig = 0x010;
constexpr uint32_t kRegStatus = 0x020;
constexpr uint32_t kRegCounter = 0x0f0;
constexpr uint32_t kRegTimer0 = 0x100;

constexpr uint64_t kEnable = 1;
constexpr uint64_t kLegacy = 2;

// Tn_CONF_CAP bits.
constexpr uint64_t kTnLevel = 1u << 1;
constexpr uint64_t kTnIntEnable = 1u << 2;
constexpr uint64_t kTnPeriodic = 1u << 3;
constexpr uint64_t kTnPeriodicCap = 1u << 4;
constexpr uint64_t kTnSize64Cap = 1u << 5;
constexpr uint64_t kTnSetVal = 1u << 6;
constexpr uint64_t kTn32Bit = 1u << 8;
constexpr unsigned kTnRouteShift = 9;
constexpr uint64_t kTnRouteMask = 0x1fu << kTnRouteShift;
constexpr uint64_t kTnWritable = kTnLevel | kTnIntEnable | kTnPeriodic | kTnSetVal | kTn32Bit | kTnRouteMask;
constexpr uint32_t kRouteCap = 0x00f00000;  // IOAPIC pins 20-23

uint64_t capabilities() {
    return (kPeriodFs << 32) | (0x8086u << 16) | (1u << 15) /* LEG_RT_CAP */ | (1u << 13) /* 64-bit */ |
           ((Hpet::kTimers - 1) << 8) | 0x01;
}

uint64_t timer_caps(unsigned n) {
    return (static_cast<uint64_t>(kRouteCap) << 32) | kTnSize64Cap | (n == 0 ? kTnPeriodicCap : 0);
}

}  // namespace

Hpet::Hpet() {
    // Route every timer to the first pin it may use until the guest says otherwise.
    for (auto& t : timers_) t.config = 20u << kTnRouteShift;
}

uint64_t Hpet::counter_at(uint64_t now_ns) const {
    if (!(config_ & kEnable)) return counter_base_;
    const uint64_t ns = now_ns > counter_base_ns_ ? now_ns - counter_base_ns_ : 0;
    return counter_base_ + muldiv(ns, kHz, kNsPerSec);
}

unsigned Hpet::line_of(unsigned n) const {
    if ((config_ & kLegacy) && n < 2) return n == 0 ? 0 : 8;
    return static_cast<unsigned>((timers_[n].config & kTnRouteMask) >> kTnRouteShift);
}

void Hpet::set_line(unsigned n, bool level, std::vector<Effect>& fx) {
    if (timers_[n].asserted == level) return;
    timers_[n].asserted = level;
    fx.push_back({line_of(n), level});
}

void Hpet::fire(unsigned n, std::vector<Effect>& fx) {
    Timer& t = timers_[n];
    if (!(t.config & kTnIntEnable)) return;
    if (t.config & kTnLevel) {
        isr_ |= 1u << n;
        set_line(n, true, fx);  // held until the guest clears the status bit
    } else {
        fx.push_back({line_of(n), true});
        fx.push_back({line_of(n), false});
    }
}

void Hpet::advance_periodic(unsigned n, uint64_t counter) {
    Timer& t = timers_[n];
    if (!(t.config & kTnPeriodic) || t.period == 0) return;
    const bool narrow = t.config & kTn32Bit;
    const uint64_t width_mask = narrow ? 0xffffffffull : ~0ull;
    const uint64_t diff = (counter - t.comparator) & width_mask;
    const bool passed = narrow ? static_cast<int32_t>(static_cast<uint32_t>(diff)) >= 0 : static_cast<int64_t>(diff) >= 0;
    if (!passed) return;
    // Missed periods coalesce; the phase is kept.
    const uint64_t k = diff / t.period + 1;
    t.comparator = (t.comparator + k * t.period) & width_mask;
}

void Hpet::arm(unsigned n, uint64_t now_ns) {
    Timer& t = timers_[n];
    t.fire_ns = UINT64_MAX;
    if (!(config_ & kEnable) || !(t.config & kTnIntEnable)) return;
    const uint64_t c = counter_at(now_ns);
    advance_periodic(n, c);
    const uint64_t width_mask = (t.config & kTn32Bit) ? 0xffffffffull : ~0ull;
    const uint64_t delta = (t.comparator - c) & width_mask;  // ticks until the match
    // The exact time the counter reaches c + delta.
    const uint64_t ticks_from_base = (c - counter_base_) + delta;
    t.fire_ns = sat_add(counter_base_ns_, muldiv_up(ticks_from_base, kNsPerSec, kHz));
    if (t.fire_ns < now_ns) t.fire_ns = now_ns;
}

void Hpet::tick(uint64_t now_ns) {
    std::lock_guard order(notify_mu_);
    std::vector<Effect> fx;
    {
        std::lock_guard lock(mu_);
        for (unsigned n = 0; n < kTimers; ++n) {
            Timer& t = timers_[n];
            if (t.fire_ns > now_ns) continue;
            fire(n, fx);
            if ((t.config & kTnPeriodic) && t.period) {
                arm(n, now_ns);
            } else if (t.config & kTn32Bit) {
                // One-shot: matches again each time the 32-bit counter wraps.
                const uint64_t wrap_ns = muldiv_up(1ull << 32, kNsPerSec, kHz);
                t.fire_ns = sat_add(t.fire_ns, ((now_ns - t.fire_ns) / wrap_ns + 1) * wrap_ns);
            } else {
                t.fire_ns = UINT64_MAX;  // 2^64 ticks away
            }
        }
    }
    run(fx);
}

uint64_t Hpet::next_event_ns() const {
    std::lock_guard lock(mu_);
    uint64_t next = UINT64_MAX;
    for (const Timer& t : timers_) next = t.fire_ns < next ? t.fire_ns : next;
    return next;
}

uint64_t Hpet::read64(uint32_t reg, uint64_t now_ns) const {
    switch (reg) {
    case kRegCap: return capabilities();
    case kRegConfig: return config_;
    case kRegStatus: return isr_;
    case kRegCounter: return counter_at(now_ns);
    default: break;
    }
    if (reg >= kRegTimer0 && reg < kRegTimer0 + 0x20 * kTimers) {
        const unsigned n = (reg - kRegTimer0) / 0x20;
        const Timer& t = timers_[n];
        switch ((reg - kRegTimer0) % 0x20) {
        case 0x00: return t.config | timer_caps(n);
        case 0x08: return (t.config & kTn32Bit) ? t.comparator & 0xffffffffull : t.comparator;
        default: return 0;  // FSB route: no FSB delivery
        }
    }
    return 0;
}

uint64_t Hpet::read(uint32_t offset, unsigned size, uint64_t now_ns) {
    if ((size != 4 && size != 8) || offset % size || offset >= 0x400) return 0;
    std::lock_guard lock(mu_);
    const uint64_t v = read64(offset & ~7u, now_ns);
    return size == 8 ? v : (v >> ((offset & 4) * 8)) & 0xffffffffull;
}

void Hpet::deassert_all(std::vector<Effect>& fx) {
    for (unsigned n = 0; n < kTimers; ++n) set_line(n, false, fx);
}

void Hpet::reassert_all(std::vector<Effect>& fx) {
    for (unsigned n = 0; n < kTimers; ++n) {
        const Timer& t = timers_[n];
        if ((t.config & kTnLevel) && (t.config & kTnIntEnable) && (isr_ >> n & 1)) set_line(n, true, fx);
    }
}

void Hpet::write_timer_config(unsigned n, uint64_t value, std::vector<Effect>& fx) {
    Timer& t = timers_[n];
    uint64_t v = value & kTnWritable;
    if (n != 0) v &= ~kTnPeriodic;  // only timer 0 is periodic-capable
    const unsigned route = static_cast<unsigned>((v & kTnRouteMask) >> kTnRouteShift);
    if (!((kRouteCap >> route) & 1)) v = (v & ~kTnRouteMask) | (t.config & kTnRouteMask);  // refused route
    deassert_all(fx);
    t.config = v;
    if (!(t.config & kTnLevel)) isr_ &= ~(1ull << n);
    reassert_all(fx);
}

void Hpet::write64(uint32_t reg, uint64_t value, uint64_t mask, uint64_t now_ns, std::vector<Effect>& fx) {
    auto merge = [&](uint64_t old) { return (old & ~mask) | (value & mask); };
    switch (reg) {
    case kRegConfig: {
        const uint64_t v = merge(config_) & (kEnable | kLegacy);
        const uint64_t now_counter = counter_at(now_ns);
        deassert_all(fx);
        if ((v ^ config_) & kEnable) {
            counter_base_ = now_counter;  // the counter stops or starts here
            counter_base_ns_ = now_ns;
        }
        config_ = v;
        reassert_all(fx);
        for (unsigned n = 0; n < kTimers; ++n) arm(n, now_ns);
        return;
    }
    case kRegStatus: {
        // Write 1 to clear a level-triggered timer's status and its line.
        const uint64_t clear = value & mask & isr_;
        isr_ &= ~clear;
        for (unsigned n = 0; n < kTimers; ++n)
            if (clear >> n & 1) set_line(n, false, fx);
        return;
    }
    case kRegCounter:
        counter_base_ = merge(counter_at(now_ns));
        counter_base_ns_ = now_ns;
        for (unsigned n = 0; n < kTimers; ++n) arm(n, now_ns);
        return;
    default: break;
    }
    if (reg < kRegTimer0 || reg >= kRegTimer0 + 0x20 * kTimers) return;
    const unsigned n = (reg - kRegTimer0) / 0x20;
    Timer& t = timers_[n];
    switch ((reg - kRegTimer0) % 0x20) {
    case 0x00:
        write_timer_config(n, merge(t.config), fx);
        arm(n, now_ns);
        break;
    case 0x08: {
        const bool periodic = t.config & kTnPeriodic;
        const bool setval = t.config & kTnSetVal;
        // Periodic mode: a write sets the period; with SETVAL it also sets
        // the comparator (Linux writes comparator then period this way).
        uint64_t v = merge(periodic && !setval ? t.period : t.comparator);
        if (t.config & kTn32Bit) v &= 0xffffffffull;
        if (!periodic || setval) t.comparator = v;
        if (periodic) t.period = v;
        t.config &= ~kTnSetVal;
        arm(n, now_ns);
        break;
    }
    default: break;  // FSB route: ignored
    }
}

void Hpet::write(uint32_t offset, uint64_t value, unsigned size, uint64_t now_ns) {
    if ((size != 4 && size != 8) || offset % size || offset >= 0x400) return;
    std::lock_guard order(notify_mu_);
    std::vector<Effect> fx;
    {
        std::lock_guard lock(mu_);
        const unsigned shift = size == 8 ? 0 : (offset & 4) * 8;
        const uint64_t mask = size == 8 ? ~0ull : 0xffffffffull << shift;
        write64(offset & ~7u, (value << shift) & mask, mask, now_ns, fx);
    }
    run(fx);
}

void Hpet::run(const std::vector<Effect>& fx) {
    if (!on_irq) return;
    for (const Effect& e : fx) on_irq(e.line, e.level);
}

std::vector<uint8_t> Hpet::save() const {
    std::lock_guard lock(mu_);
    BlobWriter w(kMagic, kBlobVersion);
    w.u64(config_);
    w.u64(isr_);
    w.u64(counter_base_);
    w.u64(counter_base_ns_);
    for (const Timer& t : timers_) {
        w.u64(t.config);
        w.u64(t.comparator);
        w.u64(t.period);
        w.u64(t.fire_ns);
        w.boolean(t.asserted);
    }
    return w.take();
}

bool Hpet::restore(std::span<const uint8_t> blob) {
    BlobReader r(blob, kMagic, kBlobVersion);
    const uint64_t config = r.u64();
    const uint64_t isr = r.u64();
    const uint64_t base = r.u64();
    const uint64_t base_ns = r.u64();
    std::array<Timer, kTimers> timers{};
    r.check((config & ~(kEnable | kLegacy)) == 0 && (isr >> kTimers) == 0);
    for (unsigned n = 0; n < kTimers; ++n) {
        Timer& t = timers[n];
        t.config = r.u64();
        t.comparator = r.u64();
        t.period = r.u64();
        t.fire_ns = r.u64();
        t.asserted = r.boolean();
        const unsigned route = static_cast<unsigned>((t.config & kTnRouteMask) >> kTnRouteShift);
        r.check((t.config & ~kTnWritable) == 0 && (n == 0 || !(t.config & kTnPeriodic)) && ((kRouteCap >> route) & 1) &&
                (!t.asserted || ((t.config & kTnLevel) && (isr >> n & 1))) &&
                (!(t.config & kTnLevel) || !(isr >> n & 1) || t.asserted || !(t.config & kTnIntEnable)) &&
                (!(t.config & kTn32Bit) || (t.comparator >> 32) == 0));
    }
    if (!r.done()) return false;
    std::lock_guard lock(mu_);
    config_ = config;
    isr_ = isr;
    counter_base_ = base;
    counter_base_ns_ = base_ns;
    timers_ = timers;
    return true;
}

}  // namespace popek::hv::emu::platform
