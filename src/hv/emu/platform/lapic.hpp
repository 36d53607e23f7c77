// Local APIC in xAPIC mode (Intel SDM vol. 3, chapter 11): the register page
// at IA32_APIC_BASE, priorities (TPR/PPR), IRR/ISR/TMR, EOI, the LVTs, the
// ICR, logical destinations (flat and cluster), ESR and the timer in its
// one-shot, periodic and TSC-deadline modes. No x2APIC.
//
// Pure model: time comes in as arguments (now_ns: the guest's monotonic
// clock; now_tsc: the guest TSC). Thread-safe: every method takes the
// internal mutex. Callbacks run after the mutex is released, on the calling
// thread, so they may call back into this Lapic (a self-IPI does).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <vector>

#include "hv/emu/platform/interrupt.hpp"

namespace popek::hv::emu::platform {

class Lapic {
public:
    static constexpr uint64_t kDefaultBase = 0xfee00000;
    static constexpr uint32_t kPageSize = 0x400;  // register page as KVM saves it
    // Register offsets.
    enum Reg : uint32_t {
        kId = 0x20,
        kVersion = 0x30,
        kTpr = 0x80,
        kApr = 0x90,
        kPpr = 0xa0,
        kEoi = 0xb0,
        kRrd = 0xc0,
        kLdr = 0xd0,
        kDfr = 0xe0,
        kSvr = 0xf0,
        kIsr = 0x100,
        kTmr = 0x180,
        kIrr = 0x200,
        kEsr = 0x280,
        kLvtCmci = 0x2f0,
        kIcrLow = 0x300,
        kIcrHigh = 0x310,
        kLvtTimer = 0x320,
        kLvtThermal = 0x330,
        kLvtPerf = 0x340,
        kLvtLint0 = 0x350,
        kLvtLint1 = 0x360,
        kLvtError = 0x370,
        kTimerInitial = 0x380,
        kTimerCurrent = 0x390,
        kTimerDivide = 0x3e0,
    };

    Lapic(uint32_t apic_id, bool bsp, uint64_t tsc_hz, uint64_t bus_hz);

    // IA32_APIC_BASE. set_apic_base returns false for values the guest may
    // not write (reserved bits, x2APIC enable): the caller raises #GP.
    // Clearing the global enable bit resets the APIC's registers.
    [[nodiscard]] uint64_t apic_base() const;
    [[nodiscard]] bool set_apic_base(uint64_t value);
    // Globally enabled (IA32_APIC_BASE bit 11): only then is the register
    // page decoded at apic_base() & ~0xfff.
    [[nodiscard]] bool enabled() const;

    // 32-bit accesses to the register page (offset 0..0xfff; the caller
    // splits or rejects other sizes). Reads of write-only or reserved
    // registers return 0; writes to read-only ones are ignored (ESR "illegal
    // register address" is set for reserved offsets).
    uint32_t read(uint32_t offset, uint64_t now_ns);
    void write(uint32_t offset, uint32_t value, uint64_t now_ns);

    // Destination match for a message (physical id, logical flat/cluster,
    // broadcast 0xff, shorthands relative to msg.source_apic).
    [[nodiscard]] bool accepts(const InterruptMessage& msg) const;
    // Takes a message this APIC accepted: fixed/lowest-priority set IRR
    // (and TMR when level-triggered), NMI/INIT/SIPI/ExtINT become pending.
    void deliver(const InterruptMessage& msg);
    // LINT0/LINT1 input lines, routed per their LVT entry (ExtINT, NMI,
    // fixed) unless masked. With the APIC globally disabled LINT0 is the
    // CPU's INTR pin and LINT1 its NMI pin (as on hardware).
    void set_lint(unsigned pin, bool level);

    // Highest IRR vector whose priority class is above PPR's, else -1
    // (also -1 while the APIC is software- or globally disabled).
    [[nodiscard]] int pending_vector() const;
    // INTA: moves pending_vector() from IRR to ISR and returns it; with
    // nothing deliverable, returns the spurious vector (SVR[7:0]).
    uint8_t acknowledge();
    // Anything that should wake a halted vCPU: a deliverable vector, ExtINT,
    // NMI, INIT or SIPI pending (the caller still checks RFLAGS.IF).
    [[nodiscard]] bool has_event() const;
    // Pending ExtINT (LINT0 ExtINT line high, or an ExtINT message) without
    // consuming it.
    [[nodiscard]] bool extint_pending() const;

