#include "vmm/vcpu_thread.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "devices/legacy/i8042.hpp"

namespace popek::vmm {
namespace {

using namespace std::chrono_literals;
// Only a bound for waits that a bug would make endless; passing tests never get near it.
constexpr auto kTimeout = 10s;

// Bounded polling on state that has no condition variable to wait on.
template <class Pred>
bool eventually(Pred pred) {
    auto deadline = std::chrono::steady_clock::now() + kTimeout;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > deadline) return pred();
        std::this_thread::yield();
    }
    return true;
}

// One thing the scripted guest does.
struct Step {
    hv::VcpuExit exit;
    std::vector<uint8_t> data;         // size*count bytes: the write payload or the read buffer
    std::vector<Step> batched;         // port writes the backend queued during this run
    std::optional<std::string> error;  // run() fails with this message instead

    static Step io_write(uint64_t port, std::vector<uint8_t> bytes, uint32_t count = 1) {
        Step s;
        s.exit.kind = hv::ExitKind::Io;
        s.exit.addr = port;
        s.exit.count = count;
        s.exit.size = static_cast<uint32_t>(bytes.size()) / count;
        s.exit.is_write = true;
        s.data = std::move(bytes);
        return s;
    }
    static Step io_read(uint64_t port, uint32_t size, uint32_t count = 1) {
        Step s;
        s.exit.kind = hv::ExitKind::Io;
        s.exit.addr = port;
        s.exit.size = size;
        s.exit.count = count;
        s.data.assign(size_t{size} * count, 0x00);
        return s;
    }
    static Step mmio(Step s) {
        s.exit.kind = hv::ExitKind::Mmio;
        return s;
    }
    static Step of(hv::ExitKind kind, uint64_t detail = 0) {
        Step s;
        s.exit.kind = kind;
        s.exit.detail = detail;
        return s;
    }
    static Step failure(std::string message) {
        Step s;
        s.error = std::move(message);
        return s;
    }
};

// What the fake vCPU and the test share; outlives the fake (which the VcpuThread owns).
struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Step> script;
    bool kick = false;     // request_exit() pending, sticky like KVM's immediate_exit
    bool in_run = false;   // inside run()
    bool blocked = false;  // inside run(), waiting for a kick or a new step
    uint64_t runs = 0, clears = 0, kicks = 0;
    std::thread::id run_thread;
    std::vector<std::vector<uint8_t>> completed_reads;  // read buffers as the VMM filled them
    bool fail_regs = false;
    // Holds the next request_exit() back until clear_exit_request() has been
    // called more than `delay_after_clears` times: a kick landing after its
    // message was drained.
    bool delay_next_kick = false;
    uint64_t delay_after_clears = 0;
    bool delayed_kick_delivered = false;
    std::atomic<bool> thread_exited{false};
    std::atomic<bool> vcpu_destroyed{false};

    void push(Step s) {
        {
            std::lock_guard lock(mu);
            script.push_back(std::move(s));
        }
        cv.notify_all();
    }
    template <class Pred>
    bool wait(Pred pred) {
        std::unique_lock lock(mu);
        return cv.wait_for(lock, kTimeout, pred);
    }
    // The guest is parked in run() with nothing left to do.
    bool wait_idle() {
        return wait([&] { return blocked && !kick && script.empty(); });
    }
    // Runs `f` under the lock at a moment the guest is parked in run(): the
    // vCPU thread cannot move until `f` returns.
    template <class F>
    void when_idle(F f) {
        std::unique_lock lock(mu);
        ASSERT_TRUE(cv.wait_for(lock, kTimeout, [&] { return blocked && !kick && script.empty(); }));
        f();
    }
    // What request_exit() does, without a message behind it.
    void kick_now() {
        {
            std::lock_guard lock(mu);
            kick = true;
        }
        cv.notify_all();
    }
    uint64_t run_count() {
        std::lock_guard lock(mu);
        return runs;
    }
};

// Marks the vCPU thread's end: thread-local destructors run before join() returns.
struct ThreadExitFlag {
    std::shared_ptr<Shared> s;
    ~ThreadExitFlag() {
        if (s) s->thread_exited.store(true);
    }
};

