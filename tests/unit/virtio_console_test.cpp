// virtio-console against a hand-built driver: guest output arrives on a
// pipe, host input on another pipe reaches the guest's receive buffers
// through a real event loop. Waits are on conditions, never sleeps.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <array>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "base/event_loop.hpp"
#include "virtio/console/device.hpp"

namespace popek::virtio::console {
namespace {

using memory::GuestMemory;

constexpr uint16_t kSize = 16;

class FakeInterrupt : public Interrupt {
public:
    void signal_queue(uint16_t) override { bump(); }
    void signal_config() override {
        std::lock_guard lock(mu);
        ++config;
    }
    void bump() {
        std::lock_guard lock(mu);
        cv.notify_all();
    }
    std::mutex mu;
    std::condition_variable cv;
    int config = 0;
};

struct Pipe {
    Pipe() { EXPECT_EQ(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0); }
    ~Pipe() {
        for (int fd : fds)
            if (fd >= 0) ::close(fd);
    }
    void close_write() {
        ::close(fds[1]);
        fds[1] = -1;
    }
    int fds[2] = {-1, -1};
};

class VirtioConsole : public ::testing::Test {
protected:
    void SetUp() override {
        memory::RamRange ranges[] = {{0, 2 << 20}};
        auto m = GuestMemory::create(ranges);
        ASSERT_TRUE(m.ok());
        mem_.emplace(std::move(m).value());
        auto l = base::EventLoop::create("console-test");
        ASSERT_TRUE(l.ok());
        loop_ = std::move(l).value();
        loop_->start();
    }
    void TearDown() override {
        if (dev_) loop_->run_sync([&] { dev_.reset(); });
        loop_->stop();
    }

    void start(State state = {}) {
        dev_ = std::make_unique<ConsoleDevice>(
            ConsoleOptions{"console0", input_.fds[0], output_.fds[1], 132, 43}, std::move(state));
        for (uint16_t q = 0; q < 2; ++q) {
            SplitQueue::State s;
            s.size = kSize;
            s.ready = true;
            s.desc_addr = base(q);
            s.avail_addr = base(q) + 0x1000;
            s.used_addr = base(q) + 0x2000;
            queues_.emplace_back(s);
            ASSERT_TRUE(queues_.back().activate(*mem_, kFeatureVersion1).ok());
        }
        base::Result<void> r;
        loop_->run_sync([&] { r = dev_->activate({*mem_, queues_, irq_, *loop_, kFeatureVersion1, {}}); });
        ASSERT_TRUE(r.ok()) << r.error().message;
    }
    static uint64_t base(uint16_t q) { return 0x10000 + 0x4000ull * q; }

    // A one-buffer chain on queue q.
    void add(uint16_t q, uint64_t addr, uint32_t len, bool write) {
        const uint16_t idx = next_desc_[q]++ % kSize;
        put(base(q) + 16ull * idx, addr);
        put(base(q) + 16ull * idx + 8, len);
        put(base(q) + 16ull * idx + 12, static_cast<uint16_t>(write ? 2 : 0));
        put(base(q) + 0x1000 + 4 + 2ull * (avail_[q] % kSize), idx);
        ++avail_[q];
        __atomic_store_n(reinterpret_cast<uint16_t*>(mem_->host_ptr(base(q) + 0x1002, 2)), avail_[q], __ATOMIC_RELEASE);
    }
    uint16_t used_idx(uint16_t q) {
        return __atomic_load_n(reinterpret_cast<const uint16_t*>(mem_->host_ptr(base(q) + 0x2002, 2)),
                               __ATOMIC_ACQUIRE);
    }
    uint32_t used_len(uint16_t q, uint16_t i) {
        uint32_t v;
        std::memcpy(&v, mem_->host_ptr(base(q) + 0x2008 + 8ull * i, 4), 4);
        return v;
    }
    void wait_used(uint16_t q, uint16_t n) {
        std::unique_lock lock(irq_.mu);
        ASSERT_TRUE(irq_.cv.wait_for(lock, std::chrono::seconds(20), [&] { return used_idx(q) >= n; }));
    }
    base::Result<void> kick(uint16_t q) {
        base::Result<void> r;
        loop_->run_sync([&] { r = dev_->process_queue(q); });
        return r;
    }
    std::string guest_string(uint64_t addr, size_t len) {
        auto s = mem_->span(addr, len);
        return {s.begin(), s.end()};
    }
    template <class T>
    void put(uint64_t gpa, T v) {
        ASSERT_TRUE(mem_->write_obj(gpa, v).ok());
    }

    std::optional<GuestMemory> mem_;
    std::unique_ptr<base::EventLoop> loop_;
    std::unique_ptr<ConsoleDevice> dev_;
    std::vector<SplitQueue> queues_;
    FakeInterrupt irq_;
    Pipe input_, output_;
    std::array<uint16_t, 2> next_desc_{}, avail_{};
};

TEST_F(VirtioConsole, OutputArrivesOnThePipe) {
    start();
    ASSERT_TRUE(mem_->write(0x100000, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>("hello "), 6)).ok());
    ASSERT_TRUE(mem_->write(0x100100, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>("world"), 5)).ok());
    add(kTransmitQueue, 0x100000, 6, false);
    add(kTransmitQueue, 0x100100, 5, false);
    ASSERT_TRUE(kick(kTransmitQueue).ok());
    EXPECT_EQ(used_idx(kTransmitQueue), 2);
    EXPECT_EQ(used_len(kTransmitQueue, 0), 0u);
    char buf[64] = {};
    EXPECT_EQ(::read(output_.fds[0], buf, sizeof buf), 11);
    EXPECT_EQ(std::string(buf), "hello world");
    EXPECT_EQ(dev_->metrics().bytes_written, 11u);
}

