#include <pthread.h>
#include <sys/ioctl.h>

#include <csignal>
#include <cstring>
#include <vector>

#include "hv/kvm/kvm.hpp"

namespace popek::hv::kvm {

using base::Error;
using base::Result;

Result<VcpuExit> KvmVcpu::run() {
    if (!thread_known_.load(std::memory_order_acquire)) {
        thread_.store(pthread_self(), std::memory_order_relaxed);
        thread_known_.store(true, std::memory_order_release);
    }
    VcpuExit exit;
    io_pending_ = false;
    if (::ioctl(fd_.get(), KVM_RUN, 0) < 0) {
        if (errno == EINTR || errno == EAGAIN) {
            exit.kind = ExitKind::Interrupted;
            return exit;
        }
        return Error::from_errno("KVM_RUN on vCPU " + std::to_string(index_));
    }
    switch (run_->exit_reason) {
        case KVM_EXIT_IO:
            exit.kind = ExitKind::Io;
            exit.addr = run_->io.port;
            exit.size = run_->io.size;
            exit.count = run_->io.count;
            exit.is_write = run_->io.direction == KVM_EXIT_IO_OUT;
            exit.data = reinterpret_cast<uint8_t*>(run_) + run_->io.data_offset;
            io_pending_ = true;
            break;
        case KVM_EXIT_MMIO:
            exit.kind = ExitKind::Mmio;
            exit.addr = run_->mmio.phys_addr;
            exit.size = run_->mmio.len;
            exit.is_write = run_->mmio.is_write != 0;
            exit.data = run_->mmio.data;
            io_pending_ = true;
            break;
        case KVM_EXIT_INTR:
            exit.kind = ExitKind::Interrupted;
            break;
        case KVM_EXIT_HLT:
            exit.kind = ExitKind::Halt;
            break;
        case KVM_EXIT_SHUTDOWN:
            exit.kind = ExitKind::Shutdown;
            break;
        case KVM_EXIT_SYSTEM_EVENT:
            exit.kind = run_->system_event.type == KVM_SYSTEM_EVENT_RESET ? ExitKind::Reset
                                                                          : ExitKind::PowerOff;
            exit.detail = run_->system_event.type;
            break;
        case KVM_EXIT_INTERNAL_ERROR:
            exit.kind = ExitKind::InternalError;
            exit.detail = (uint64_t{KVM_EXIT_INTERNAL_ERROR} << 32) | run_->internal.suberror;
            break;
        case KVM_EXIT_FAIL_ENTRY:
            exit.kind = ExitKind::InternalError;
            exit.detail = (uint64_t{KVM_EXIT_FAIL_ENTRY} << 32) |
                          (run_->fail_entry.hardware_entry_failure_reason & 0xffffffffu);
            break;
        default:
            exit.kind = ExitKind::InternalError;
            exit.detail = uint64_t{run_->exit_reason} << 32;
            break;
    }
    return exit;
}

void KvmVcpu::request_exit() {
    // immediate_exit covers the window before the thread enters KVM_RUN; the
    // signal interrupts a KVM_RUN already under way.
    __atomic_store_n(&run_->immediate_exit, 1, __ATOMIC_SEQ_CST);
    if (thread_known_.load(std::memory_order_acquire))
        ::pthread_kill(thread_.load(std::memory_order_relaxed), kick_signal());
}

void KvmVcpu::clear_exit_request() { __atomic_store_n(&run_->immediate_exit, 0, __ATOMIC_SEQ_CST); }

void KvmVcpu::drain_batched_writes(const std::function<void(const VcpuExit&)>& sink) {
    if (!ring_.enabled) return;
    uint8_t* page = run_map_.data() + kCoalescedRingOffset;
    auto* header = reinterpret_cast<KvmVarHeader*>(page);  // count = first, padding = last
    auto* entries = reinterpret_cast<kvm_coalesced_mmio*>(page + sizeof(KvmVarHeader));
    std::lock_guard lock(ring_.mu);
    uint32_t first = header->count;
    while (first != __atomic_load_n(&header->padding, __ATOMIC_ACQUIRE)) {
        if (first >= kCoalescedRingEntries) break;  // KVM never writes this; don't trust it blindly
        kvm_coalesced_mmio entry = entries[first];
        VcpuExit io;
        io.kind = entry.pio ? ExitKind::Io : ExitKind::Mmio;
        io.addr = entry.phys_addr;
        io.size = entry.len <= sizeof entry.data ? entry.len : sizeof entry.data;
        io.is_write = true;
        io.data = entry.data;
        first = (first + 1) % kCoalescedRingEntries;
        __atomic_store_n(&header->count, first, __ATOMIC_RELEASE);
        sink(io);
    }
}

static Segment from_kvm(const kvm_segment& s) {
    return Segment{s.base, s.limit, s.selector, s.type, s.present, s.dpl, s.db, s.s, s.l, s.g, s.avl,
                   s.unusable};
}

static kvm_segment to_kvm(const Segment& s) {
    kvm_segment k{};
    k.base = s.base;
    k.limit = s.limit;
    k.selector = s.selector;
    k.type = s.type;
    k.present = s.present;
    k.dpl = s.dpl;
    k.db = s.db;
    k.s = s.s;
    k.l = s.l;
    k.g = s.g;
    k.avl = s.avl;
    k.unusable = s.unusable;
    return k;
}

Result<Regs> KvmVcpu::get_regs() {
    kvm_regs k{};
    if (xioctl(fd_.get(), KVM_GET_REGS, &k) < 0) return Error::from_errno("KVM_GET_REGS");
    return Regs{k.rax, k.rbx, k.rcx, k.rdx, k.rsi, k.rdi, k.rsp, k.rbp, k.r8,  k.r9,
                k.r10, k.r11, k.r12, k.r13, k.r14, k.r15, k.rip, k.rflags};
}

Result<void> KvmVcpu::set_regs(const Regs& r) {
    kvm_regs k{r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8,  r.r9,
               r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, r.rip, r.rflags};
    if (xioctl(fd_.get(), KVM_SET_REGS, &k) < 0) return Error::from_errno("KVM_SET_REGS");
    return {};
}

Result<Sregs> KvmVcpu::get_sregs() {
    kvm_sregs k{};
    if (xioctl(fd_.get(), KVM_GET_SREGS, &k) < 0) return Error::from_errno("KVM_GET_SREGS");
    Sregs s{};
    s.cs = from_kvm(k.cs);
    s.ds = from_kvm(k.ds);
    s.es = from_kvm(k.es);
    s.fs = from_kvm(k.fs);
    s.gs = from_kvm(k.gs);
    s.ss = from_kvm(k.ss);
    s.tr = from_kvm(k.tr);
    s.ldt = from_kvm(k.ldt);
    s.gdt = {k.gdt.base, k.gdt.limit};
    s.idt = {k.idt.base, k.idt.limit};
    s.cr0 = k.cr0;
    s.cr2 = k.cr2;
    s.cr3 = k.cr3;
    s.cr4 = k.cr4;
    s.cr8 = k.cr8;
    s.efer = k.efer;
    s.apic_base = k.apic_base;
    return s;
}

Result<void> KvmVcpu::set_sregs(const Sregs& s) {
    // Start from the current state so fields popek does not model (the
    // pending-interrupt bitmap) keep their values.
    kvm_sregs k{};
    if (xioctl(fd_.get(), KVM_GET_SREGS, &k) < 0) return Error::from_errno("KVM_GET_SREGS");
    k.cs = to_kvm(s.cs);
    k.ds = to_kvm(s.ds);
    k.es = to_kvm(s.es);
    k.fs = to_kvm(s.fs);
    k.gs = to_kvm(s.gs);
    k.ss = to_kvm(s.ss);
    k.tr = to_kvm(s.tr);
    k.ldt = to_kvm(s.ldt);
    k.gdt.base = s.gdt.base;
    k.gdt.limit = s.gdt.limit;
    k.idt.base = s.idt.base;
    k.idt.limit = s.idt.limit;
    k.cr0 = s.cr0;
    k.cr2 = s.cr2;
    k.cr3 = s.cr3;
    k.cr4 = s.cr4;
    k.cr8 = s.cr8;
    k.efer = s.efer;
    if (s.apic_base != 0) k.apic_base = s.apic_base;
    if (xioctl(fd_.get(), KVM_SET_SREGS, &k) < 0) return Error::from_errno("KVM_SET_SREGS");
    return {};
}

Result<void> KvmVcpu::set_cpuid(std::span<const CpuidEntry> entries) {
    KvmVarBuffer<kvm_cpuid_entry2> buf(entries.size());
    for (size_t i = 0; i < entries.size(); i++) {
        const auto& e = entries[i];
        auto& k = buf.entries()[i];
        k = kvm_cpuid_entry2{};
        k.function = e.function;
        k.index = e.index;
        k.flags = e.index_significant ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0;
        k.eax = e.eax;
        k.ebx = e.ebx;
        k.ecx = e.ecx;
        k.edx = e.edx;
    }
    if (xioctl(fd_.get(), kKvmSetCpuid2, buf.data()) < 0) return Error::from_errno("KVM_SET_CPUID2");
    return {};
}

Result<void> KvmVcpu::set_msrs(std::span<const MsrEntry> msrs) {
    KvmVarBuffer<kvm_msr_entry> buf(msrs.size());
    for (size_t i = 0; i < msrs.size(); i++) {
        buf.entries()[i] = kvm_msr_entry{};
        buf.entries()[i].index = msrs[i].index;
        buf.entries()[i].data = msrs[i].value;
    }
    int n = xioctl(fd_.get(), kKvmSetMsrs, buf.data());
    if (n < 0) return Error::from_errno("KVM_SET_MSRS");
    if (static_cast<size_t>(n) != msrs.size()) {
        char buf2[64];
        std::snprintf(buf2, sizeof buf2, "%#x", msrs[static_cast<size_t>(n)].index);
        return Error{std::string("KVM_SET_MSRS: KVM refused MSR ") + buf2};
    }
    return {};
}

Result<void> KvmVcpu::get_msrs(std::span<MsrEntry> msrs) {
    KvmVarBuffer<kvm_msr_entry> buf(msrs.size());
    for (size_t i = 0; i < msrs.size(); i++) {
        buf.entries()[i] = kvm_msr_entry{};
        buf.entries()[i].index = msrs[i].index;
    }
    int n = xioctl(fd_.get(), kKvmGetMsrs, buf.data());
    if (n < 0) return Error::from_errno("KVM_GET_MSRS");
    if (static_cast<size_t>(n) != msrs.size()) return Error{"KVM_GET_MSRS: KVM refused an MSR"};
    for (size_t i = 0; i < msrs.size(); i++) msrs[i].value = buf.entries()[i].data;
    return {};
}

Result<void> KvmVcpu::reset_fpu() {
    kvm_fpu fpu{};
    fpu.fcw = 0x37f;
    fpu.mxcsr = 0x1f80;
    if (xioctl(fd_.get(), KVM_SET_FPU, &fpu) < 0) return Error::from_errno("KVM_SET_FPU");
    return {};
}

Result<void> KvmVcpu::setup_lapic_lints() {
    constexpr size_t kLvtLint0 = 0x350;
    constexpr size_t kLvtLint1 = 0x360;
    constexpr uint32_t kModeExtInt = 0x7 << 8;
    constexpr uint32_t kModeNmi = 0x4 << 8;
    constexpr uint32_t kModeMask = 0x7 << 8;
    kvm_lapic_state lapic{};
    if (xioctl(fd_.get(), KVM_GET_LAPIC, &lapic) < 0) return Error::from_errno("KVM_GET_LAPIC");
    auto set_mode = [&](size_t off, uint32_t mode) {
        uint32_t v;
        std::memcpy(&v, lapic.regs + off, 4);
        v = (v & ~kModeMask) | mode;
        std::memcpy(lapic.regs + off, &v, 4);
    };
    set_mode(kLvtLint0, kModeExtInt);
    set_mode(kLvtLint1, kModeNmi);
    if (xioctl(fd_.get(), KVM_SET_LAPIC, &lapic) < 0) return Error::from_errno("KVM_SET_LAPIC");
    return {};
}

}  // namespace popek::hv::kvm