class FakeVcpu final : public hv::Vcpu {
public:
    FakeVcpu(std::shared_ptr<Shared> s, uint32_t index) : s_(std::move(s)), index_(index) {}
    ~FakeVcpu() override { s_->vcpu_destroyed.store(true); }

    [[nodiscard]] uint32_t index() const override { return index_; }

    base::Result<hv::VcpuExit> run() override {
        note_vcpu_thread();
        std::unique_lock lock(s_->mu);
        s_->runs++;
        s_->in_run = true;
        s_->run_thread = std::this_thread::get_id();
        // Like KVM, a read exit completes when the next run starts.
        if (pending_read_) s_->completed_reads.push_back(current_.data);
        pending_read_ = false;
        s_->cv.notify_all();
        for (;;) {
            if (s_->kick) return leave(hv::VcpuExit{});  // Interrupted
            if (!s_->script.empty()) {
                current_ = std::move(s_->script.front());
                s_->script.pop_front();
                if (current_.error) {
                    s_->in_run = false;
                    s_->cv.notify_all();
                    return base::Error{*current_.error};
                }
                hv::VcpuExit e = current_.exit;
                e.data = current_.data.empty() ? nullptr : current_.data.data();
                pending_read_ = !e.is_write && (e.kind == hv::ExitKind::Io || e.kind == hv::ExitKind::Mmio);
                batched_ = std::move(current_.batched);
                return leave(e);
            }
            s_->blocked = true;
            s_->cv.notify_all();
            s_->cv.wait(lock, [&] { return s_->kick || !s_->script.empty(); });
            s_->blocked = false;
        }
    }

    void request_exit() override {
        std::unique_lock lock(s_->mu);
        s_->kicks++;
        if (s_->delay_next_kick) {
            s_->delay_next_kick = false;
            uint64_t after = s_->delay_after_clears;
            s_->cv.wait_for(lock, kTimeout, [&] { return s_->clears > after; });
            s_->delayed_kick_delivered = true;
        }
        s_->kick = true;
        s_->cv.notify_all();
    }

    void clear_exit_request() override {
        note_vcpu_thread();  // the thread clears requests before its first run, even if never resumed
        std::lock_guard lock(s_->mu);
        s_->kick = false;
        s_->clears++;
        s_->cv.notify_all();
    }

    base::Result<hv::Regs> get_regs() override {
        std::lock_guard lock(s_->mu);
        if (s_->fail_regs) return base::Error{"no registers"};
        hv::Regs r{};
        r.rip = 0xfffffff0;
        r.rax = 0x1234abcd;
        r.rflags = 0x2;
        return r;
    }
    base::Result<void> set_regs(const hv::Regs&) override { return {}; }
    base::Result<hv::Sregs> get_sregs() override {
        hv::Sregs s{};
        s.cr0 = 0x60000010;
        s.cs.selector = 0xf000;
        return s;
    }
    base::Result<void> set_sregs(const hv::Sregs&) override { return {}; }
    base::Result<void> set_cpuid(std::span<const hv::CpuidEntry>) override { return {}; }
    base::Result<void> set_msrs(std::span<const hv::MsrEntry>) override { return {}; }
    base::Result<void> get_msrs(std::span<hv::MsrEntry>) override { return {}; }
    base::Result<void> reset_fpu() override { return {}; }
    base::Result<void> setup_lapic_lints() override { return {}; }

    base::Result<hv::VcpuState> save_state() override { return state_; }
    base::Result<void> restore_state(const hv::VcpuState& s) override {
        state_ = s;
        return {};
    }
    void drain_batched_writes(const std::function<void(const hv::VcpuExit&)>& sink) override {
        for (auto& b : batched_) {
            hv::VcpuExit e = b.exit;
            e.data = b.data.data();
            sink(e);
        }
        batched_.clear();
    }

private:
    // Only the vCPU thread calls run() and clear_exit_request(): learn when it ends.
    void note_vcpu_thread() {
        thread_local ThreadExitFlag flag;
        if (!flag.s) flag.s = s_;
    }
    hv::VcpuExit leave(hv::VcpuExit e) {
        s_->in_run = false;
        s_->cv.notify_all();
        return e;
    }

