// Saving and restoring a vCPU's state (snapshots, migration). The VM-wide
// part (irqchip, PIT, clock) is in kvm_vm_state.cpp.
#include <algorithm>
#include <cstdio>
#include <cstring>

#include <sys/ioctl.h>

#include "hv/kvm/kvm.hpp"

namespace popek::hv::kvm {

using base::Error;
using base::Result;

namespace {

constexpr uint32_t kMsrTscDeadline = 0x6e0;

std::string hex(uint64_t v) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(v));
    return buf;
}

// KVM_GET_MSRS on `indices`; returns how many KVM read (it stops at the first
// MSR it cannot read) and fills `out` with those.
Result<size_t> read_msrs(int fd, std::span<const uint32_t> indices, std::vector<MsrEntry>& out) {
    if (indices.empty()) return size_t{0};
    KvmVarBuffer<kvm_msr_entry> buf(indices.size());
    for (size_t i = 0; i < indices.size(); i++) {
        buf.entries()[i] = kvm_msr_entry{};
        buf.entries()[i].index = indices[i];
    }
    int n = xioctl(fd, kKvmGetMsrs, buf.data());
    if (n < 0) return Error::from_errno("KVM_GET_MSRS");
    size_t got = std::min(static_cast<size_t>(n), indices.size());
    for (size_t i = 0; i < got; i++) out.push_back(MsrEntry{indices[i], buf.entries()[i].data});
    return got;
}

VcpuEvents from_kvm(const kvm_vcpu_events& k) {
    VcpuEvents e{};
    e.exception_injected = k.exception.injected;
    e.exception_nr = k.exception.nr;
    e.exception_has_error_code = k.exception.has_error_code;
    e.exception_error_code = k.exception.error_code;
    e.interrupt_injected = k.interrupt.injected;
    e.interrupt_nr = k.interrupt.nr;
    e.interrupt_soft = k.interrupt.soft;
    e.interrupt_shadow = k.interrupt.shadow;
    e.nmi_injected = k.nmi.injected;
    e.nmi_pending = k.nmi.pending;
    e.nmi_masked = k.nmi.masked;
    e.sipi_vector = k.sipi_vector;
    if (k.flags & KVM_VCPUEVENT_VALID_SMM) {
        e.smm = k.smi.smm;
        e.smi_pending = k.smi.pending;
        e.smm_inside_nmi = k.smi.smm_inside_nmi;
        e.latched_init = k.smi.latched_init;
    }
    return e;
}

kvm_vcpu_events to_kvm(const VcpuEvents& e, bool with_smm) {
    kvm_vcpu_events k{};
    k.exception.injected = e.exception_injected;
    k.exception.nr = e.exception_nr;
    k.exception.has_error_code = e.exception_has_error_code;
    k.exception.error_code = e.exception_error_code;
    k.interrupt.injected = e.interrupt_injected;
    k.interrupt.nr = e.interrupt_nr;
    k.interrupt.soft = e.interrupt_soft;
    k.interrupt.shadow = e.interrupt_shadow;
    k.nmi.injected = e.nmi_injected;
    k.nmi.pending = e.nmi_pending;
    k.nmi.masked = e.nmi_masked;
    k.sipi_vector = e.sipi_vector;
    k.flags = KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR | KVM_VCPUEVENT_VALID_SHADOW;
    if (with_smm) {
        k.flags |= KVM_VCPUEVENT_VALID_SMM;
        k.smi.smm = e.smm;
        k.smi.pending = e.smi_pending;
        k.smi.smm_inside_nmi = e.smm_inside_nmi;
        k.smi.latched_init = e.latched_init;
    }
    return k;
}

}  // namespace

// Every MSR in KVM's save list that this vCPU can read. KVM lists MSRs the
// vCPU's CPUID may not offer; KVM_GET_MSRS stops at the first it refuses, so
// the first save drops each refused one and keeps the list for later saves.
Result<std::vector<MsrEntry>> KvmVcpu::save_msrs() {
    std::vector<MsrEntry> out;
    if (saved_msrs_known_) {
        POPEK_ASSIGN_OR_RETURN(size_t got, read_msrs(fd_.get(), saved_msrs_, out));
        if (got == saved_msrs_.size()) return out;
        out.clear();  // the vCPU changed under us (new CPUID): learn the list again
    }
    std::vector<uint32_t> readable;
    std::span<const uint32_t> rest = state_support_->msr_indices;
    while (!rest.empty()) {
        POPEK_ASSIGN_OR_RETURN(size_t got, read_msrs(fd_.get(), rest, out));
        readable.insert(readable.end(), rest.begin(), rest.begin() + static_cast<std::ptrdiff_t>(got));
        rest = rest.subspan(std::min(got + 1, rest.size()));  // skip the refused one
    }
    if (std::find(readable.begin(), readable.end(), uint32_t{0x10}) == readable.end())
        return Error{"KVM_GET_MSRS cannot read IA32_TSC (0x10): the vCPU's TSC cannot be saved"};
    saved_msrs_ = std::move(readable);
    saved_msrs_known_ = true;
    return out;
}

