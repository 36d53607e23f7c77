// Local APIC timer: one-shot, periodic and TSC-deadline (SDM 11.5.4).
#include "hv/emu/platform/lapic.hpp"

#include <cstring>
#include <utility>

#include "hv/emu/platform/blob.hpp"
#include "hv/emu/platform/lapic_internal.hpp"
#include "hv/emu/platform/muldiv.hpp"

namespace popek::hv::emu::platform {

using namespace lapic_detail;

// ---- timer ----

uint32_t Lapic::timer_mode() const { return (reg(kLvtTimer) >> 17) & 3; }

uint64_t Lapic::divisor() const {
    const uint32_t d = reg(kTimerDivide);
    const uint32_t idx = ((d >> 1) & 4) | (d & 3);
    return idx == 7 ? 1 : 2ull << idx;
}

uint64_t Lapic::counts_to_ns(uint64_t counts) const { return muldiv(counts, divisor() * kNsPerSec, bus_hz_); }

void Lapic::start_timer(uint64_t now_ns, uint64_t counts) {
    if (counts == 0) {
        timer_.expire_ns = UINT64_MAX;
        timer_.period_ns = 0;
        return;
    }
    const uint64_t period = counts_to_ns(reg(kTimerInitial));
    timer_.period_ns = period < kMinPeriodNs ? kMinPeriodNs : period;
    const uint64_t first = counts_to_ns(counts);
    timer_.expire_ns = sat_add(now_ns, first ? first : 1);
}

uint32_t Lapic::current_count(uint64_t now_ns) const {
    if (timer_mode() == kTimerTscDeadline || timer_.expire_ns == UINT64_MAX) return 0;
    uint64_t remaining;
    if (now_ns < timer_.expire_ns) {
        remaining = timer_.expire_ns - now_ns;
    } else if (timer_mode() == kTimerPeriodic && timer_.period_ns) {
        // Expired periods the caller has not tick()ed yet.
        remaining = timer_.period_ns - (now_ns - timer_.expire_ns) % timer_.period_ns;
    } else {
        return 0;
    }
    const uint64_t counts = muldiv_up(remaining, bus_hz_, divisor() * kNsPerSec);
    const uint32_t initial = reg(kTimerInitial);
    return counts > initial ? initial : static_cast<uint32_t>(counts);
}

void Lapic::tick_locked(uint64_t now_ns, uint64_t now_tsc, Effects& fx) {
    if (!(apic_base_ & kBaseEnable)) return;
    if (timer_mode() == kTimerTscDeadline) {
        // Either clock reaching the deadline fires it, so a caller whose TSC
        // and ns arguments round differently never sees next_timer_ns() in
        // the past after a tick().
        if (timer_.deadline_tsc != 0 && (now_tsc >= timer_.deadline_tsc || now_ns >= timer_.deadline_ns)) {
            timer_.deadline_tsc = 0;
            timer_.deadline_ns = UINT64_MAX;
            fire_lvt(kLvtTimer, fx);
        }
        return;
    }
    if (timer_.expire_ns == UINT64_MAX || now_ns < timer_.expire_ns) return;
    fire_lvt(kLvtTimer, fx);
    if (timer_mode() == kTimerPeriodic && timer_.period_ns) {
        // Periods missed while nobody ticked are coalesced into one interrupt.
        const uint64_t missed = (now_ns - timer_.expire_ns) / timer_.period_ns + 1;
        timer_.expire_ns = sat_add(timer_.expire_ns, missed * timer_.period_ns);
    } else {
        timer_.expire_ns = UINT64_MAX;
    }
}

void Lapic::tick(uint64_t now_ns, uint64_t now_tsc) {
    Effects fx;
    {
        Guard lock(*this);
        tick_locked(now_ns, now_tsc, fx);
    }
    run(fx);
}

uint64_t Lapic::next_timer_ns() const {
    std::lock_guard lock(mu_);
    if (!(apic_base_ & kBaseEnable)) return UINT64_MAX;
    if (timer_mode() == kTimerTscDeadline) return timer_.deadline_tsc ? timer_.deadline_ns : UINT64_MAX;
    return timer_.expire_ns;
}

uint64_t Lapic::tsc_deadline() const {
    std::lock_guard lock(mu_);
    return timer_mode() == kTimerTscDeadline ? timer_.deadline_tsc : 0;
}

void Lapic::set_tsc_deadline(uint64_t tsc_value, uint64_t now_tsc, uint64_t now_ns) {
    Effects fx;
    {
        Guard lock(*this);
        if (!(apic_base_ & kBaseEnable) || timer_mode() != kTimerTscDeadline) return;
        timer_.deadline_tsc = tsc_value;
        timer_.deadline_ns = UINT64_MAX;
        if (tsc_value == 0) {
            // Writing 0 disarms.
        } else if (tsc_value <= now_tsc) {
            tick_locked(now_ns, now_tsc, fx);  // already due: fires now
        } else {
            timer_.deadline_ns = sat_add(now_ns, muldiv_up(tsc_value - now_tsc, kNsPerSec, tsc_hz_));
        }
    }
    run(fx);
}

}  // namespace popek::hv::emu::platform
