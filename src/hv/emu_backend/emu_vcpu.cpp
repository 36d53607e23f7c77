// The emu backend's vCPU: runs the engine in budgets, answers the platform's
// MMIO and ports itself (local APIC, IOAPIC, PIC, PIT), signals ioeventfds,
// batches POST-code writes, ticks timers, waits in HLT like KVM with an
// in-kernel irqchip, and hands everything else to the VMM as a VcpuExit.
#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>

#include "hv/emu_backend/emu_backend.hpp"

namespace popek::hv::emu {

using base::Error;
using base::Result;

namespace {

// Instructions per engine run between looks at timers and requests: long
// enough that the loop costs nothing next to the guest's work, short enough
// (about a millisecond) for timer interrupts to arrive on time.
constexpr uint64_t kBudget = 100'000;

VcpuExit to_vcpu_exit(const RunExit& e) {
    VcpuExit x;
    x.kind = e.kind;
    x.addr = e.addr;
    x.size = e.size;
    x.count = 1;
    x.is_write = e.is_write;
    x.data = e.data;
    x.detail = e.detail;
    return x;
}

uint64_t load(const uint8_t* data, unsigned size) {
    uint64_t v = 0;
    std::memcpy(&v, data, std::min(size, 8u));
    return v;
}

}  // namespace

EmuVcpu::EmuVcpu(EmuVm& vm, uint32_t index) : vm_(vm), index_(index), engine_(vm.memory()) {
    engine_.set_mmio_exits(true);
    CpuInterrupts& ci = vm_.platform().cpu(index_);
    engine_.set_interrupt_source(&ci);
    ci.set_wakeup([this] { wake(); });
    engine_.set_code_write_hook([this](uint64_t page) { vm_.broadcast_code_write(index_, page); });
    // As under KVM with an in-kernel LAPIC, application processors wait for
    // INIT and start-up IPIs; the BSP runs from the state the VMM sets.
    if (index_ != 0) wait_for_sipi_ = true;
    engine_.s.msrs.apic_base = ci.apic_base();
    apic_base_seen_ = engine_.s.msrs.apic_base;
    tlb_gen_seen_ = vm_.tlb_generation();
}

EmuVcpu::~EmuVcpu() {
    vm_.platform().cpu(index_).set_wakeup(nullptr);
    vm_.vcpu_gone(this);
}

void EmuVcpu::wake() {
    engine_.interrupt_hint();
    {
        std::lock_guard lock(wake_mu_);
        wake_pending_ = true;
    }
    wake_cv_.notify_one();
}

void EmuVcpu::request_exit() {
    exit_requested_.store(true, std::memory_order_release);
    engine_.request_exit();
    wake();
}

void EmuVcpu::clear_exit_request() {
    exit_requested_.store(false, std::memory_order_release);
    engine_.clear_exit_request();
}

void EmuVcpu::queue_code_drop(uint64_t page) {
    {
        std::lock_guard lock(drop_mu_);
        code_drops_.push_back(page);
        have_code_drops_.store(true, std::memory_order_release);
    }
    engine_.request_exit();  // drop them before the next block
}

// WRMSR IA32_APIC_BASE lands in the engine's MSRs; the LAPIC model decides
// (a refused value is undone: the guest reads back what the LAPIC has).
void EmuVcpu::sync_apic_base() {
    uint64_t& base = engine_.s.msrs.apic_base;
    if (base == apic_base_seen_) return;
    CpuInterrupts& ci = vm_.platform().cpu(index_);
    (void)ci.set_apic_base(base);
    base = ci.apic_base();
    apic_base_seen_ = base;
}

// WRMSR IA32_TSC_DEADLINE lands in the engine's MSRs (and stops the engine);
// the LAPIC model arms its timer, in host-TSC terms (the guest's TSC is the
// host's plus tsc_offset). The engine's copy then follows the LAPIC, which
// clears the deadline when it fires or when the timer leaves that mode.
void EmuVcpu::sync_tsc_deadline() {
    uint64_t& msr = engine_.s.msrs.tsc_deadline;
    const uint64_t offset = engine_.s.msrs.tsc_offset;
    CpuInterrupts& ci = vm_.platform().cpu(index_);
    if (msr != tsc_deadline_seen_) {
        ci.set_tsc_deadline(msr == 0 ? 0 : msr - offset, vm_.guest_ns());
        next_timer_ns_ = 0;  // recompute the next deadline before running on
    }
    const uint64_t armed = ci.tsc_deadline();
    msr = armed == 0 ? 0 : armed + offset;
    tsc_deadline_seen_ = msr;
}

// What other threads changed while the engine was stopped: code pages other
// engines wrote, and the dirty log's generation (flush cached write permissions).
void EmuVcpu::sync_with_vm() {
    if (have_code_drops_.load(std::memory_order_acquire)) {
        std::vector<uint64_t> drops;
        {
            std::lock_guard lock(drop_mu_);
            drops.swap(code_drops_);
            have_code_drops_.store(false, std::memory_order_release);
        }
        for (uint64_t page : drops) engine_.drop_code_page(page);
    }
    sync_apic_base();
    sync_tsc_deadline();
    sync_dirty_generation();
}

void EmuVcpu::sync_dirty_generation() {
    const uint64_t gen = vm_.tlb_generation();
    if (gen != tlb_gen_seen_) {
        tlb_gen_seen_ = gen;
        engine_.dirty_log_cleared();
    }
}

uint64_t EmuVcpu::tick_timers(uint64_t now) {
    CpuInterrupts& ci = vm_.platform().cpu(index_);
    if (now >= next_timer_ns_) {
        ci.tick(now);
        vm_.platform().tick(now);
    }
    next_timer_ns_ = std::min(ci.next_timer_ns(), vm_.platform().next_timer_ns());
    return next_timer_ns_;
}

// Sleeps until something for this vCPU happens: an interrupt it can take
// (`halted`: HLT, RFLAGS.IF decides) or a start-up IPI (waiting for SIPI),
// a timer deadline, or a request from the VMM.
void EmuVcpu::wait_for_event(bool halted) {
    CpuInterrupts& ci = vm_.platform().cpu(index_);
    for (;;) {
        if (vmm_wants_exit()) return;
        const uint64_t now = vm_.guest_ns();
        const uint64_t deadline = tick_timers(now);
        if (halted && ci.has_wake_event((engine_.s.rflags & rflags::IF) != 0)) return;
        if (!halted && ci.has_startup_event()) return;
        std::unique_lock lock(wake_mu_);
        if (!wake_pending_) {
            if (deadline == UINT64_MAX) {
                wake_cv_.wait(lock, [&] { return wake_pending_; });
            } else if (deadline > now) {
                wake_cv_.wait_for(lock, std::chrono::nanoseconds(deadline - now), [&] { return wake_pending_; });
            }
        }
        wake_pending_ = false;
    }
}

// INIT resets the CPU to wait for SIPI; SIPI starts it in real mode at vector * 4 KiB.
bool EmuVcpu::handle_startup() {
    CpuInterrupts& ci = vm_.platform().cpu(index_);
    if (ci.take_init()) {
        CpuState& s = engine_.s;
        const CpuState fresh = reset_state();
        const uint64_t apic_base = s.msrs.apic_base;
        const uint64_t tsc_offset = s.msrs.tsc_offset;
        const uint64_t tsc_adjust = s.msrs.tsc_adjust;
        s = fresh;
        s.msrs.apic_base = apic_base;
        s.msrs.tsc_offset = tsc_offset;
        s.msrs.tsc_adjust = tsc_adjust;
        engine_.state_changed();
        wait_for_sipi_ = true;
    }
    if (!wait_for_sipi_) return true;
    const int vector = ci.take_sipi();
    if (vector < 0) return false;
    CpuState& s = engine_.s;
    s.seg[kCs].selector = static_cast<uint16_t>(vector << 8);
    s.seg[kCs].base = static_cast<uint64_t>(vector) << 12;
    s.rip = 0;
    s.halted = false;
    engine_.state_changed();
    wait_for_sipi_ = false;
    return true;
}

EmuVcpu::Handled EmuVcpu::handle_internally(RunExit& e) {
    Platform& p = vm_.platform();
    if (e.kind == ExitKind::Io) {
        const auto port = static_cast<uint16_t>(e.addr);
        if (e.is_write) {
            const uint64_t v = load(e.data, e.size);
            if (vm_.signal_ioeventfd(e.addr, e.size, true)) return Handled::Yes;
            if (p.pio_write(port, e.size, static_cast<uint32_t>(v), vm_.guest_ns())) return Handled::Yes;
            if (vm_.batched_port(port)) {
                Batched b{port, e.size, {}};
                std::memcpy(b.data.data(), e.data, std::min<size_t>(e.size, b.data.size()));
                batched_.push_back(b);
                return Handled::Yes;
            }
            return Handled::No;
        }
        uint32_t v = 0;
        if (!p.pio_read(port, e.size, v, vm_.guest_ns())) return Handled::No;
        std::memcpy(e.data, &v, std::min<size_t>(e.size, 4));
        return Handled::Yes;
    }
    if (e.kind == ExitKind::Mmio) {
        sync_apic_base();
        if (e.is_write) {
            if (p.mmio_write(index_, e.addr, e.size, load(e.data, e.size), vm_.guest_ns())) return Handled::Yes;
            return vm_.signal_ioeventfd(e.addr, e.size, false) ? Handled::Yes : Handled::No;
        }
        uint64_t v = 0;
        if (!p.mmio_read(index_, e.addr, e.size, v, vm_.guest_ns())) return Handled::No;
        std::memcpy(e.data, &v, std::min<size_t>(e.size, 8));
        return Handled::Yes;
    }
    return Handled::No;
}

Result<VcpuExit> EmuVcpu::run() {
    for (;;) {
        if (vmm_wants_exit()) return VcpuExit{};
        sync_with_vm();
        if (wait_for_sipi_ || engine_.interrupt_hinted()) {
            if (!handle_startup()) {
                wait_for_event(false);
                continue;
            }
        }
        const uint64_t now = vm_.guest_ns();
        if (now >= next_timer_ns_) tick_timers(now);

        vm_.barrier().enter_shared();
        // A dirty-log fetch may have run between sync_with_vm() and here (it
        // holds the barrier): flush cached write permissions before running,
        // or this engine's writes to pages it wrote before would go unlogged.
        sync_dirty_generation();
        RunExit e = engine_.run(kBudget);
        vm_.barrier().leave_shared();

        switch (e.kind) {
            case ExitKind::Interrupted:
                // The budget ran out or someone kicked the engine; a request
                // from the VMM is seen at the top (its flag is set first).
                engine_.clear_exit_request();
                continue;
            case ExitKind::Halt:
                wait_for_event(true);
                continue;
            case ExitKind::Io:
            case ExitKind::Mmio:
                if (handle_internally(e) == Handled::Yes) continue;
                return to_vcpu_exit(e);
            default:
                return to_vcpu_exit(e);
        }
    }
}

void EmuVcpu::drain_batched_writes(const std::function<void(const VcpuExit&)>& sink) {
    for (Batched& b : batched_) {
        VcpuExit x;
        x.kind = ExitKind::Io;
        x.addr = b.port;
        x.size = b.size;
        x.count = 1;
        x.is_write = true;
        x.data = b.data.data();
        sink(x);
    }
    batched_.clear();
}

Result<Regs> EmuVcpu::get_regs() { return to_regs(engine_.s); }

Result<void> EmuVcpu::set_regs(const Regs& r) {
    from_regs(engine_.s, r);
    return {};
}

Result<Sregs> EmuVcpu::get_sregs() { return to_sregs(engine_.s); }

Result<void> EmuVcpu::set_sregs(const Sregs& r) {
    from_sregs(engine_.s, r);
    engine_.state_changed();
    return {};
}

Result<void> EmuVcpu::set_cpuid(std::span<const CpuidEntry> entries) {
    engine_.set_cpuid(std::vector<CpuidEntry>(entries.begin(), entries.end()));
    return {};
}

Result<void> EmuVcpu::set_msrs(std::span<const MsrEntry> msrs) {
    for (const MsrEntry& m : msrs) {
        if (!set_msr(engine_, m.index, m.value))
            return Error{"emu: MSR " + std::to_string(m.index) + " cannot be set to " + std::to_string(m.value)};
    }
    return {};
}

Result<void> EmuVcpu::get_msrs(std::span<MsrEntry> msrs) {
    for (MsrEntry& m : msrs) {
        if (!get_msr(engine_, m.index, m.value)) return Error{"emu: MSR " + std::to_string(m.index) + " is not implemented"};
    }
    return {};
}

Result<void> EmuVcpu::reset_fpu() {
    engine_.s.x87 = X87{};
    engine_.s.mxcsr = 0x1f80;
    return {};
}

Result<void> EmuVcpu::setup_lapic_lints() {
    vm_.platform().cpu(index_).set_lints_firmware_default();
    return {};
}

}  // namespace popek::hv::emu