// KVM_SET_MSRS stops at the first MSR it refuses. One whose saved value is
// the value this vCPU already has loses nothing (KVM lists MSRs it reads as 0
// but will not take a write for without the CPUID feature); any other is an error.
Result<void> KvmVcpu::restore_msrs(std::span<const MsrEntry> msrs) {
    while (!msrs.empty()) {
        KvmVarBuffer<kvm_msr_entry> buf(msrs.size());
        for (size_t i = 0; i < msrs.size(); i++) {
            buf.entries()[i] = kvm_msr_entry{};
            buf.entries()[i].index = msrs[i].index;
            buf.entries()[i].data = msrs[i].value;
        }
        int n = xioctl(fd_.get(), kKvmSetMsrs, buf.data());
        if (n < 0) return Error::from_errno("KVM_SET_MSRS");
        auto done = static_cast<size_t>(n);
        if (done >= msrs.size()) return {};
        const MsrEntry& refused = msrs[done];
        MsrEntry current{refused.index, 0};
        if (!get_msrs(std::span<MsrEntry>(&current, 1)).ok() || current.value != refused.value)
            return Error{"KVM_SET_MSRS: KVM refused MSR " + hex(refused.index) + " = " + hex(refused.value)};
        msrs = msrs.subspan(done + 1);
    }
    return {};
}

Result<std::vector<uint8_t>> KvmVcpu::save_xsave() {
    const KvmStateSupport& st = *state_support_;
    if (st.xsave_size == 0) return Error{"KVM lacks KVM_CAP_XSAVE: the vCPU's FPU/SSE/AVX state cannot be saved"};
    std::vector<uint8_t> xsave(st.xsave_size);
    if (st.xsave2) {
        if (xioctl(fd_.get(), kKvmGetXsave2, xsave.data()) < 0) return Error::from_errno("KVM_GET_XSAVE2");
    } else if (xioctl(fd_.get(), kKvmGetXsave, xsave.data()) < 0) {
        return Error::from_errno("KVM_GET_XSAVE");
    }
    return xsave;
}

// A KVM_RUN with immediate_exit completes the instruction behind the last
// port/MMIO exit (the VMM has already handled it) and returns at once,
// without running guest code; the registers saved afterwards are past it.
Result<void> KvmVcpu::complete_pending_io() {
    if (!io_pending_) return {};
    const uint8_t prior = __atomic_load_n(&run_->immediate_exit, __ATOMIC_SEQ_CST);
    __atomic_store_n(&run_->immediate_exit, 1, __ATOMIC_SEQ_CST);
    const int r = ::ioctl(fd_.get(), KVM_RUN, 0);  // not xioctl: EINTR is the expected answer
    const int err = errno;
    __atomic_store_n(&run_->immediate_exit, prior, __ATOMIC_SEQ_CST);
    if (r < 0 && err != EINTR) return Error::from_errno("KVM_RUN completing a pending I/O exit", err);
    io_pending_ = false;
    return {};
}

Result<VcpuState> KvmVcpu::save_state() {
    POPEK_TRY(complete_pending_io());
    const KvmStateSupport& st = *state_support_;
    int fd = fd_.get();
    VcpuState s;
    POPEK_ASSIGN_OR_RETURN(s.regs, get_regs());
    POPEK_ASSIGN_OR_RETURN(s.sregs, get_sregs());
    POPEK_ASSIGN_OR_RETURN(s.msrs, save_msrs());
    POPEK_ASSIGN_OR_RETURN(s.xsave, save_xsave());
    if (st.xcrs) {
        kvm_xcrs xcrs{};
        if (xioctl(fd, KVM_GET_XCRS, &xcrs) < 0) return Error::from_errno("KVM_GET_XCRS");
        for (uint32_t i = 0; i < xcrs.nr_xcrs && i < KVM_MAX_XCRS; i++)
            s.xcrs.push_back(MsrEntry{xcrs.xcrs[i].xcr, xcrs.xcrs[i].value});
    }
    kvm_lapic_state lapic{};
    if (xioctl(fd, KVM_GET_LAPIC, &lapic) < 0) return Error::from_errno("KVM_GET_LAPIC");
    s.lapic.resize(sizeof lapic.regs);
    std::memcpy(s.lapic.data(), lapic.regs, sizeof lapic.regs);
    if (!st.vcpu_events) return Error{"KVM lacks KVM_CAP_VCPU_EVENTS: pending interrupts and exceptions cannot be saved"};
    kvm_vcpu_events events{};
    if (xioctl(fd, KVM_GET_VCPU_EVENTS, &events) < 0) return Error::from_errno("KVM_GET_VCPU_EVENTS");
    s.events = from_kvm(events);
    if (!st.debugregs) return Error{"KVM lacks KVM_CAP_DEBUGREGS: the debug registers cannot be saved"};
    kvm_debugregs dbg{};
    if (xioctl(fd, KVM_GET_DEBUGREGS, &dbg) < 0) return Error::from_errno("KVM_GET_DEBUGREGS");
    s.debug = DebugRegs{{dbg.db[0], dbg.db[1], dbg.db[2], dbg.db[3]}, dbg.dr6, dbg.dr7};
    kvm_mp_state mp{};
    if (xioctl(fd, KVM_GET_MP_STATE, &mp) < 0) return Error::from_errno("KVM_GET_MP_STATE");
    s.mp_state = mp.mp_state;
    return s;
}

