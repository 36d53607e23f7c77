// virtio-rng against a hand-built driver: buffers come back full of random
// bytes, capped per request.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "base/event_loop.hpp"
#include "virtio/rng/device.hpp"

namespace popek::virtio::rng {
namespace {

using memory::GuestMemory;

constexpr uint16_t kSize = 16;
constexpr uint64_t kDesc = 0x1000, kAvail = 0x2000, kUsed = 0x3000;

class FakeInterrupt : public Interrupt {
public:
    void signal_queue(uint16_t) override { ++signals; }
    void signal_config() override {}
    int signals = 0;
};

class VirtioRng : public ::testing::Test {
protected:
    void SetUp() override {
        memory::RamRange ranges[] = {{0, 4 << 20}};
        auto m = GuestMemory::create(ranges);
        ASSERT_TRUE(m.ok());
        mem_.emplace(std::move(m).value());
        auto l = base::EventLoop::create("rng-test");  // not started: everything runs on this thread
        ASSERT_TRUE(l.ok());
        loop_ = std::move(l).value();
        SplitQueue::State s;
        s.size = kSize;
        s.ready = true;
        s.desc_addr = kDesc;
        s.avail_addr = kAvail;
        s.used_addr = kUsed;
        queues_.emplace_back(s);
        ASSERT_TRUE(queues_[0].activate(*mem_, kFeatureVersion1).ok());
        ASSERT_TRUE(dev_.activate({*mem_, queues_, irq_, *loop_, kFeatureVersion1, {}}).ok());
    }

    // One chain of buffers (addr, len, device-writable).
    void add(const std::vector<std::tuple<uint64_t, uint32_t, bool>>& bufs) {
        const auto head = static_cast<uint16_t>(next_desc_ % kSize);
        for (size_t i = 0; i < bufs.size(); ++i) {
            const auto idx = static_cast<uint16_t>((next_desc_ + i) % kSize);
            const auto [addr, len, write] = bufs[i];
            const auto flags = static_cast<uint16_t>((write ? 2 : 0) | (i + 1 < bufs.size() ? 1 : 0));
            put(kDesc + 16ull * idx, addr);
            put(kDesc + 16ull * idx + 8, len);
            put(kDesc + 16ull * idx + 12, flags);
            put(kDesc + 16ull * idx + 14, static_cast<uint16_t>((idx + 1) % kSize));
        }
        next_desc_ += bufs.size();
        put(kAvail + 4 + 2ull * (avail_ % kSize), head);
        put(kAvail + 2, ++avail_);
    }
    uint32_t used_len(uint16_t i) { return get<uint32_t>(kUsed + 8 + 8ull * i); }
    uint16_t used_idx() { return get<uint16_t>(kUsed + 2); }

    template <class T>
    void put(uint64_t gpa, T v) {
        ASSERT_TRUE(mem_->write_obj(gpa, v).ok());
    }
    template <class T>
    T get(uint64_t gpa) {
        T v{};
        EXPECT_TRUE(mem_->read(gpa, {reinterpret_cast<uint8_t*>(&v), sizeof v}).ok());
        return v;
    }

    std::optional<GuestMemory> mem_;
    std::unique_ptr<base::EventLoop> loop_;
    std::vector<SplitQueue> queues_;
    FakeInterrupt irq_;
    RngDevice dev_{"rng0"};
    size_t next_desc_ = 0;
    uint16_t avail_ = 0;
};

TEST_F(VirtioRng, FillsEveryWritableByte) {
    add({{0x10000, 100, true}, {0x20000, 4000, true}});
    add({{0x30000, 1, true}});
    ASSERT_TRUE(dev_.process_queue(0).ok());
    EXPECT_EQ(used_idx(), 2);
    EXPECT_EQ(used_len(0), 4100u);
    EXPECT_EQ(used_len(1), 1u);
    EXPECT_EQ(irq_.signals, 1) << "one interrupt for the batch";
    auto a = mem_->span(0x20000, 4000);
    EXPECT_FALSE(std::all_of(a.begin(), a.end(), [](uint8_t b) { return b == 0; }));
    // 4000 random bytes: each value should turn up (P(a value is missing) ~ 256 * e^-15.6).
    std::vector<int> seen(256);
    for (uint8_t b : a) seen[b]++;
    EXPECT_LT(std::count(seen.begin(), seen.end(), 0), 4);
    EXPECT_EQ(dev_.metrics().requests, 2u);
    EXPECT_EQ(dev_.metrics().bytes_read, 4101u);
}

TEST_F(VirtioRng, CapsARequestAndLeavesTheRestUntouched) {
    const uint32_t big = 2 * kMaxRequestBytes;
    std::fill_n(mem_->span(0x100000, big).begin(), big, uint8_t{0});
    add({{0x100000, big, true}});
    ASSERT_TRUE(dev_.process_queue(0).ok());
    EXPECT_EQ(used_len(0), kMaxRequestBytes);
    auto rest = mem_->span(0x100000 + kMaxRequestBytes, kMaxRequestBytes);
    EXPECT_TRUE(std::all_of(rest.begin(), rest.end(), [](uint8_t b) { return b == 0; }));
}

TEST_F(VirtioRng, ReadableOnlyChainGetsNothing) {
    mem_->span(0x10000, 64)[0] = 0x5a;
    add({{0x10000, 64, false}});
    ASSERT_TRUE(dev_.process_queue(0).ok());
    EXPECT_EQ(used_idx(), 1);
    EXPECT_EQ(used_len(0), 0u);
    EXPECT_EQ(mem_->span(0x10000, 1)[0], 0x5a) << "device-readable memory is never written";
}

TEST_F(VirtioRng, BrokenChainNeedsReset) {
    put(kDesc, uint64_t{0x10000});
    put(kDesc + 8, uint32_t{16});
    put(kDesc + 12, uint16_t{1 | 2});  // NEXT ...
    put(kDesc + 14, uint16_t{0});      // ... to itself: a loop
    put(kAvail + 4, uint16_t{0});
    put(kAvail + 2, uint16_t{1});
    EXPECT_FALSE(dev_.process_queue(0).ok());
    EXPECT_FALSE(dev_.process_queue(1).ok()) << "there is only queue 0";
    dev_.reset();
    EXPECT_FALSE(dev_.process_queue(0).ok()) << "not active after reset";
}

TEST_F(VirtioRng, GetRandomFillsLargeBuffers) {
    std::vector<uint8_t> buf(1 << 20);  // larger than one getrandom call returns
    ASSERT_TRUE(get_random(buf).ok());
    EXPECT_NE(std::count(buf.begin(), buf.end(), 0), static_cast<std::ptrdiff_t>(buf.size()));
    EXPECT_LT(std::count(buf.end() - 4096, buf.end(), 0), 64) << "the tail was filled too";
}

}  // namespace
}  // namespace popek::virtio::rng
