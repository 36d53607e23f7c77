#include "vmm/vcpu_thread.hpp"

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <future>
#include <string>

namespace popek::vmm {

VcpuThread::VcpuThread(std::unique_ptr<hv::Vcpu> vcpu, const devices::Bus& pio,
                       const devices::Bus& mmio, devices::ExitHandler& exits)
    : vcpu_(std::move(vcpu)), pio_(pio), mmio_(mmio), exits_(exits), index_(vcpu_->index()) {}

VcpuThread::~VcpuThread() {
    if (thread_.joinable()) {
        stop();
        thread_.join();
    }
}

void VcpuThread::start() { thread_ = std::thread([this] { thread_main(); }); }
void VcpuThread::pause() { (void)post({Msg::Pause, {}}); }
void VcpuThread::resume() { (void)post({Msg::Resume, {}}); }
void VcpuThread::stop() { (void)post({Msg::Stop, {}}); }

VcpuState VcpuThread::state() const {
    std::lock_guard lock(mu_);
    return state_;
}

void VcpuThread::wait_for(VcpuState s) {
    if (!thread_.joinable()) return;  // never started: nothing will change
    std::unique_lock lock(mu_);
    state_cv_.wait(lock, [&] { return state_ == s || state_ == VcpuState::Stopped; });
}

bool VcpuThread::post(Message m) {
    {
        std::lock_guard lock(mu_);
        if (state_ == VcpuState::Stopped) return false;
        queue_.push_back(std::move(m));
        has_messages_.store(true, std::memory_order_release);
    }
    cv_.notify_all();
    vcpu_->request_exit();
    return true;
}

base::Result<void> VcpuThread::run_on_vcpu(std::function<base::Result<void>(hv::Vcpu&)> fn) {
    if (!thread_.joinable() || std::this_thread::get_id() == thread_.get_id()) return fn(*vcpu_);
    std::promise<base::Result<void>> done;
    auto fut = done.get_future();
    if (!post({Msg::Call, [&](hv::Vcpu& v) { done.set_value(fn(v)); }}))
        return base::Error{"vCPU " + std::to_string(vcpu_->index()) + " has stopped"};
    return fut.get();
}

bool VcpuThread::handle_messages() {
    std::unique_lock lock(mu_);
    for (;;) {
        // Cleared under the lock before draining: a message posted after
        // this point re-arms the exit request, so none is missed.
        vcpu_->clear_exit_request();
        has_messages_.store(false, std::memory_order_relaxed);
        while (!queue_.empty()) {
            Message m = std::move(queue_.front());
            queue_.pop_front();
            switch (m.kind) {
                case Msg::Pause: if (state_ != VcpuState::Stopped) state_ = VcpuState::Paused; break;
                case Msg::Resume: if (state_ != VcpuState::Stopped) state_ = VcpuState::Running; break;
                case Msg::Stop: state_ = VcpuState::Stopped; break;
                case Msg::Call: m.call(*vcpu_); break;
            }
            state_cv_.notify_all();
        }
        if (state_ == VcpuState::Stopped) return false;
        if (state_ == VcpuState::Running) return true;
        cv_.wait(lock, [&] { return !queue_.empty(); });
    }
}

void VcpuThread::thread_main() {
    // Only the kick signal reaches vCPU threads; the main thread handles the rest.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN);
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
    char name[16];
    std::snprintf(name, sizeof name, "vcpu%u", vcpu_->index());
    pthread_setname_np(pthread_self(), name);

    if (!handle_messages()) return;
    for (;;) {
        if (has_messages_.load(std::memory_order_acquire) && !handle_messages()) return;
        const auto t0 = std::chrono::steady_clock::now();
        auto exit = vcpu_->run();
        const auto ran = static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
        run_ns_.fetch_add(ran, std::memory_order_relaxed);
        if (!exit) {
            crash(exit.error().message);
            continue;
        }
        exits_count_.fetch_add(1, std::memory_order_relaxed);
        exits_by_kind_[static_cast<size_t>(exit->kind)].fetch_add(1, std::memory_order_relaxed);
        vcpu_->drain_batched_writes([this](const hv::VcpuExit& io) { handle_exit(io); });
        if (!apply_throttle(ran)) return;
        if (exit->kind == hv::ExitKind::Interrupted) {
            // A kick can land after its message was already drained; clearing
            // it here keeps a stale request from failing every later run().
            if (!handle_messages()) return;
            continue;
        }
        handle_exit(*exit);
    }
}

void VcpuThread::set_throttle(uint32_t percent) {
    throttle_.store(percent > 99 ? 99 : percent, std::memory_order_relaxed);
}

bool VcpuThread::apply_throttle(uint64_t ran_ns) {
    const uint64_t p = throttle_.load(std::memory_order_relaxed);
    if (p == 0) {
        unthrottled_ns_ = 0;
        return true;
    }
    unthrottled_ns_ += ran_ns;
    const auto period = static_cast<uint64_t>(std::chrono::nanoseconds(kThrottlePeriod).count());
    // Run (100-p)% of a period, then pay for it: sleep p/(100-p) of the time run.
    if (unthrottled_ns_ < period * (100 - p) / 100) return true;
    const uint64_t owed = std::min<uint64_t>(unthrottled_ns_ * p / (100 - p), 100 * period);
    unthrottled_ns_ = 0;
    const auto t0 = std::chrono::steady_clock::now();
    {
        std::unique_lock lock(mu_);
        cv_.wait_for(lock, std::chrono::nanoseconds(owed), [&] { return !queue_.empty(); });
    }
    throttled_ns_.fetch_add(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::steady_clock::now() - t0).count()),
                            std::memory_order_relaxed);
    // A message that arrived meanwhile (pause, stop) is seen at once.
    if (has_messages_.load(std::memory_order_acquire)) return handle_messages();
    return true;
}