TEST_F(VirtioConsole, InputReachesAWaitingGuestBuffer) {
    start();
    add(kReceiveQueue, 0x100000, 64, true);
    ASSERT_TRUE(kick(kReceiveQueue).ok());
    ASSERT_EQ(::write(input_.fds[1], "ls -l\n", 6), 6);
    wait_used(kReceiveQueue, 1);
    EXPECT_EQ(used_len(kReceiveQueue, 0), 6u);
    EXPECT_EQ(guest_string(0x100000, 6), "ls -l\n");
    EXPECT_EQ(dev_->metrics().bytes_read, 6u);
}

TEST_F(VirtioConsole, InputWithoutABufferWaitsForOne) {
    start();
    ASSERT_EQ(::write(input_.fds[1], "abcdefgh", 8), 8);
    // Until the device has read the pipe (each run_sync is one turn of its loop).
    bool read_all = false;
    for (int turn = 0; turn < 100000 && !read_all; ++turn) {
        loop_->run_sync([&] { read_all = dev_->save().pending_input.size() == 8; });
    }
    ASSERT_TRUE(read_all);
    add(kReceiveQueue, 0x100000, 5, true);  // smaller than what is waiting
    add(kReceiveQueue, 0x100100, 5, true);
    ASSERT_TRUE(kick(kReceiveQueue).ok());
    wait_used(kReceiveQueue, 2);
    EXPECT_EQ(guest_string(0x100000, 5), "abcde");
    EXPECT_EQ(guest_string(0x100100, 3), "fgh");
    EXPECT_EQ(used_len(kReceiveQueue, 1), 3u);
}

TEST_F(VirtioConsole, RestoredPendingInputIsDelivered) {
    start(State{{'h', 'i'}});
    add(kReceiveQueue, 0x100000, 16, true);
    ASSERT_TRUE(kick(kReceiveQueue).ok());
    EXPECT_EQ(used_idx(kReceiveQueue), 1);
    EXPECT_EQ(guest_string(0x100000, 2), "hi");
}

TEST_F(VirtioConsole, InputStopsAtTheBoundUntilTheGuestTakesIt) {
    start();
    std::vector<uint8_t> chunk(4096, 'x');
    size_t written = 0;
    // Fill the device's buffer and the pipe behind it (both bounded).
    for (int turn = 0; turn < 100000; ++turn) {
        const ssize_t n = ::write(input_.fds[1], chunk.data(), chunk.size());
        if (n > 0) written += static_cast<size_t>(n);
        size_t pending = 0;
        loop_->run_sync([&] { pending = dev_->save().pending_input.size(); });
        int in_pipe = 0;
        ASSERT_EQ(::ioctl(input_.fds[0], FIONREAD, &in_pipe), 0);
        if (pending == InputBuffer::kCapacity && in_pipe > 0 && n < 0) break;
    }
    size_t pending = 0;
    loop_->run_sync([&] { pending = dev_->save().pending_input.size(); });
    EXPECT_EQ(pending, InputBuffer::kCapacity) << "never more than the bound";
    // The guest takes 64 KiB; the device reads the rest from the pipe.
    add(kReceiveQueue, 0x100000, InputBuffer::kCapacity, true);
    ASSERT_TRUE(kick(kReceiveQueue).ok());
    EXPECT_EQ(used_len(kReceiveQueue, 0), InputBuffer::kCapacity);
    int in_pipe = 1;
    for (int turn = 0; turn < 100000 && in_pipe > 0; ++turn) {
        loop_->run_sync([] {});
        ASSERT_EQ(::ioctl(input_.fds[0], FIONREAD, &in_pipe), 0);
    }
    ASSERT_EQ(in_pipe, 0) << "the device resumed reading its input";
    add(kReceiveQueue, 0x100000 + InputBuffer::kCapacity, 0x80000, true);
    ASSERT_TRUE(kick(kReceiveQueue).ok());
    std::unique_lock lock(irq_.mu);
    ASSERT_TRUE(irq_.cv.wait_for(lock, std::chrono::seconds(20), [&] {
        return used_idx(kReceiveQueue) >= 2 &&
               used_len(kReceiveQueue, 0) + used_len(kReceiveQueue, 1) == written;
    }));
}

TEST_F(VirtioConsole, ConfigSizeResizeAndEmergencyWrite) {
    start();
    std::array<uint8_t, 4> c{};
    dev_->read_config(0, c);
    EXPECT_EQ(c[0] | c[1] << 8, 132);
    EXPECT_EQ(c[2] | c[3] << 8, 43);
    dev_->set_size(200, 50);
    dev_->read_config(0, c);
    EXPECT_EQ(c[0] | c[1] << 8, 200);
    {
        std::lock_guard lock(irq_.mu);
        EXPECT_EQ(irq_.config, 1);
    }
    const uint32_t ch = '!';
    dev_->write_config(8, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&ch), 4));
    char buf[4] = {};
    EXPECT_EQ(::read(output_.fds[0], buf, sizeof buf), 1);
    EXPECT_EQ(buf[0], '!');
    EXPECT_NE(dev_->features() & kFeatureSize, 0u);
}

TEST_F(VirtioConsole, ClosedInputStillDeliversWhatWasRead) {
    start();
    ASSERT_EQ(::write(input_.fds[1], "bye", 3), 3);
    input_.close_write();
    add(kReceiveQueue, 0x100000, 16, true);
    ASSERT_TRUE(kick(kReceiveQueue).ok());
    wait_used(kReceiveQueue, 1);
    EXPECT_EQ(guest_string(0x100000, 3), "bye");
}

}  // namespace
}  // namespace popek::virtio::console