    std::shared_ptr<Shared> s_;
    uint32_t index_;
    // Touched only on the vCPU thread.
    Step current_;
    bool pending_read_ = false;
    std::vector<Step> batched_;
    hv::VcpuState state_;
};

// A device that logs accesses (from the vCPU thread) for the test to read.
class LoggingDevice final : public devices::BusDevice {
public:
    struct Access {
        bool write;
        uint64_t offset;
        std::vector<uint8_t> data;
        bool operator==(const Access&) const = default;
    };
    explicit LoggingDevice(std::string name, std::vector<std::string>* order = nullptr,
                           std::mutex* order_mu = nullptr)
        : name_(std::move(name)), order_(order), order_mu_(order_mu) {}

    void read(uint64_t offset, std::span<uint8_t> data) override {
        for (size_t i = 0; i < data.size(); i++) data[i] = static_cast<uint8_t>(0xa0 + offset + i);
        record({false, offset, {data.begin(), data.end()}});
    }
    void write(uint64_t offset, std::span<const uint8_t> data) override {
        record({true, offset, {data.begin(), data.end()}});
    }
    std::vector<Access> log() {
        std::lock_guard lock(mu_);
        return log_;
    }

private:
    void record(Access a) {
        {
            std::lock_guard lock(mu_);
            log_.push_back(std::move(a));
        }
        if (order_ != nullptr) {
            std::lock_guard lock(*order_mu_);
            order_->push_back(name_);
        }
    }
    std::string name_;
    std::vector<std::string>* order_;
    std::mutex* order_mu_;
    std::mutex mu_;
    std::vector<Access> log_;
};

class RecordingExits final : public devices::ExitHandler {
public:
    void request_exit(devices::GuestExit exit) override {
        {
            std::lock_guard lock(mu_);
            exits_.push_back(exit);
        }
        cv_.notify_all();
        if (on_exit) on_exit(exit);
    }
    bool wait_count(size_t n) {
        std::unique_lock lock(mu_);
        return cv_.wait_for(lock, kTimeout, [&] { return exits_.size() >= n; });
    }
    std::vector<devices::GuestExit> exits() {
        std::lock_guard lock(mu_);
        return exits_;
    }
    std::function<void(const devices::GuestExit&)> on_exit;  // set before the vCPU starts

private:
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<devices::GuestExit> exits_;
};

// The buses, their usual devices and a VcpuThread around a FakeVcpu.
struct Harness {
    explicit Harness(uint32_t index = 0)
        : t(std::make_unique<VcpuThread>(std::make_unique<FakeVcpu>(s, index), pio, mmio, exits)) {
        EXPECT_TRUE(pio.insert(0x3f8, 8, &com, "com").ok());
        EXPECT_TRUE(pio.insert(0x80, 1, &post, "post").ok());
        EXPECT_TRUE(mmio.insert(0xd0000000, 0x1000, &mmio_dev, "mmio-dev").ok());
    }
    // Runs nothing on the vCPU thread, but returns only once the thread has
    // looked at its messages: everything posted before has been handled.
    std::thread::id barrier() {
        std::thread::id id;
        auto r = t->run_on_vcpu([&](hv::Vcpu&) -> base::Result<void> {
            id = std::this_thread::get_id();
            return {};
        });
        EXPECT_TRUE(r.ok());
        return id;
    }
    // Bounded: a vCPU that never gets there fails the test rather than hanging it.
    [[nodiscard]] bool reach(VcpuState want) {
        if (!eventually([&] { return t->state() == want; })) return false;
        t->wait_for(want);  // the blocking API agrees, and returns at once
        return true;
    }
    void start_running() {
        t->start();
        t->resume();
        ASSERT_TRUE(s->wait_idle());
        ASSERT_EQ(t->state(), VcpuState::Running);
    }

    std::shared_ptr<Shared> s = std::make_shared<Shared>();
    std::vector<std::string> order;
    std::mutex order_mu;
    LoggingDevice com{"com", &order, &order_mu};
    LoggingDevice post{"post", &order, &order_mu};
    LoggingDevice mmio_dev{"mmio"};
    devices::Bus pio{"pio"};
    devices::Bus mmio{"mmio"};
    RecordingExits exits;
    std::unique_ptr<VcpuThread> t;  // last: destroyed (and joined) first
};