void VcpuThrottle::set(uint32_t percent) {
    if (percent > 99) percent = 99;
    for (VcpuThread* v : vcpus_) v->set_throttle(percent);
    {
        std::lock_guard lock(mu_);
        percent_ = percent;
        if (percent == 0) stop_ = true;
    }
    cv_.notify_all();
    if (percent == 0) {
        if (ticker_.joinable()) ticker_.join();
        return;
    }
    if (ticker_.joinable()) return;
    stop_ = false;
    ticker_ = std::thread([this] {
        pthread_setname_np(pthread_self(), "vcpu-throttle");
        std::unique_lock lock(mu_);
        while (!stop_) {
            // Kick a little more often than a period's run budget.
            const uint32_t p = percent_;
            const auto every = std::max(std::chrono::microseconds(1000),
                                        std::chrono::duration_cast<std::chrono::microseconds>(
                                            VcpuThread::kThrottlePeriod) * (100 - p) / 100);
            cv_.wait_for(lock, every, [&] { return stop_; });
            if (stop_) break;
            for (VcpuThread* v : vcpus_)
                if (v->state() == VcpuState::Running) v->kick();
        }
    });
}

void VcpuThread::handle_exit(const hv::VcpuExit& e) {
    switch (e.kind) {
        case hv::ExitKind::Io:
        case hv::ExitKind::Mmio: {
            const devices::Bus& bus = e.kind == hv::ExitKind::Io ? pio_ : mmio_;
            for (uint32_t i = 0; i < e.count; i++) {
                std::span<uint8_t> data(e.data + size_t{i} * e.size, e.size);
                if (e.is_write) {
                    (void)bus.write(e.addr, data);  // writes to nothing are dropped
                } else if (!bus.read(e.addr, data)) {
                    for (auto& b : data) b = 0xff;  // an undecoded read floats high
                }
            }
            return;
        }
        case hv::ExitKind::Interrupted: return;
        case hv::ExitKind::Reset:
            exits_.request_exit({devices::GuestExitKind::Reset, 0, "reset through the hypervisor"});
            return;
        case hv::ExitKind::PowerOff:
            exits_.request_exit({devices::GuestExitKind::PowerOff, 0, "power-off through the hypervisor"});
            return;
        case hv::ExitKind::Shutdown: crash("triple fault"); return;
        case hv::ExitKind::Halt: crash("HLT with interrupts that can never arrive"); return;
        case hv::ExitKind::InternalError: {
            char buf[64];
            std::snprintf(buf, sizeof buf, "internal error %#llx",
                          static_cast<unsigned long long>(e.detail));
            crash(std::string("the hypervisor could not run the guest: ") + buf);
            return;
        }
    }
}

