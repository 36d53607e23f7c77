// Auto-converge's vCPU throttle: a guest that never exits is held out of
// run() for the throttle's share of the time, pause stays prompt, and
// lifting the throttle gives the guest its time back.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "devices/bus.hpp"
#include "devices/guest_exit.hpp"
#include "vmm/vcpu_thread.hpp"

namespace popek::vmm {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A guest that computes forever: run() returns only when kicked (it waits,
// so the test costs no CPU; the time inside run() is what counts).
class BusyVcpu final : public hv::Vcpu {
public:
    [[nodiscard]] uint32_t index() const override { return 0; }
    base::Result<hv::VcpuExit> run() override {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return kick_; });
        return hv::VcpuExit{};  // Interrupted
    }
    void request_exit() override {
        {
            std::lock_guard lock(mu_);
            kick_ = true;
        }
        cv_.notify_all();
    }
    void clear_exit_request() override {
        std::lock_guard lock(mu_);
        kick_ = false;
    }
    base::Result<hv::Regs> get_regs() override { return hv::Regs{}; }
    base::Result<void> set_regs(const hv::Regs&) override { return {}; }
    base::Result<hv::Sregs> get_sregs() override { return hv::Sregs{}; }
    base::Result<void> set_sregs(const hv::Sregs&) override { return {}; }
    base::Result<void> set_cpuid(std::span<const hv::CpuidEntry>) override { return {}; }
    base::Result<void> set_msrs(std::span<const hv::MsrEntry>) override { return {}; }
    base::Result<void> get_msrs(std::span<hv::MsrEntry>) override { return {}; }
    base::Result<void> reset_fpu() override { return {}; }
    base::Result<void> setup_lapic_lints() override { return {}; }
    base::Result<hv::VcpuState> save_state() override { return hv::VcpuState{}; }
    base::Result<void> restore_state(const hv::VcpuState&) override { return {}; }
    void drain_batched_writes(const std::function<void(const hv::VcpuExit&)>&) override {}

private:
    std::mutex mu_;
    std::condition_variable cv_;
    bool kick_ = false;
};

class NoExits final : public devices::ExitHandler {
public:
    void request_exit(devices::GuestExit) override {}
};

struct Rig {
    devices::Bus pio{"pio"}, mmio{"mmio"};
    NoExits exits;
    VcpuThread t{std::make_unique<BusyVcpu>(), pio, mmio, exits};
};

// The share of `span` the vCPU spent inside run().
double run_share(VcpuThread& t, std::chrono::milliseconds span) {
    const uint64_t r0 = t.run_ns();
    const auto t0 = Clock::now();
    std::this_thread::sleep_for(span);
    const double wall = std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
    return static_cast<double>(t.run_ns() - r0) / wall;
}

TEST(VcpuThrottle, HoldsTheGuestOutForItsShareAndLiftsCleanly) {
    Rig rig;
    rig.t.start();
    rig.t.resume();
    rig.t.wait_for(VcpuState::Running);
    VcpuThrottle throttle({&rig.t});
    throttle.set(50);
    EXPECT_EQ(rig.t.throttle(), 50u);
    // Without the throttle the guest would be in run() ~100% of the time
    // (it never exits by itself; only the ticker's kicks bring it out).
    const double at50 = run_share(rig.t, 600ms);
    EXPECT_GT(at50, 0.30);
    EXPECT_LT(at50, 0.65);
    throttle.set(90);
    const double at90 = run_share(rig.t, 600ms);
    EXPECT_LT(at90, 0.25);
    EXPECT_GT(rig.t.throttled_ns(), 0u);
    // Pause is prompt even while the thread sleeps off its debt.
    const auto t0 = Clock::now();
    rig.t.pause();
    rig.t.wait_for(VcpuState::Paused);
    EXPECT_LT(Clock::now() - t0, 200ms);
    rig.t.resume();
    rig.t.wait_for(VcpuState::Running);
    throttle.set(0);
    EXPECT_EQ(rig.t.throttle(), 0u);
    // Lifted: one run() lasts until someone kicks (no ticker now), and the
    // thread sleeps no more.
    std::this_thread::sleep_for(20ms);  // a throttle sleep that had begun ends
    const uint64_t slept = rig.t.throttled_ns(), r0 = rig.t.run_ns();
    const auto t1 = Clock::now();
    std::this_thread::sleep_for(300ms);
    rig.t.kick();
    const auto deadline = Clock::now() + 10s;
    while (rig.t.run_ns() == r0 && Clock::now() < deadline) std::this_thread::sleep_for(1ms);
    const double wall = std::chrono::duration<double, std::nano>(Clock::now() - t1).count();
    EXPECT_GT(static_cast<double>(rig.t.run_ns() - r0) / wall, 0.9);
    EXPECT_EQ(rig.t.throttled_ns(), slept);
}

TEST(VcpuThrottle, ClampsTo99Percent) {
    Rig rig;
    rig.t.set_throttle(250);
    EXPECT_EQ(rig.t.throttle(), 99u);
}

}  // namespace
}  // namespace popek::vmm