TEST(VcpuThread, StartsPausedAndDoesNotRunUntilResumed) {
    Harness h;
    h.t->start();
    EXPECT_EQ(h.t->state(), VcpuState::Paused);
    std::thread::id vcpu_thread = h.barrier();
    EXPECT_NE(vcpu_thread, std::this_thread::get_id());
    EXPECT_EQ(h.s->run_count(), 0u);
    EXPECT_EQ(h.t->state(), VcpuState::Paused);
    h.t->wait_for(VcpuState::Paused);  // returns at once
}

TEST(VcpuThread, ResumeRunsTheGuest) {
    Harness h;
    h.t->start();
    h.t->resume();
    ASSERT_TRUE(h.reach(VcpuState::Running));
    EXPECT_EQ(h.t->state(), VcpuState::Running);
    EXPECT_TRUE(h.s->wait([&] { return h.s->runs >= 1 && h.s->blocked; }));
    h.s->push(Step::io_write(0x3f8, {'A'}));
    ASSERT_TRUE(h.s->wait_idle());
    EXPECT_EQ(h.com.log(), std::vector<LoggingDevice::Access>({{true, 0, {'A'}}}));
}

TEST(VcpuThread, PauseStopsCallingRun) {
    Harness h;
    h.start_running();
    h.t->pause();
    ASSERT_TRUE(h.reach(VcpuState::Paused));
    EXPECT_EQ(h.t->state(), VcpuState::Paused);
    uint64_t runs = 0;
    {
        std::lock_guard lock(h.s->mu);
        EXPECT_FALSE(h.s->in_run) << "Paused must mean off the CPU";
        runs = h.s->runs;
    }
    // The guest has work, but a paused vCPU must not run it.
    h.s->push(Step::io_write(0x3f9, {0x01}));
    h.barrier();
    h.barrier();
    EXPECT_EQ(h.s->run_count(), runs);
    EXPECT_TRUE(h.com.log().empty());
    {
        std::lock_guard lock(h.s->mu);
        EXPECT_EQ(h.s->script.size(), 1u);
    }
    h.t->resume();
    ASSERT_TRUE(h.s->wait_idle());
    EXPECT_EQ(h.com.log(), std::vector<LoggingDevice::Access>({{true, 1, {0x01}}}));
    EXPECT_EQ(h.t->state(), VcpuState::Running);
}

TEST(VcpuThread, RunOnVcpuExecutesOnTheVcpuThread) {
    Harness h;
    h.start_running();
    std::thread::id run_thread;
    {
        std::lock_guard lock(h.s->mu);
        run_thread = h.s->run_thread;
    }
    // While running: the call must take the vCPU out of run() (the fake blocks there).
    std::thread::id call_thread;
    auto r = h.t->run_on_vcpu([&](hv::Vcpu& v) -> base::Result<void> {
        call_thread = std::this_thread::get_id();
        auto regs = v.get_regs();
        if (!regs || regs->rip != 0xfffffff0) return base::Error{"wrong vCPU"};
        return {};
    });
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(call_thread, run_thread);
    EXPECT_NE(call_thread, std::this_thread::get_id());
    // It keeps running afterwards.
    EXPECT_EQ(h.t->state(), VcpuState::Running);
    ASSERT_TRUE(h.s->wait_idle());

    // While paused, too, and errors come back to the caller.
    h.t->pause();
    ASSERT_TRUE(h.reach(VcpuState::Paused));
    auto err = h.t->run_on_vcpu([&](hv::Vcpu&) -> base::Result<void> {
        call_thread = std::this_thread::get_id();
        return base::Error{"from the vCPU"};
    });
    ASSERT_FALSE(err.ok());
    EXPECT_EQ(err.error().message, "from the vCPU");
    EXPECT_EQ(call_thread, run_thread);
    EXPECT_EQ(h.t->state(), VcpuState::Paused);
}