void VcpuThread::crash(const std::string& why) {
    std::string detail = "vCPU " + std::to_string(vcpu_->index()) + ": " + why + "\n" + dump_registers(*vcpu_);
    exits_.request_exit({devices::GuestExitKind::Crash, 0, detail});
    // Stay off the CPU until the VMM stops us.
    std::lock_guard lock(mu_);
    if (state_ != VcpuState::Stopped) state_ = VcpuState::Paused;
    state_cv_.notify_all();
    has_messages_.store(true, std::memory_order_release);
}

std::string dump_registers(hv::Vcpu& vcpu) {
    auto regs = vcpu.get_regs();
    auto sregs = vcpu.get_sregs();
    if (!regs || !sregs) return "  (registers unavailable)";
    const hv::Regs& r = *regs;
    const hv::Sregs& s = *sregs;
    char buf[1024];
    std::snprintf(buf, sizeof buf,
                  "  rip=%016llx rflags=%016llx\n"
                  "  rax=%016llx rbx=%016llx rcx=%016llx rdx=%016llx\n"
                  "  rsi=%016llx rdi=%016llx rsp=%016llx rbp=%016llx\n"
                  "  r8 =%016llx r9 =%016llx r10=%016llx r11=%016llx\n"
                  "  r12=%016llx r13=%016llx r14=%016llx r15=%016llx\n"
                  "  cr0=%016llx cr2=%016llx cr3=%016llx cr4=%016llx efer=%016llx\n"
                  "  cs=%04x (base %llx, l=%u db=%u dpl=%u) ss=%04x tr=%04x gdt=%llx/%x idt=%llx/%x",
                  static_cast<unsigned long long>(r.rip), static_cast<unsigned long long>(r.rflags),
                  static_cast<unsigned long long>(r.rax), static_cast<unsigned long long>(r.rbx),
                  static_cast<unsigned long long>(r.rcx), static_cast<unsigned long long>(r.rdx),
                  static_cast<unsigned long long>(r.rsi), static_cast<unsigned long long>(r.rdi),
                  static_cast<unsigned long long>(r.rsp), static_cast<unsigned long long>(r.rbp),
                  static_cast<unsigned long long>(r.r8), static_cast<unsigned long long>(r.r9),
                  static_cast<unsigned long long>(r.r10), static_cast<unsigned long long>(r.r11),
                  static_cast<unsigned long long>(r.r12), static_cast<unsigned long long>(r.r13),
                  static_cast<unsigned long long>(r.r14), static_cast<unsigned long long>(r.r15),
                  static_cast<unsigned long long>(s.cr0), static_cast<unsigned long long>(s.cr2),
                  static_cast<unsigned long long>(s.cr3), static_cast<unsigned long long>(s.cr4),
                  static_cast<unsigned long long>(s.efer), s.cs.selector,
                  static_cast<unsigned long long>(s.cs.base), s.cs.l, s.cs.db, s.cs.dpl, s.ss.selector,
                  s.tr.selector, static_cast<unsigned long long>(s.gdt.base), s.gdt.limit,
                  static_cast<unsigned long long>(s.idt.base), s.idt.limit);
    return buf;
}

}  // namespace popek::vmm
