// Local APIC (xAPIC). Register semantics from the Intel SDM vol. 3, ch. 11.
#include "hv/emu/platform/lapic.hpp"

#include <cstring>
#include <utility>

#include "hv/emu/platform/blob.hpp"
#include "hv/emu/platform/muldiv.hpp"

namespace popek::hv::emu::platform {

namespace {

constexpr uint32_t kMagic = 0x43504c41;  // "ALPC"
constexpr uint32_t kBlobVersion = 1;
constexpr uint64_t kNsPerSec = 1'000'000'000;

constexpr uint32_t kVersionValue = 0x00050014;  // version 0x14, 6 LVT entries
constexpr uint32_t kLvtMasked = 1u << 16;
constexpr uint32_t kSvrEnable = 1u << 8;

constexpr uint64_t kBaseBsp = 1u << 8;
constexpr uint64_t kBaseX2apic = 1u << 10;
constexpr uint64_t kBaseEnable = 1u << 11;
// Writable bits of IA32_APIC_BASE: the page address (up to 52 physical
// address bits), BSP (kept: read-only to the guest) and the global enable.
constexpr uint64_t kBaseWritable = 0x000ffffffffff000ull | kBaseBsp | kBaseEnable;

// ESR bits (SDM 11.5.3).
constexpr uint32_t kEsrSendIllegalVector = 1u << 5;
constexpr uint32_t kEsrReceiveIllegalVector = 1u << 6;
constexpr uint32_t kEsrIllegalRegister = 1u << 7;

constexpr uint32_t kTimerOneShot = 0;
constexpr uint32_t kTimerPeriodic = 1;
constexpr uint32_t kTimerTscDeadline = 2;

// Bits the guest may set in each LVT entry.
constexpr uint32_t kLvtTimerBits = 0x000700ff;    // vector, mask, mode
constexpr uint32_t kLvtDmBits = 0x000107ff;       // vector, delivery mode, mask
constexpr uint32_t kLvtLintBits = 0x0001a7ff;     // + polarity, trigger mode
constexpr uint32_t kLvtErrorBits = 0x000100ff;    // vector, mask
constexpr uint32_t kIcrLowBits = 0x000ccfff;      // vector, DM, dest mode, level, trigger, shorthand

constexpr uint32_t kLvts[] = {Lapic::kLvtTimer, Lapic::kLvtThermal, Lapic::kLvtPerf,
                              Lapic::kLvtLint0, Lapic::kLvtLint1, Lapic::kLvtError};

uint32_t lvt_bits(uint32_t offset) {
    switch (offset) {
    case Lapic::kLvtTimer: return kLvtTimerBits;
    case Lapic::kLvtLint0:
    case Lapic::kLvtLint1: return kLvtLintBits;
    case Lapic::kLvtError: return kLvtErrorBits;
    default: return kLvtDmBits;
    }
}

}  // namespace

struct Lapic::Effects {
    std::vector<uint8_t> eois;
    std::vector<InterruptMessage> ipis;
    bool wakeup = false;
};

Lapic::Lapic(uint32_t apic_id, bool bsp, uint64_t tsc_hz, uint64_t bus_hz)
    : id_(apic_id & 0xff),
      bsp_(bsp),
      tsc_hz_(tsc_hz ? tsc_hz : 1),
      bus_hz_(bus_hz ? bus_hz : 1),
      apic_base_(kDefaultBase | kBaseEnable | (bsp ? kBaseBsp : 0)) {
    set_reg(kId, id_ << 24);
    reset_registers();
}

// ---- register page helpers (callers hold mu_) ----

uint32_t Lapic::reg(uint32_t offset) const {
    uint32_t v;
    std::memcpy(&v, regs_.data() + offset, 4);
    return v;
}

void Lapic::set_reg(uint32_t offset, uint32_t value) { std::memcpy(regs_.data() + offset, &value, 4); }

bool Lapic::bit(uint32_t base, unsigned vector) const {
    return (reg(base + 0x10 * (vector / 32)) >> (vector % 32)) & 1;
}

void Lapic::set_bit(uint32_t base, unsigned vector, bool on) {
    const uint32_t off = base + 0x10 * (vector / 32);
    const uint32_t m = 1u << (vector % 32);
    set_reg(off, on ? (reg(off) | m) : (reg(off) & ~m));
}

int Lapic::highest(uint32_t base) const {
    for (int i = 7; i >= 0; --i) {
        const uint32_t v = reg(base + 0x10 * static_cast<uint32_t>(i));
        if (v) return i * 32 + 31 - __builtin_clz(v);
    }
    return -1;
}

uint32_t Lapic::ppr() const {
    const uint32_t tpr = reg(kTpr) & 0xff;
    const int isrv = highest(kIsr);
    const uint32_t isr_class = isrv < 0 ? 0 : static_cast<uint32_t>(isrv) & 0xf0;
    return (tpr & 0xf0) >= isr_class ? tpr : isr_class;
}

bool Lapic::sw_enabled() const { return (reg(kSvr) & kSvrEnable) != 0; }

bool Lapic::enabled() const {
    std::lock_guard lock(mu_);
    return (apic_base_ & kBaseEnable) != 0;
}

void Lapic::reset_registers() {
    // INIT and a global disable keep the APIC id (SDM 11.4.7.3).
    const uint32_t id = reg(kId);
    regs_.fill(0);
    set_reg(kId, id);
    set_reg(kVersion, kVersionValue);
    set_reg(kDfr, 0xffffffff);
    set_reg(kSvr, 0xff);
    for (uint32_t off : kLvts) set_reg(off, kLvtMasked);
    // The BSP comes up in virtual-wire mode with LINT0 as ExtINT, as the
    // firmware leaves it (KVM does the same), so the 8259's INTR reaches it.
    if (bsp_) set_reg(kLvtLint0, kExtInt << 8);
    esr_pending_ = 0;
    timer_ = Timer{};
}

// ---- events ----

void Lapic::run(Effects& fx) {
    for (uint8_t v : fx.eois)
        if (on_eoi) on_eoi(v);
    for (const auto& m : fx.ipis)
        if (on_ipi) on_ipi(m);
    if (fx.wakeup && on_wakeup) on_wakeup();
}

void Lapic::accept_vector(uint8_t vector, bool level, Effects& fx) {
    if (vector < 16) {
        raise_error(kEsrReceiveIllegalVector, fx);
        return;
    }
    set_bit(kIrr, vector, true);
    set_bit(kTmr, vector, level);
    fx.wakeup = true;
}

void Lapic::raise_error(uint32_t bits, Effects& fx) {
    esr_pending_ |= bits;
    const uint32_t lvt = reg(kLvtError);
    // An error LVT with an illegal vector would raise another error: drop it.
    if (!(lvt & kLvtMasked) && (lvt & 0xff) >= 16) accept_vector(static_cast<uint8_t>(lvt & 0xff), false, fx);
}

void Lapic::fire_lvt(uint32_t lvt_offset, Effects& fx) {
    const uint32_t lvt = reg(lvt_offset);
    if (lvt & kLvtMasked) return;
    const auto vector = static_cast<uint8_t>(lvt & 0xff);
    const uint32_t dm = (lvt_offset == kLvtTimer || lvt_offset == kLvtError) ? uint32_t{kFixed} : (lvt >> 8) & 7;
    switch (dm) {
    case kFixed: accept_vector(vector, lvt_offset != kLvtTimer && (lvt & (1u << 15)), fx); break;
    case kNmi: nmi_pending_ = true; fx.wakeup = true; break;
    case kInit: init_pending_ = true; fx.wakeup = true; break;
    case kExtInt: extint_pending_ = true; fx.wakeup = true; break;
    default: break;  // SMI and reserved modes: nothing to do
    }
}

bool Lapic::accepts(const InterruptMessage& msg) const {
    std::lock_guard lock(mu_);
    if (!(apic_base_ & kBaseEnable)) return false;
    switch (msg.shorthand) {
    case kSelf: return msg.source_apic == reg(kId) >> 24;
    case kAllIncludingSelf: return true;
    case kAllExcludingSelf: return msg.source_apic != reg(kId) >> 24;
    default: break;
    }
    const uint32_t dest = msg.dest & 0xff;
    if (dest == 0xff) return true;  // broadcast, physical or logical
    if (!msg.logical) return dest == reg(kId) >> 24;
    const uint32_t ldr = reg(kLdr) >> 24;
    if ((reg(kDfr) >> 28) == 0xf) return (ldr & dest) != 0;  // flat model
    // Cluster model: high nibble is the cluster, low nibble a member mask.
    const uint32_t cluster = dest >> 4;
    return (cluster == 0xf || cluster == (ldr >> 4)) && (ldr & dest & 0xf) != 0;
}

void Lapic::deliver(const InterruptMessage& msg) {
    Effects fx;
    {
        std::lock_guard lock(mu_);
        if (!(apic_base_ & kBaseEnable)) return;
        switch (msg.delivery_mode) {
        case kFixed:
        case kLowestPriority:
            // A software-disabled APIC drops fixed interrupts (KVM does too).
            if (sw_enabled()) accept_vector(msg.vector, msg.level, fx);
            break;
        case kNmi: nmi_pending_ = true; fx.wakeup = true; break;
        case kInit:
            if (msg.level && !msg.assert) break;  // INIT level de-assert: no-op
            init_pending_ = true;
            fx.wakeup = true;
            break;
        case kStartup: sipi_vector_ = msg.vector; fx.wakeup = true; break;
        case kExtInt: extint_pending_ = true; fx.wakeup = true; break;
        default: break;  // SMI: no SMM
        }
    }
    run(fx);
}

void Lapic::lint_locked(unsigned pin, bool level, Effects& fx) {
    const bool rising = level && !lint_level_[pin];
    lint_level_[pin] = level;
    if (!(apic_base_ & kBaseEnable)) {
        // Globally disabled: LINT0 is INTR, LINT1 is NMI.
        if (pin == 1 && rising) nmi_pending_ = true;
        if (rising) fx.wakeup = true;
        return;
    }
    const uint32_t off = pin == 0 ? kLvtLint0 : kLvtLint1;
    const uint32_t lvt = reg(off);
    if (lvt & kLvtMasked) return;
    const uint32_t dm = (lvt >> 8) & 7;
    if (dm == kExtInt) {
        if (rising) fx.wakeup = true;  // level-sensitive: see extint_pending()
        return;
    }
    if (rising) fire_lvt(off, fx);
}

void Lapic::set_lint(unsigned pin, bool level) {
    if (pin > 1) return;
    Effects fx;
    {
        std::lock_guard lock(mu_);
        lint_locked(pin, level, fx);
    }
    run(fx);
}

int Lapic::pending_locked() const {
    if (!(apic_base_ & kBaseEnable) || !sw_enabled()) return -1;
    const int v = highest(kIrr);
    if (v < 0 || (static_cast<uint32_t>(v) & 0xf0) <= (ppr() & 0xf0)) return -1;
    return v;
}

int Lapic::pending_vector() const {
    std::lock_guard lock(mu_);
    return pending_locked();
}

uint8_t Lapic::acknowledge() {
    std::lock_guard lock(mu_);
    const int v = pending_locked();
    // Nothing deliverable any more (TPR raised, or the request went away):
    // the spurious vector, as hardware gives it.
    if (v < 0) return static_cast<uint8_t>(reg(kSvr) & 0xff);
    set_bit(kIrr, static_cast<unsigned>(v), false);
    set_bit(kIsr, static_cast<unsigned>(v), true);
    return static_cast<uint8_t>(v);
}

bool Lapic::extint_locked() const {
    if (extint_pending_) return true;
    if (!lint_level_[0]) return false;
    if (!(apic_base_ & kBaseEnable)) return true;
    const uint32_t lvt = reg(kLvtLint0);
    return !(lvt & kLvtMasked) && ((lvt >> 8) & 7) == kExtInt;
}

bool Lapic::extint_pending() const {
    std::lock_guard lock(mu_);
    return extint_locked();
}

bool Lapic::has_event() const {
    std::lock_guard lock(mu_);
    return pending_locked() >= 0 || extint_locked() || nmi_pending_ || init_pending_ || sipi_vector_ >= 0;
}

bool Lapic::take_nmi() {
    std::lock_guard lock(mu_);
    return std::exchange(nmi_pending_, false);
}

bool Lapic::take_extint() {
    std::lock_guard lock(mu_);
    if (std::exchange(extint_pending_, false)) return true;
    return extint_locked();
}

bool Lapic::take_init() {
    std::lock_guard lock(mu_);
    return std::exchange(init_pending_, false);
}

int Lapic::take_sipi() {
    std::lock_guard lock(mu_);
    return std::exchange(sipi_vector_, -1);
}

void Lapic::init_reset() {
    std::lock_guard lock(mu_);
    // A SIPI that arrived before the vCPU acted on INIT stays pending.
    reset_registers();
    nmi_pending_ = false;
    extint_pending_ = false;
}

uint32_t Lapic::id() const {
    std::lock_guard lock(mu_);
    return reg(kId) >> 24;
}

bool Lapic::is_bsp() const { return bsp_; }

// ---- IA32_APIC_BASE ----

uint64_t Lapic::apic_base() const {
    std::lock_guard lock(mu_);
    return apic_base_;
}

bool Lapic::set_apic_base(uint64_t value) {
    if (value & ~kBaseWritable) return false;  // reserved bits or x2APIC enable
    std::lock_guard lock(mu_);
    const bool was = apic_base_ & kBaseEnable;
    apic_base_ = (value & ~kBaseBsp) | (bsp_ ? kBaseBsp : 0);
    if (was && !(value & kBaseEnable)) {
        // Global disable: the APIC returns to its power-up state.
        reset_registers();
        nmi_pending_ = extint_pending_ = init_pending_ = false;
        sipi_vector_ = -1;
    }
    return true;
}

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
    uint64_t period = counts_to_ns(reg(kTimerInitial));
    timer_.period_ns = period ? period : 1;
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
        std::lock_guard lock(mu_);
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
        std::lock_guard lock(mu_);
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

// ---- register access ----

uint32_t Lapic::read(uint32_t offset, uint64_t now_ns) {
    std::lock_guard lock(mu_);
    if (!(apic_base_ & kBaseEnable) || offset >= kPageSize) return 0;
    const uint32_t off = offset & ~0xfu;
    const uint32_t shift = (offset & 0xf) * 8;
    if (shift >= 32) return 0;
    uint32_t v;
    switch (off) {
    case kPpr: v = ppr(); break;
    case kTimerCurrent: v = current_count(now_ns); break;
    case kEoi: v = 0; break;  // write-only
    case kIcrLow: v = reg(kIcrLow) & ~(1u << 12); break;  // delivery is immediate: idle
    default: v = reg(off); break;
    }
    return v >> shift;
}

void Lapic::write(uint32_t offset, uint32_t value, uint64_t now_ns) {
    Effects fx;
    {
        std::lock_guard lock(mu_);
        if ((apic_base_ & kBaseEnable) && offset < kPageSize && (offset & 0xf) == 0)
            write_locked(offset, value, now_ns, fx);
    }
    run(fx);
}

void Lapic::write_locked(uint32_t offset, uint32_t value, uint64_t now_ns, Effects& fx) {
    switch (offset) {
    case kTpr: set_reg(kTpr, value & 0xff); break;
    case kEoi: eoi(fx); break;
    case kLdr: set_reg(kLdr, value & 0xff000000); break;
    case kDfr: set_reg(kDfr, value | 0x0fffffff); break;
    case kSvr: {
        // Bit 12 (EOI-broadcast suppression) is not offered (version bit 24 clear).
        set_reg(kSvr, value & 0x3ff);
        if (!(value & kSvrEnable))
            for (uint32_t off : kLvts) set_reg(off, reg(off) | kLvtMasked);
        break;
    }
    case kEsr:
        // A write latches the errors seen since the previous write.
        set_reg(kEsr, esr_pending_);
        esr_pending_ = 0;
        break;
    case kIcrLow:
        set_reg(kIcrLow, value & kIcrLowBits);
        send_ipi(fx);
        break;
    case kIcrHigh: set_reg(kIcrHigh, value & 0xff000000); break;
    case kLvtTimer: {
        const uint32_t old_mode = timer_mode();
        uint32_t v = value & kLvtTimerBits;
        if (!sw_enabled()) v |= kLvtMasked;
        set_reg(kLvtTimer, v);
        const uint32_t mode = timer_mode();
        if ((old_mode == kTimerTscDeadline) != (mode == kTimerTscDeadline)) {
            // Switching to or from TSC-deadline mode disarms the timer.
            set_reg(kTimerInitial, 0);
            timer_ = Timer{};
        }
        break;
    }
    case kLvtThermal:
    case kLvtPerf:
    case kLvtLint0:
    case kLvtLint1:
    case kLvtError: {
        // Remote IRR (LINT, bit 14) and delivery status are read-only.
        uint32_t v = (value & lvt_bits(offset)) | (reg(offset) & (1u << 14));
        if (!sw_enabled()) v |= kLvtMasked;
        set_reg(offset, v);
        if (offset == kLvtLint0 && lint_level_[0] && !(v & kLvtMasked) && ((v >> 8) & 7) == kExtInt)
            fx.wakeup = true;
        break;
    }
    case kTimerInitial:
        if (timer_mode() == kTimerTscDeadline) break;  // ignored in that mode
        set_reg(kTimerInitial, value);
        start_timer(now_ns, value);
        break;
    case kTimerDivide: {
        const uint32_t remaining = current_count(now_ns);
        const bool armed = timer_.expire_ns != UINT64_MAX;
        set_reg(kTimerDivide, value & 0xb);
        // Keep the count where it is and go on at the new rate.
        if (armed && timer_mode() != kTimerTscDeadline) start_timer(now_ns, remaining ? remaining : 1);
        break;
    }
    case kId:
        // Writable in xAPIC mode (as on hardware and KVM); the router uses
        // the register, so an OS that renumbers APICs keeps working.
        set_reg(kId, value & 0xff000000);
        break;
    case kVersion:
    case kApr:
    case kPpr:
    case kRrd:
    case kTimerCurrent:
    case kLvtCmci:
        break;  // read-only or absent
    default:
        if ((offset >= kIsr && offset < kIrr + 0x80)) break;  // ISR/TMR/IRR: read-only
        raise_error(kEsrIllegalRegister, fx);
        break;
    }
}

void Lapic::eoi(Effects& fx) {
    const int v = highest(kIsr);
    if (v < 0) return;
    const auto vec = static_cast<unsigned>(v);
    set_bit(kIsr, vec, false);
    if (bit(kTmr, vec)) fx.eois.push_back(static_cast<uint8_t>(vec));
    // A lower-priority vector may now be deliverable.
    if (highest(kIrr) >= 0) fx.wakeup = true;
}

void Lapic::send_ipi(Effects& fx) {
    const uint32_t lo = reg(kIcrLow);
    InterruptMessage m;
    m.vector = static_cast<uint8_t>(lo & 0xff);
    m.delivery_mode = static_cast<uint8_t>((lo >> 8) & 7);
    m.logical = (lo >> 11) & 1;
    m.assert = (lo >> 14) & 1;
    m.level = (lo >> 15) & 1;
    m.shorthand = static_cast<uint8_t>((lo >> 18) & 3);
    m.dest = reg(kIcrHigh) >> 24;
    m.source_apic = reg(kId) >> 24;
    if (!m.level) m.assert = true;  // edge-triggered IPIs always assert
    if ((m.delivery_mode == kFixed || m.delivery_mode == kLowestPriority) && m.vector < 16) {
        raise_error(kEsrSendIllegalVector, fx);
        return;
    }
    fx.ipis.push_back(m);
}

// ---- save/restore ----

std::vector<uint8_t> Lapic::save() const {
    std::lock_guard lock(mu_);
    BlobWriter w(kMagic, kBlobVersion);
    w.bytes(regs_);
    w.u64(apic_base_);
    w.u32(esr_pending_);
    w.u64(timer_.expire_ns);
    w.u64(timer_.period_ns);
    w.u64(timer_.deadline_tsc);
    w.u64(timer_.deadline_ns);
    w.boolean(lint_level_[0]);
    w.boolean(lint_level_[1]);
    w.boolean(nmi_pending_);
    w.boolean(extint_pending_);
    w.boolean(init_pending_);
    w.u16(static_cast<uint16_t>(sipi_vector_ < 0 ? 0xffff : sipi_vector_));
    return w.take();
}

bool Lapic::restore(std::span<const uint8_t> blob) {
    BlobReader r(blob, kMagic, kBlobVersion);
    std::array<uint8_t, kPageSize> regs{};
    r.bytes(regs);
    const uint64_t base = r.u64();
    const uint32_t esr_pending = r.u32();
    Timer t;
    t.expire_ns = r.u64();
    t.period_ns = r.u64();
    t.deadline_tsc = r.u64();
    t.deadline_ns = r.u64();
    const bool lint0 = r.boolean(), lint1 = r.boolean();
    const bool nmi = r.boolean(), extint = r.boolean(), init = r.boolean();
    const uint16_t sipi = r.u16();
    if (!r.done()) return false;

    auto get = [&](uint32_t off) {
        uint32_t v;
        std::memcpy(&v, regs.data() + off, 4);
        return v;
    };
    bool ok = (base & ~kBaseWritable) == 0 && ((base & kBaseBsp) != 0) == bsp_ &&
              (get(kId) & 0x00ffffffu) == 0 && get(kVersion) == kVersionValue && (get(kTpr) & ~0xffu) == 0 &&
              (get(kLdr) & 0x00ffffffu) == 0 && (get(kDfr) | 0xf0000000u) == 0xffffffffu && (get(kSvr) & ~0x3ffu) == 0 &&
              (get(kIcrLow) & ~kIcrLowBits) == 0 && (get(kIcrHigh) & 0x00ffffffu) == 0 &&
              (get(kTimerDivide) & ~0xbu) == 0 && (esr_pending & ~0xffu) == 0 && (get(kEsr) & ~0xffu) == 0 &&
              (sipi <= 0xff || sipi == 0xffff) && (t.period_ns != 0 || t.expire_ns == UINT64_MAX ||
                                                   ((get(kLvtTimer) >> 17) & 3) != kTimerPeriodic);
    for (uint32_t off : kLvts) ok = ok && (get(off) & ~(lvt_bits(off) | (1u << 14))) == 0;
    if (!ok) return false;

    std::lock_guard lock(mu_);
    regs_ = regs;
    apic_base_ = base;
    esr_pending_ = esr_pending;
    timer_ = t;
    lint_level_[0] = lint0;
    lint_level_[1] = lint1;
    nmi_pending_ = nmi;
    extint_pending_ = extint;
    init_pending_ = init;
    sipi_vector_ = sipi == 0xffff ? -1 : sipi;
    return true;
}

}  // namespace popek::hv::emu::platform