TEST(VcpuThread, RunOnVcpuBeforeStartRunsOnTheCaller) {
    Harness h;
    std::thread::id call_thread;
    auto r = h.t->run_on_vcpu([&](hv::Vcpu&) -> base::Result<void> {
        call_thread = std::this_thread::get_id();
        return {};
    });
    EXPECT_TRUE(r.ok());
    EXPECT_EQ(call_thread, std::this_thread::get_id());
    h.t->wait_for(VcpuState::Running);  // never started: returns rather than hangs
    EXPECT_EQ(h.s->run_count(), 0u);
}

TEST(VcpuThread, DeviceOnTheVcpuThreadMayCallRunOnVcpu) {
    // A device calling back into its own vCPU must not wait on itself.
    struct Reentrant final : devices::BusDevice {
        VcpuThread* t = nullptr;
        std::atomic<bool> done{false};
        std::thread::id id;
        void read(uint64_t, std::span<uint8_t>) override {}
        void write(uint64_t, std::span<const uint8_t>) override {
            auto r = t->run_on_vcpu([&](hv::Vcpu&) -> base::Result<void> {
                id = std::this_thread::get_id();
                return {};
            });
            done.store(r.ok());
        }
    } dev;
    Harness h;
    ASSERT_TRUE(h.pio.insert(0x500, 1, &dev, "reentrant").ok());
    dev.t = h.t.get();
    h.start_running();
    h.s->push(Step::io_write(0x500, {1}));
    ASSERT_TRUE(h.s->wait_idle());
    EXPECT_TRUE(dev.done.load());
    std::lock_guard lock(h.s->mu);
    EXPECT_EQ(dev.id, h.s->run_thread);
}

TEST(VcpuThread, StopEndsTheThreadAndTheDestructorJoins) {
    Harness h;
    h.start_running();
    h.t->stop();
    ASSERT_TRUE(h.reach(VcpuState::Stopped));
    EXPECT_EQ(h.t->state(), VcpuState::Stopped);
    // Requests after stop are refused or ignored.
    h.t->resume();
    h.t->pause();
    EXPECT_EQ(h.t->state(), VcpuState::Stopped);
    auto r = h.t->run_on_vcpu([](hv::Vcpu&) -> base::Result<void> { return {}; });
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("stopped"), std::string::npos) << r.error().message;

    h.t.reset();
    EXPECT_TRUE(h.s->thread_exited.load()) << "the destructor must join the vCPU thread";
    EXPECT_TRUE(h.s->vcpu_destroyed.load());
}

TEST(VcpuThread, DestructorStopsAndJoinsARunningThread) {
    Harness h;
    h.start_running();  // parked inside run()
    h.t.reset();
    EXPECT_TRUE(h.s->thread_exited.load());
}

TEST(VcpuThread, DestructorStopsAndJoinsAPausedThread) {
    Harness h;
    h.t->start();
    h.barrier();
    h.t.reset();
    EXPECT_TRUE(h.s->thread_exited.load());
    EXPECT_EQ(h.s->run_count(), 0u);
}

TEST(VcpuThread, IoExitsAreDispatchedToThePortBus) {
    Harness h;
    h.s->push(Step::io_write(0x3f9, {0xab}));
    h.s->push(Step::io_write(0x3fa, {0x34, 0x12}));
    h.s->push(Step::io_read(0x3fd, 1));
    h.s->push(Step::io_read(0x3f8, 4));
    h.s->push(Step::io_read(0x500, 2));           // nothing there
    h.s->push(Step::io_write(0x501, {0x55}));     // nothing there: dropped
    h.s->push(Step::io_write(0xd0000000, {0x9}));  // an MMIO address, but a port exit
    h.start_running();

    EXPECT_EQ(h.com.log(), std::vector<LoggingDevice::Access>({
                               {true, 1, {0xab}},
                               {true, 2, {0x34, 0x12}},
                               {false, 5, {0xa5}},
                               {false, 0, {0xa0, 0xa1, 0xa2, 0xa3}},
                           }));
    EXPECT_TRUE(h.mmio_dev.log().empty());
    std::lock_guard lock(h.s->mu);
    ASSERT_EQ(h.s->completed_reads.size(), 3u);
    EXPECT_EQ(h.s->completed_reads[0], std::vector<uint8_t>({0xa5}));
    EXPECT_EQ(h.s->completed_reads[1], std::vector<uint8_t>({0xa0, 0xa1, 0xa2, 0xa3}));
    EXPECT_EQ(h.s->completed_reads[2], std::vector<uint8_t>({0xff, 0xff}));  // floats high
}

