// A vCPU on its own thread: a small state machine (paused / running /
// stopped) driven by messages. The vCPU's registers are touched only on
// this thread; other threads ask through run_on_vcpu() while it is paused.
#pragma once

#include <array>
#include <chrono>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "devices/bus.hpp"
#include "devices/guest_exit.hpp"
#include "hv/hypervisor.hpp"

namespace popek::vmm {

enum class VcpuState { Paused, Running, Stopped };

class VcpuThread {
public:
    VcpuThread(std::unique_ptr<hv::Vcpu> vcpu, const devices::Bus& pio, const devices::Bus& mmio,
               devices::ExitHandler& exits);
    ~VcpuThread();
    VcpuThread(const VcpuThread&) = delete;
    VcpuThread& operator=(const VcpuThread&) = delete;

    // Starts the thread, paused.
    void start();
    // Asynchronous requests; wait_for() observes the result.
    void pause();
    void resume();
    void stop();
    // Blocks until the vCPU reaches `state` (Stopped is always reached after stop()).
    void wait_for(VcpuState state);
    [[nodiscard]] VcpuState state() const;

    // Runs `fn` on the vCPU thread the next time it looks at its messages
    // (at once if paused) and returns its result.
    base::Result<void> run_on_vcpu(std::function<base::Result<void>(hv::Vcpu&)> fn);

    [[nodiscard]] uint64_t exit_count() const { return exits_count_.load(std::memory_order_relaxed); }
    // Exits by hv::ExitKind (indexed by its value), and time spent in run().
    static constexpr size_t kExitKinds = static_cast<size_t>(hv::ExitKind::InternalError) + 1;
    [[nodiscard]] uint64_t exits_of(hv::ExitKind kind) const {
        return exits_by_kind_[static_cast<size_t>(kind)].load(std::memory_order_relaxed);
    }
    [[nodiscard]] uint64_t run_ns() const { return run_ns_.load(std::memory_order_relaxed); }
    [[nodiscard]] uint32_t index() const { return index_; }

    // Auto-converge: hold the vCPU out of the guest for `percent` (0-99) of
    // its time. Applied between runs: after running R ns the thread sleeps
    // R*p/(100-p) ns, in slices of about kThrottlePeriod, on its message
    // condition (so pause/stop are not delayed). Something must kick() the
    // vCPU now and then for a guest that never exits (VcpuThrottle does).
    void set_throttle(uint32_t percent);
    [[nodiscard]] uint32_t throttle() const { return throttle_.load(std::memory_order_relaxed); }
    // Makes a running vCPU leave the guest once (no message).
    void kick() { vcpu_->request_exit(); }
    // Time spent held out of the guest by the throttle.
    [[nodiscard]] uint64_t throttled_ns() const { return throttled_ns_.load(std::memory_order_relaxed); }
    static constexpr std::chrono::milliseconds kThrottlePeriod{10};

private:
    enum class Msg { Pause, Resume, Stop, Call };
    struct Message {
        Msg kind;
        std::function<void(hv::Vcpu&)> call;
    };
    bool post(Message m);  // false once the vCPU has stopped
    void thread_main();
    bool handle_messages();  // false when the thread must end
    void handle_exit(const hv::VcpuExit& exit);
    void crash(const std::string& why);
    bool apply_throttle(uint64_t ran_ns);  // false when the thread must end

    std::unique_ptr<hv::Vcpu> vcpu_;
    const devices::Bus& pio_;
    const devices::Bus& mmio_;
    devices::ExitHandler& exits_;

    mutable std::mutex mu_;
    std::condition_variable cv_;        // messages arrived
    std::condition_variable state_cv_;  // state changed
    std::deque<Message> queue_;
    std::atomic<bool> has_messages_{false};
    VcpuState state_ = VcpuState::Paused;
    std::atomic<uint64_t> exits_count_{0};
    std::array<std::atomic<uint64_t>, kExitKinds> exits_by_kind_{};
    std::atomic<uint64_t> run_ns_{0};
    std::atomic<uint32_t> throttle_{0};
    std::atomic<uint64_t> throttled_ns_{0};
    uint64_t unthrottled_ns_ = 0;  // run time not yet paid for with a sleep (vCPU thread only)
    uint32_t index_;
    std::thread thread_;
};

// Kicks every throttled vCPU once per period from a thread of its own, so a
// guest that never exits still reaches the throttle between runs. Setting 0
// (or destroying it) lifts the throttle.
class VcpuThrottle {
public:
    explicit VcpuThrottle(std::vector<VcpuThread*> vcpus) : vcpus_(std::move(vcpus)) {}
    ~VcpuThrottle() { set(0); }
    VcpuThrottle(const VcpuThrottle&) = delete;
    VcpuThrottle& operator=(const VcpuThrottle&) = delete;
    void set(uint32_t percent);
    [[nodiscard]] uint32_t percent() const { return percent_; }

private:
    std::vector<VcpuThread*> vcpus_;
    uint32_t percent_ = 0;
    std::mutex mu_;
    std::condition_variable cv_;
    bool stop_ = false;
    std::thread ticker_;
};

// A human-readable dump of a vCPU's registers (for crash reports).
std::string dump_registers(hv::Vcpu& vcpu);

}  // namespace popek::vmm