    // Pending-event takers (each returns and clears). take_extint() returns
    // true once per ExtINT message, and while the LINT0 ExtINT line is high
    // (the caller then reads the vector from PicPair::acknowledge()).
    bool take_nmi();
    bool take_extint();
    bool take_init();
    int take_sipi();  // vector or -1

    // INIT received by the vCPU: resets the APIC's registers except the
    // APIC id and IA32_APIC_BASE (SDM 11.4.7.3). The backend calls it when
    // it acts on take_init().
    void init_reset();

    // Timer. TSC-deadline mode is LVT timer mode 2; writes of the MSR in
    // other modes are ignored and reads return 0. Writing 0 disarms.
    [[nodiscard]] uint64_t tsc_deadline() const;
    void set_tsc_deadline(uint64_t tsc_value, uint64_t now_tsc, uint64_t now_ns);
    // Fires an expired timer (IRR + on_wakeup).
    void tick(uint64_t now_ns, uint64_t now_tsc);
    // Guest-clock time of the next expiry, UINT64_MAX when none is armed.
    [[nodiscard]] uint64_t next_timer_ns() const;

    [[nodiscard]] uint32_t id() const;
    [[nodiscard]] bool is_bsp() const;

    // The 1 KiB register page as KVM lays it out (kvm_lapic_state), then
    // IA32_APIC_BASE, timer and pending-event state. restore() validates
    // everything and leaves the APIC unchanged on false.
    [[nodiscard]] std::vector<uint8_t> save() const;
    [[nodiscard]] bool restore(std::span<const uint8_t> blob);

    // EOI of a level-triggered vector (TMR set): the IOAPIC clears Remote-IRR.
    std::function<void(uint8_t vector)> on_eoi;
    // An ICR write: the router delivers the message to its targets.
    std::function<void(const InterruptMessage&)> on_ipi;
    // A new event became pending: wake the halted vCPU.
    std::function<void()> on_wakeup;

private:
    struct Effects;  // callbacks collected under the lock, run after it
    struct Timer {
        uint64_t expire_ns = UINT64_MAX;  // one-shot/periodic: next expiry
        uint64_t period_ns = 0;           // periodic: reload period
        uint64_t deadline_tsc = 0;        // TSC-deadline MSR
        uint64_t deadline_ns = UINT64_MAX;
    };

    uint32_t reg(uint32_t offset) const;
    void set_reg(uint32_t offset, uint32_t value);
    bool bit(uint32_t base, unsigned vector) const;
    void set_bit(uint32_t base, unsigned vector, bool on);
    int highest(uint32_t base) const;
    uint32_t ppr() const;
    bool sw_enabled() const;
    int pending_locked() const;
    bool extint_locked() const;
    void reset_registers();
    void accept_vector(uint8_t vector, bool level, Effects& fx);
    void raise_error(uint32_t bits, Effects& fx);
    void fire_lvt(uint32_t lvt_offset, Effects& fx);
    void write_locked(uint32_t offset, uint32_t value, uint64_t now_ns, Effects& fx);
    void send_ipi(Effects& fx);
    void eoi(Effects& fx);
    uint32_t timer_mode() const;
    uint64_t divisor() const;
    uint64_t counts_to_ns(uint64_t counts) const;
    uint32_t current_count(uint64_t now_ns) const;
    void start_timer(uint64_t now_ns, uint64_t counts);
    void tick_locked(uint64_t now_ns, uint64_t now_tsc, Effects& fx);
    void lint_locked(unsigned pin, bool level, Effects& fx);
    void run(Effects& fx);

    mutable std::mutex mu_;
    const uint32_t id_;
    const bool bsp_;
    const uint64_t tsc_hz_;
    const uint64_t bus_hz_;
    uint64_t apic_base_;
    std::array<uint8_t, kPageSize> regs_{};
    uint32_t esr_pending_ = 0;  // errors since the last ESR write
    Timer timer_;
    bool lint_level_[2] = {false, false};
    bool nmi_pending_ = false;
    bool extint_pending_ = false;
    bool init_pending_ = false;
    int sipi_vector_ = -1;
};

}  // namespace popek::hv::emu::platform