TEST(VcpuThread, StringIoRepeatsTheAccessCountTimes) {
    Harness h;
    h.s->push(Step::io_write(0x3f8, {'a', 'b', 'c'}, 3));
    h.s->push(Step::io_read(0x3fc, 2, 2));  // 2 x 16-bit
    h.s->push(Step::io_read(0x600, 1, 3));  // 3 x unmapped
    h.start_running();
    EXPECT_EQ(h.com.log(), std::vector<LoggingDevice::Access>({
                               {true, 0, {'a'}},
                               {true, 0, {'b'}},
                               {true, 0, {'c'}},
                               {false, 4, {0xa4, 0xa5}},
                               {false, 4, {0xa4, 0xa5}},
                           }));
    std::lock_guard lock(h.s->mu);
    ASSERT_EQ(h.s->completed_reads.size(), 2u);
    EXPECT_EQ(h.s->completed_reads[0], std::vector<uint8_t>({0xa4, 0xa5, 0xa4, 0xa5}));
    EXPECT_EQ(h.s->completed_reads[1], std::vector<uint8_t>({0xff, 0xff, 0xff}));
}

TEST(VcpuThread, MmioExitsAreDispatchedToTheMmioBus) {
    Harness h;
    h.s->push(Step::mmio(Step::io_write(0xd0000010, {1, 2, 3, 4})));
    h.s->push(Step::mmio(Step::io_read(0xd0000ff8, 8)));
    h.s->push(Step::mmio(Step::io_read(0x3f8, 1)));  // a port number, but an MMIO exit: unmapped
    h.start_running();
    EXPECT_EQ(h.mmio_dev.log(),
              std::vector<LoggingDevice::Access>({
                  {true, 0x10, {1, 2, 3, 4}},
                  {false, 0xff8, {0x98, 0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9e, 0x9f}},
              }));
    EXPECT_TRUE(h.com.log().empty());
    std::lock_guard lock(h.s->mu);
    ASSERT_EQ(h.s->completed_reads.size(), 2u);
    EXPECT_EQ(h.s->completed_reads[1], std::vector<uint8_t>({0xff}));
}

TEST(VcpuThread, BatchedWritesReachDevicesBeforeTheExitItself) {
    Harness h;
    Step s = Step::io_write(0x3f8, {'x'});
    s.batched.push_back(Step::io_write(0x80, {0x11}));
    s.batched.push_back(Step::io_write(0x80, {0x22}));
    h.s->push(std::move(s));
    // Batched writes also arrive with an exit that has nothing to emulate.
    Step quiet = Step::of(hv::ExitKind::Interrupted);
    quiet.batched.push_back(Step::io_write(0x80, {0x33}));
    h.s->push(std::move(quiet));
    h.start_running();
    {
        std::lock_guard lock(h.order_mu);
        EXPECT_EQ(h.order, std::vector<std::string>({"post", "post", "com", "post"}));
    }
    EXPECT_EQ(h.post.log(), std::vector<LoggingDevice::Access>({
                                {true, 0, {0x11}},
                                {true, 0, {0x22}},
                                {true, 0, {0x33}},
                            }));
}

TEST(VcpuThread, ExitCountCountsEveryExitRunReturned) {
    Harness h;
    for (int i = 0; i < 5; i++) h.s->push(Step::io_write(0x3ff, {static_cast<uint8_t>(i)}));
    h.start_running();
    h.s->when_idle([&] {
        // The fake is parked in one more run() that has not returned.
        EXPECT_EQ(h.t->exit_count(), h.s->runs - 1);
        EXPECT_GE(h.t->exit_count(), 5u);
    });
}

