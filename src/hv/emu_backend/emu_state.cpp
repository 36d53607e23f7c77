// vCPU state of the emu backend for snapshots and migration: the engine's
// CpuState in hv::VcpuState's backend-neutral form. The FPU/SSE state travels
// as an XSAVE area with only the legacy (FXSAVE-layout) region and the
// header, the local APIC as its 1 KiB page (its timer state is in the VM's
// "emu-lapic" blobs, restored first).
#include <cstring>

#include "hv/emu_backend/emu_backend.hpp"

namespace popek::hv::emu {

using base::Error;
using base::Result;

namespace {

constexpr size_t kLegacyBytes = 512;
constexpr size_t kXsaveBytes = kLegacyBytes + 64;  // legacy region + XSAVE header
constexpr size_t kLapicPageBytes = 1024;
constexpr uint64_t kXstateX87 = 1, kXstateSse = 2;
constexpr uint32_t kMxcsrMask = 0xffbf;
// KVM's MP states (the values hv::VcpuState::mp_state uses).
constexpr uint32_t kMpRunnable = 0, kMpUninitialized = 1, kMpHalted = 3;

std::vector<uint8_t> save_fpu(const CpuState& s) {
    std::vector<uint8_t> area(kXsaveBytes, 0);
    const auto put = [&area](size_t at, const void* p, size_t n) { std::memcpy(area.data() + at, p, n); };
    const X87& f = s.x87;
    put(0, &f.fcw, 2);
    put(2, &f.fsw, 2);
    put(4, &f.ftw, 1);
    put(6, &f.fop, 2);
    put(8, &f.fip, 8);
    put(16, &f.fdp, 8);
    put(24, &s.mxcsr, 4);
    put(28, &kMxcsrMask, 4);
    for (size_t k = 0; k < 8; ++k) put(32 + k * 16, f.st[k].data(), 10);
    for (size_t k = 0; k < 16; ++k) put(160 + k * 16, &s.xmm[k], 16);
    const uint64_t xstate_bv = kXstateX87 | kXstateSse;
    put(kLegacyBytes, &xstate_bv, 8);
    return area;
}

Result<void> restore_fpu(CpuState& s, const std::vector<uint8_t>& area) {
    if (area.size() < kXsaveBytes)
        return Error{"vCPU state: the XSAVE area is " + std::to_string(area.size()) + " bytes, want at least " +
                     std::to_string(kXsaveBytes)};
    uint64_t xstate_bv = 0;
    std::memcpy(&xstate_bv, area.data() + kLegacyBytes, 8);
    if ((xstate_bv & ~(kXstateX87 | kXstateSse)) != 0) {
        for (size_t k = kXsaveBytes; k < area.size(); ++k) {
            if (area[k] != 0)
                return Error{"vCPU state: the XSAVE area holds AVX or later state, which the emu backend lacks"};
        }
    }
    uint32_t mxcsr = 0;
    std::memcpy(&mxcsr, area.data() + 24, 4);
    if ((mxcsr & ~kMxcsrMask) != 0) return Error{"vCPU state: MXCSR " + std::to_string(mxcsr) + " has reserved bits"};
    const auto get = [&area](size_t at, void* p, size_t n) { std::memcpy(p, area.data() + at, n); };
    X87 f{};
    get(0, &f.fcw, 2);
    get(2, &f.fsw, 2);
    get(4, &f.ftw, 1);
    get(6, &f.fop, 2);
    get(8, &f.fip, 8);
    get(16, &f.fdp, 8);
    for (size_t k = 0; k < 8; ++k) get(32 + k * 16, f.st[k].data(), 10);
    // Components whose XSTATE_BV bit is clear are in their initial state.
    if ((xstate_bv & kXstateX87) == 0) f = X87{};
    s.x87 = f;
    s.mxcsr = mxcsr;
    for (size_t k = 0; k < 16; ++k) {
        if ((xstate_bv & kXstateSse) != 0) {
            get(160 + k * 16, &s.xmm[k], 16);
        } else {
            s.xmm[k] = Xmm{};
        }
    }
    return {};
}

}  // namespace

Result<VcpuState> EmuVcpu::save_state() {
    // A port read the VMM answered is completed now, as KVM does, so the
    // registers are past it.
    if (engine_.pending_in.active) {
        engine_.request_exit();
        (void)engine_.run(0);
        engine_.clear_exit_request();
        if (vmm_wants_exit()) engine_.request_exit();
    }
    const CpuState& s = engine_.s;
    VcpuState st;
    st.regs = to_regs(s);
    st.sregs = to_sregs(s);
    for (uint32_t index : msr_indices()) {
        uint64_t v = 0;
        if (get_msr(engine_, index, v)) st.msrs.push_back(MsrEntry{index, v});
    }
    st.xsave = save_fpu(s);
    st.xcrs.push_back(MsrEntry{0, s.xcr0});
    st.lapic = vm_.platform().cpu(index_).save();
    st.lapic.resize(kLapicPageBytes);
    st.events.interrupt_shadow = s.interrupt_shadow ? 1 : 0;
    st.events.nmi_pending = engine_.nmi_pending() ? 1 : 0;
    st.events.nmi_masked = engine_.nmi_blocked() ? 1 : 0;
    if (engine_.irq_pending()) {
        st.events.interrupt_injected = 1;
        st.events.interrupt_nr = engine_.pending_irq_vector();
    }
    st.debug = DebugRegs{{s.dr[0], s.dr[1], s.dr[2], s.dr[3]}, s.dr6, s.dr7};
    st.mp_state = wait_for_sipi_ ? kMpUninitialized : s.halted ? kMpHalted : kMpRunnable;
    return st;
}

Result<void> EmuVcpu::restore_state(const VcpuState& st) {
    // Everything is checked on a copy first; the engine changes only at the end.
    if (st.lapic.size() != kLapicPageBytes)
        return Error{"vCPU state: the local APIC page is " + std::to_string(st.lapic.size()) + " bytes, want 1024"};
    if (st.mp_state != kMpRunnable && st.mp_state != kMpUninitialized && st.mp_state != kMpHalted)
        return Error{"vCPU state: MP state " + std::to_string(st.mp_state) + " is not one the emu backend saves"};
    if (st.events.exception_injected || st.events.smm || st.events.smi_pending || st.events.latched_init)
        return Error{"vCPU state: a pending exception or SMM state (saved by another backend?) cannot be restored on emu"};
    for (const MsrEntry& x : st.xcrs) {
        if (x.index != 0 || (x.value & ~(kXstateX87 | kXstateSse)) != 0 || (x.value & kXstateX87) == 0)
            return Error{"vCPU state: XCR" + std::to_string(x.index) + " = " + std::to_string(x.value) +
                         " enables state the emu backend lacks (saved by another backend?)"};
    }
    Engine scratch(vm_.memory());
    scratch.s = engine_.s;
    from_sregs(scratch.s, st.sregs);
    from_regs(scratch.s, st.regs);
    POPEK_TRY(restore_fpu(scratch.s, st.xsave));
    for (const MsrEntry& m : st.msrs) {
        if (!set_msr(scratch, m.index, m.value))
            return Error{"vCPU state: MSR " + std::to_string(m.index) + " = " + std::to_string(m.value) +
                         " is not one the emu backend can restore (saved by another backend?)"};
    }
    CpuState s = scratch.s;
    for (const MsrEntry& x : st.xcrs) s.xcr0 = x.value;
    s.dr = {st.debug.db[0], st.debug.db[1], st.debug.db[2], st.debug.db[3]};
    s.dr6 = st.debug.dr6;
    s.dr7 = st.debug.dr7;
    s.interrupt_shadow = st.events.interrupt_shadow != 0;
    s.halted = st.mp_state == kMpHalted;
    engine_.s = s;
    engine_.state_changed();
    wait_for_sipi_ = st.mp_state == kMpUninitialized;
    engine_.restore_events(st.events.nmi_pending != 0, st.events.nmi_masked != 0,
                           st.events.interrupt_injected != 0, st.events.interrupt_nr);
    engine_.interrupt_hint();
    return {};
}

}  // namespace popek::hv::emu