// The order follows what KVM needs: sregs first (EFER, CR0/CR4 and the APIC
// base decide what later state means), MSRs after them (IA32_TSC written by
// the VMM sets the TSC to the saved value, so the guest's TSC continues from
// there), the LAPIC after the MP state, the TSC deadline after the LAPIC (KVM
// ignores it unless the LAPIC timer is in deadline mode), pending events last.
// The caller sets CPUID first, as on the vCPU that was saved.
Result<void> KvmVcpu::restore_state(const VcpuState& s) {
    const KvmStateSupport& st = *state_support_;
    int fd = fd_.get();
    if (st.xsave_size == 0) return Error{"KVM lacks KVM_CAP_XSAVE: cannot restore the vCPU's FPU/SSE/AVX state"};
    if (s.xsave.size() != st.xsave_size)
        return Error{"vCPU state: the XSAVE area is " + std::to_string(s.xsave.size()) + " bytes, this KVM's is " +
                     std::to_string(st.xsave_size) + " (saved on a host with other CPU features?)"};
    if (s.lapic.size() != sizeof(kvm_lapic_state::regs))
        return Error{"vCPU state: the local APIC page is " + std::to_string(s.lapic.size()) + " bytes, want " +
                     std::to_string(sizeof(kvm_lapic_state::regs))};
    if (s.xcrs.size() > KVM_MAX_XCRS)
        return Error{"vCPU state: " + std::to_string(s.xcrs.size()) + " XCRs, KVM takes at most " +
                     std::to_string(KVM_MAX_XCRS)};
    if (!s.xcrs.empty() && !st.xcrs) return Error{"vCPU state has XCRs and this KVM lacks KVM_CAP_XCRS"};
    if (!st.vcpu_events || !st.debugregs)
        return Error{"KVM lacks KVM_CAP_VCPU_EVENTS or KVM_CAP_DEBUGREGS: cannot restore a vCPU"};
    bool any_smm = s.events.smm || s.events.smi_pending || s.events.smm_inside_nmi || s.events.latched_init;
    if (any_smm && !st.smm) return Error{"vCPU state: the vCPU was in or entering SMM and this KVM lacks KVM_CAP_X86_SMM"};

    POPEK_TRY(set_sregs(s.sregs));
    POPEK_TRY(set_regs(s.regs));
    std::vector<uint8_t> xsave(std::max(s.xsave.size(), sizeof(KvmXsaveRegion)), 0);
    std::copy(s.xsave.begin(), s.xsave.end(), xsave.begin());
    if (xioctl(fd, kKvmSetXsave, xsave.data()) < 0) return Error::from_errno("KVM_SET_XSAVE");
    if (!s.xcrs.empty()) {
        kvm_xcrs xcrs{};
        xcrs.nr_xcrs = static_cast<uint32_t>(s.xcrs.size());
        for (size_t i = 0; i < s.xcrs.size(); i++) {
            xcrs.xcrs[i].xcr = s.xcrs[i].index;
            xcrs.xcrs[i].value = s.xcrs[i].value;
        }
        if (xioctl(fd, KVM_SET_XCRS, &xcrs) < 0) return Error::from_errno("KVM_SET_XCRS");
    }
    std::vector<MsrEntry> msrs;
    std::vector<MsrEntry> late;
    for (const auto& m : s.msrs) (m.index == kMsrTscDeadline ? late : msrs).push_back(m);
    POPEK_TRY(restore_msrs(msrs));
    kvm_mp_state mp{s.mp_state};
    if (xioctl(fd, KVM_SET_MP_STATE, &mp) < 0) return Error::from_errno("KVM_SET_MP_STATE " + std::to_string(s.mp_state));
    kvm_lapic_state lapic{};
    std::memcpy(lapic.regs, s.lapic.data(), sizeof lapic.regs);
    if (xioctl(fd, KVM_SET_LAPIC, &lapic) < 0) return Error::from_errno("KVM_SET_LAPIC");
    POPEK_TRY(restore_msrs(late));
    kvm_vcpu_events events = to_kvm(s.events, st.smm);
    if (xioctl(fd, KVM_SET_VCPU_EVENTS, &events) < 0) return Error::from_errno("KVM_SET_VCPU_EVENTS");
    kvm_debugregs dbg{};
    std::copy(s.debug.db.begin(), s.debug.db.end(), dbg.db);
    dbg.dr6 = s.debug.dr6;
    dbg.dr7 = s.debug.dr7;
    if (xioctl(fd, KVM_SET_DEBUGREGS, &dbg) < 0) return Error::from_errno("KVM_SET_DEBUGREGS");
    return {};
}

}  // namespace popek::hv::kvm