TEST(VcpuThread, ShutdownReportsATripleFaultCrashWithRegisters) {
    Harness h(2);
    h.s->push(Step::of(hv::ExitKind::Shutdown));
    h.s->push(Step::io_write(0x3f8, {'!'}));  // what a dead guest must not get to do
    h.t->start();
    h.t->resume();
    ASSERT_TRUE(h.exits.wait_count(1));
    auto exits = h.exits.exits();
    ASSERT_EQ(exits.size(), 1u);
    EXPECT_EQ(exits[0].kind, devices::GuestExitKind::Crash);
    const std::string& d = exits[0].detail;
    EXPECT_NE(d.find("triple fault"), std::string::npos) << d;
    EXPECT_NE(d.find("vCPU 2"), std::string::npos) << d;
    EXPECT_NE(d.find("rip=00000000fffffff0"), std::string::npos) << d;
    EXPECT_NE(d.find("rax=000000001234abcd"), std::string::npos) << d;
    EXPECT_NE(d.find("cr0=0000000060000010"), std::string::npos) << d;

    // The crashed vCPU takes itself off the CPU until the VMM decides.
    ASSERT_TRUE(eventually([&] { return h.t->state() == VcpuState::Paused; }));
    h.barrier();
    EXPECT_TRUE(h.com.log().empty());
    std::lock_guard lock(h.s->mu);
    EXPECT_EQ(h.s->script.size(), 1u);
    EXPECT_FALSE(h.s->in_run);
    EXPECT_EQ(h.exits.exits().size(), 1u);
}

TEST(VcpuThread, CrashReportSurvivesUnreadableRegisters) {
    Harness h;
    h.s->fail_regs = true;
    h.s->push(Step::of(hv::ExitKind::Shutdown));
    h.t->start();
    h.t->resume();
    ASSERT_TRUE(h.exits.wait_count(1));
    const std::string d = h.exits.exits()[0].detail;
    EXPECT_NE(d.find("triple fault"), std::string::npos) << d;
    EXPECT_NE(d.find("registers unavailable"), std::string::npos) << d;
}

TEST(VcpuThread, HaltInternalErrorsAndRunFailuresAreCrashes) {
    Harness h;
    h.s->push(Step::of(hv::ExitKind::Halt));
    h.s->push(Step::of(hv::ExitKind::InternalError, 0x2a));
    h.s->push(Step::failure("KVM_RUN: Bad address"));
    h.t->start();
    for (size_t n = 1; n <= 3; n++) {
        SCOPED_TRACE(n);
        h.t->resume();
        ASSERT_TRUE(h.exits.wait_count(n));
        ASSERT_TRUE(eventually([&] { return h.t->state() == VcpuState::Paused; }));
        h.barrier();  // settled: the crash's own pause is done
    }
    auto exits = h.exits.exits();
    ASSERT_EQ(exits.size(), 3u);
    for (const auto& e : exits) {
        EXPECT_EQ(e.kind, devices::GuestExitKind::Crash);
        EXPECT_NE(e.detail.find("rip="), std::string::npos) << e.detail;
    }
    EXPECT_NE(exits[0].detail.find("HLT"), std::string::npos) << exits[0].detail;
    EXPECT_NE(exits[1].detail.find("internal error 0x2a"), std::string::npos) << exits[1].detail;
    EXPECT_NE(exits[2].detail.find("KVM_RUN: Bad address"), std::string::npos) << exits[2].detail;
}

TEST(VcpuThread, ResetAndPowerOffExitsReachTheExitHandler) {
    Harness h;
    h.s->push(Step::of(hv::ExitKind::Reset));
    h.s->push(Step::of(hv::ExitKind::PowerOff));
    h.s->push(Step::of(hv::ExitKind::Interrupted));  // nothing to do, not an exit for the VMM
    h.start_running();
    auto exits = h.exits.exits();
    ASSERT_EQ(exits.size(), 2u);
    EXPECT_EQ(exits[0].kind, devices::GuestExitKind::Reset);
    EXPECT_EQ(exits[1].kind, devices::GuestExitKind::PowerOff);
    // Stopping the vCPUs is the exit handler's call, not the vCPU thread's.
    EXPECT_EQ(h.t->state(), VcpuState::Running);
}

TEST(VcpuThread, ExitHandlerMayPauseTheVcpuFromItsOwnThread) {
    // What Machine does: a guest-requested reset pauses every vCPU, including
    // the one whose port write asked for it.
    Harness h;
    devices::I8042 kbd(h.exits);
    ASSERT_TRUE(h.pio.insert(0x60, 5, &kbd, "i8042").ok());
    h.exits.on_exit = [&](const devices::GuestExit&) { h.t->pause(); };
    h.s->push(Step::io_write(0x64, {0xfe}));
    h.s->push(Step::io_write(0x3f8, {'!'}));
    h.t->start();
    h.t->resume();
    ASSERT_TRUE(h.exits.wait_count(1));
    ASSERT_TRUE(h.reach(VcpuState::Paused));
    h.barrier();
    auto exits = h.exits.exits();
    ASSERT_EQ(exits.size(), 1u);
    EXPECT_EQ(exits[0].kind, devices::GuestExitKind::Reset);
    EXPECT_EQ(h.t->state(), VcpuState::Paused);
    EXPECT_TRUE(h.com.log().empty()) << "no guest instruction may run after the reset request";
    h.t.reset();  // before `kbd` goes
}

TEST(VcpuThread, KickWithoutAMessageLetsTheGuestContinue) {
    Harness h;
    h.start_running();
    uint64_t runs = h.s->run_count();
    // A bare request_exit(): run() returns Interrupted and keeps doing so
    // until someone clears the request, as KVM's immediate_exit does.
    h.s->kick_now();
    ASSERT_TRUE(h.s->wait_idle()) << "the vCPU thread must clear a stale kick and run again";
    EXPECT_LE(h.s->run_count() - runs, 3u);
    h.s->push(Step::io_write(0x3f8, {'k'}));
    ASSERT_TRUE(h.s->wait_idle());
    EXPECT_EQ(h.com.log(), std::vector<LoggingDevice::Access>({{true, 0, {'k'}}}));
}

TEST(VcpuThread, KickArrivingAfterItsMessageWasDrainedDoesNotSpin) {
    Harness h;
    h.start_running();
    h.t->pause();
    ASSERT_TRUE(h.reach(VcpuState::Paused));
    h.barrier();
    uint64_t runs = 0;
    {
        std::lock_guard lock(h.s->mu);
        runs = h.s->runs;
        // The resume's kick lands only after the thread has drained the
        // resume message (cleared the request once more).
        h.s->delay_next_kick = true;
        h.s->delay_after_clears = h.s->clears;
    }
    h.t->resume();
    ASSERT_TRUE(h.s->wait([&] { return h.s->delayed_kick_delivered && h.s->blocked && !h.s->kick; }))
        << "a stale kick must be cleared, not leave run() failing forever";
    {
        std::lock_guard lock(h.s->mu);
        // One run() that saw the stale kick, and the one parked now.
        EXPECT_GE(h.s->runs - runs, 1u);
        EXPECT_LE(h.s->runs - runs, 3u);
    }
    EXPECT_EQ(h.t->state(), VcpuState::Running);
    h.s->push(Step::io_write(0x3f8, {'r'}));
    ASSERT_TRUE(h.s->wait_idle());
    EXPECT_EQ(h.com.log(), std::vector<LoggingDevice::Access>({{true, 0, {'r'}}}));
}

TEST(VcpuThread, ManyPauseResumeCyclesStayResponsive) {
    Harness h;
    h.start_running();
    for (int i = 0; i < 200; i++) {
        h.t->pause();
        ASSERT_TRUE(h.reach(VcpuState::Paused));
        h.t->resume();
        ASSERT_TRUE(h.reach(VcpuState::Running));
    }
    ASSERT_TRUE(h.s->wait_idle());
    // Each cycle costs at most a couple of run() calls; a kick that is never
    // cleared would cost unboundedly many.
    EXPECT_LE(h.s->run_count(), 1 + 200u * 3);
    h.s->push(Step::io_write(0x3f8, {'z'}));
    ASSERT_TRUE(h.s->wait_idle());
    EXPECT_EQ(h.com.log().size(), 1u);
}

}  // namespace
}  // namespace popek::vmm
