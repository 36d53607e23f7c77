// virtio-blk against a hand-built driver: rings and requests written into
// guest memory, the device on a real event loop with either I/O engine, a
// temporary raw image underneath. Waits are on conditions, never sleeps.
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "base/event_loop.hpp"
#include "virtio/blk/device.hpp"

namespace popek::virtio::blk {
namespace {

using block::Access;
using block::EngineKind;
using memory::GuestMemory;

constexpr uint16_t kQueueSize = 64;
constexpr uint64_t kImageSize = 1 << 20;  // 2048 sectors
constexpr uint64_t kCapacity = kImageSize / kSectorSize;
constexpr uint32_t kTypeGetLifetime = 10;

uint8_t pattern(uint64_t i) { return static_cast<uint8_t>(i * 31 + 7); }

struct Seg {
    uint64_t addr;
    uint32_t len;
    bool write;  // device-writable
};

// The driver's half of one split queue, rings at base, base+0x1000, base+0x2000.
class Driver {
public:
    Driver(const GuestMemory& mem, uint64_t base) : mem_(mem), base_(base) {}
    [[nodiscard]] SplitQueue::State state() const {
        SplitQueue::State s;
        s.size = kQueueSize;
        s.ready = true;
        s.desc_addr = base_;
        s.avail_addr = base_ + 0x1000;
        s.used_addr = base_ + 0x2000;
        return s;
    }
    uint16_t add(const std::vector<Seg>& segs) {
        const auto head = static_cast<uint16_t>(next_desc_ % kQueueSize);
        for (size_t i = 0; i < segs.size(); ++i) {
            const auto idx = static_cast<uint16_t>((next_desc_ + i) % kQueueSize);
            const uint16_t flags = static_cast<uint16_t>((segs[i].write ? 2 : 0) | (i + 1 < segs.size() ? 1 : 0));
            put(base_ + 16ull * idx, segs[i].addr);
            put(base_ + 16ull * idx + 8, segs[i].len);
            put(base_ + 16ull * idx + 12, flags);
            put(base_ + 16ull * idx + 14, static_cast<uint16_t>((idx + 1) % kQueueSize));
        }
        next_desc_ += segs.size();
        put(base_ + 0x1000 + 4 + 2ull * (avail_ % kQueueSize), head);
        ++avail_;
        __atomic_store_n(reinterpret_cast<uint16_t*>(mem_.host_ptr(base_ + 0x1002, 2)), avail_, __ATOMIC_RELEASE);
        return head;
    }
    // Makes an entry available whose head index is out of range.
    void add_bad_head() {
        put(base_ + 0x1000 + 4 + 2ull * (avail_ % kQueueSize), static_cast<uint16_t>(kQueueSize));
        ++avail_;
        __atomic_store_n(reinterpret_cast<uint16_t*>(mem_.host_ptr(base_ + 0x1002, 2)), avail_, __ATOMIC_RELEASE);
    }
    // What the device asked for (EVENT_IDX): notify when avail idx passes it.
    [[nodiscard]] uint16_t avail_event() const {
        return __atomic_load_n(reinterpret_cast<const uint16_t*>(mem_.host_ptr(base_ + 0x2000 + 4 + 8ull * kQueueSize, 2)),
                               __ATOMIC_ACQUIRE);
    }
    [[nodiscard]] uint16_t used_idx() const {
        return __atomic_load_n(reinterpret_cast<const uint16_t*>(mem_.host_ptr(base_ + 0x2002, 2)), __ATOMIC_ACQUIRE);
    }
    [[nodiscard]] uint32_t used_len(uint16_t i) const {
        uint32_t v = 0;
        EXPECT_TRUE(mem_.read(base_ + 0x2000 + 8 + 8ull * (i % kQueueSize), {reinterpret_cast<uint8_t*>(&v), 4}).ok());
        return v;
    }

private:
    template <class T>
    void put(uint64_t gpa, T v) {
        ASSERT_TRUE(mem_.write_obj(gpa, v).ok());
    }
    const GuestMemory& mem_;
    uint64_t base_;
    size_t next_desc_ = 0;
    uint16_t avail_ = 0;
};

class FakeInterrupt : public Interrupt {
public:
    void signal_queue(uint16_t) override {
        std::lock_guard lock(mu);
        ++signals;
        cv.notify_all();
    }
    void signal_config() override {}
    std::mutex mu;
    std::condition_variable cv;
    int signals = 0;
};

class VirtioBlk : public ::testing::Test {
protected:
    void SetUp() override {
        const char* tmp = std::getenv("TMPDIR");
        path_ = std::string(tmp != nullptr ? tmp : "/tmp") + "/popek-blk-XXXXXX";
        const int fd = ::mkstemp(path_.data());
        ASSERT_GE(fd, 0);
        std::vector<uint8_t> img(kImageSize);
        for (uint64_t i = 0; i < img.size(); ++i) img[i] = pattern(i);
        ASSERT_EQ(::write(fd, img.data(), img.size()), static_cast<ssize_t>(img.size()));
        ::close(fd);
        memory::RamRange ranges[] = {{0, 4 << 20}};
        auto m = GuestMemory::create(ranges);
        ASSERT_TRUE(m.ok());
        mem_.emplace(std::move(m).value());
        auto l = base::EventLoop::create("blk-test");
        ASSERT_TRUE(l.ok());
        loop_ = std::move(l).value();
        loop_->start();
    }
    void TearDown() override {
        if (dev_) loop_->run_sync([&] { dev_.reset(); });
        loop_->stop();
        ::unlink(path_.c_str());
    }

    void make(EngineKind kind, Access access = Access::ReadWrite, BlockOptions opts = {}) {
        auto disk = block::DiskImage::open(path_, access);
        ASSERT_TRUE(disk.ok()) << disk.error().message;
        auto engine = block::make_engine(kind);
        ASSERT_TRUE(engine.ok()) << engine.error().message;
        auto dev = BlockDevice::create(std::move(opts), std::move(disk).value(), std::move(engine).value());
        ASSERT_TRUE(dev.ok()) << dev.error().message;
        dev_ = std::move(dev).value();
    }
    // The transport's part: queues from the driver's rings, then DRIVER_OK.
    void activate(uint64_t features) {
        drivers_.clear();
        queues_.clear();
        for (uint16_t q = 0; q < dev_->num_queues(); ++q) {
            drivers_.emplace_back(*mem_, 0x1000 + 0x4000ull * q);
            queues_.emplace_back(drivers_.back().state());
            ASSERT_TRUE(queues_.back().activate(*mem_, features).ok());
        }
        base::Result<void> r;
        loop_->run_sync([&] { r = dev_->activate({*mem_, queues_, irq_, *loop_, features, [this](uint16_t q) { kicked_.push_back(q); }});
        });
        ASSERT_TRUE(r.ok()) << r.error().message;
    }
    void activate() { activate((dev_->features() & ~kFeatureEventIdx) | kFeatureVersion1); }
    base::Result<void> kick(uint16_t q = 0) {
        base::Result<void> r;
        loop_->run_sync([&] { r = dev_->process_queue(q); });
        return r;
    }
    void wait_used(uint16_t n, uint16_t q = 0) {
        std::unique_lock lock(irq_.mu);
        ASSERT_TRUE(irq_.cv.wait_for(lock, std::chrono::seconds(20), [&] { return drivers_[q].used_idx() >= n; }))
            << "the device completed " << drivers_[q].used_idx() << " of " << n << " requests";
    }

    uint64_t alloc(uint32_t len, uint8_t fill = 0) {
        const uint64_t at = next_;
        next_ += (len + 15) & ~15u;
        auto s = mem_->span(at, len);
        std::fill(s.begin(), s.end(), fill);
        return at;
    }
    uint64_t header(uint32_t type, uint64_t sector) {
        const uint64_t h = alloc(16);
        EXPECT_TRUE(mem_->write_obj(h, type).ok());
        EXPECT_TRUE(mem_->write_obj(h + 8, sector).ok());
        return h;
    }
    // Header, `middle`, a status byte; returns the status byte's address.
    uint64_t send(uint32_t type, uint64_t sector, std::vector<Seg> middle = {}, uint16_t q = 0) {
        std::vector<Seg> segs{{header(type, sector), 16, false}};
        segs.insert(segs.end(), middle.begin(), middle.end());
        const uint64_t status = alloc(1, 0xff);
        segs.push_back({status, 1, true});
        drivers_[q].add(segs);
        return status;
    }
    uint64_t send_segments(uint32_t type, const std::vector<std::array<uint64_t, 3>>& segs) {
        const auto len = static_cast<uint32_t>(16 * segs.size());
        const uint64_t at = alloc(len);
        for (size_t i = 0; i < segs.size(); ++i) {
            EXPECT_TRUE(mem_->write_obj(at + 16 * i, segs[i][0]).ok());
            EXPECT_TRUE(mem_->write_obj(at + 16 * i + 8, static_cast<uint32_t>(segs[i][1])).ok());
            EXPECT_TRUE(mem_->write_obj(at + 16 * i + 12, static_cast<uint32_t>(segs[i][2])).ok());
        }
        return send(type, 0, {{at, len, false}});
    }
    uint8_t status(uint64_t addr) { return mem_->span(addr, 1)[0]; }
    std::vector<uint8_t> file(uint64_t offset, uint64_t len) {
        std::vector<uint8_t> b(len);
        const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
        EXPECT_EQ(::pread(fd, b.data(), len, static_cast<off_t>(offset)), static_cast<ssize_t>(len));
        ::close(fd);
        return b;
    }
    std::vector<uint8_t> expected(uint64_t offset, uint64_t len) {
        std::vector<uint8_t> b(len);
        for (uint64_t i = 0; i < len; ++i) b[i] = pattern(offset + i);
        return b;
    }

    std::string path_;
    std::optional<GuestMemory> mem_;
    std::unique_ptr<base::EventLoop> loop_;
    std::unique_ptr<BlockDevice> dev_;
    std::vector<Driver> drivers_;
    std::vector<SplitQueue> queues_;
    FakeInterrupt irq_;
    std::vector<uint16_t> kicked_;  // queues the device asked the transport to process (device thread)
    uint64_t next_ = 0x100000;
};

using Type = RequestType;
uint32_t t(Type type) { return static_cast<uint32_t>(type); }

// The same behaviour with both engines.
class VirtioBlkIo : public VirtioBlk, public ::testing::WithParamInterface<EngineKind> {};

TEST_P(VirtioBlkIo, WritesThenReadsBack) {
    make(GetParam());
    activate();
    const uint64_t a = alloc(1024, 0x11), b = alloc(3072, 0x22);
    const uint64_t w = send(t(Type::Out), 10, {{a, 1024, false}, {b, 3072, false}});
    ASSERT_TRUE(kick().ok());
    wait_used(1);
    EXPECT_EQ(status(w), kStatusOk);
    EXPECT_EQ(drivers_[0].used_len(0), 1u);
    auto on_disk = file(10 * 512, 4096);
    EXPECT_EQ(std::vector<uint8_t>(on_disk.begin(), on_disk.begin() + 1024), std::vector<uint8_t>(1024, 0x11));
    EXPECT_EQ(std::vector<uint8_t>(on_disk.begin() + 1024, on_disk.end()), std::vector<uint8_t>(3072, 0x22));
    EXPECT_EQ(file(9 * 512, 512), expected(9 * 512, 512)) << "the sector before is untouched";

    const uint64_t in = alloc(8192, 0xee);
    const uint64_t r1 = send(t(Type::In), 10, {{in, 4096, true}});
    const uint64_t r2 = send(t(Type::In), 100, {{in + 4096, 4096, true}});
    ASSERT_TRUE(kick().ok());
    wait_used(3);
    EXPECT_EQ(status(r1), kStatusOk);
    EXPECT_EQ(status(r2), kStatusOk);
    auto got = mem_->span(in, 8192);
    EXPECT_EQ(std::vector<uint8_t>(got.begin(), got.begin() + 4096), on_disk);
    EXPECT_EQ(std::vector<uint8_t>(got.begin() + 4096, got.end()), expected(100 * 512, 4096));
    EXPECT_EQ(drivers_[0].used_len(1) + drivers_[0].used_len(2), 2u * 4097) << "data plus the status byte";
    const auto m = dev_->metrics();
    EXPECT_EQ(m.requests, 3u);
    EXPECT_EQ(m.bytes_written, 4096u);
    EXPECT_EQ(m.bytes_read, 8192u);
    EXPECT_EQ(m.errors, 0u);
}

// EVENT_IDX: while a queue has requests in the engine the device asks for no
// notification; a request the driver adds meanwhile is taken when a
// completion comes, and an idle device asks again.
TEST_P(VirtioBlkIo, ABusyQueueTakesNewRequestsWithoutANotification) {
    make(GetParam());
    activate(dev_->features() | kFeatureVersion1);
    const uint64_t in = alloc(8192, 0xee);
    uint64_t r1 = 0, r2 = 0;
    base::Result<void> taken;
    uint16_t asked = 0;
    // On the device thread, so no completion runs between the steps.
    loop_->run_sync([&] {
        r1 = send(t(Type::In), 10, {{in, 4096, true}});
        taken = dev_->process_queue(0);
        asked = drivers_[0].avail_event();
        r2 = send(t(Type::In), 100, {{in + 4096, 4096, true}});
    });
    ASSERT_TRUE(taken.ok()) << taken.error().message;
    EXPECT_EQ(asked, 0) << "asked for a notification while a request was in flight";
    wait_used(2);  // no kick for the second one
    EXPECT_EQ(status(r1), kStatusOk);
    EXPECT_EQ(status(r2), kStatusOk);
    EXPECT_EQ(std::vector<uint8_t>(mem_->span(in + 4096, 4096).begin(), mem_->span(in + 4096, 4096).end()),
              expected(100 * 512, 4096));
    EXPECT_EQ(drivers_[0].avail_event(), 2) << "an idle device asks to be notified at the next request";
    EXPECT_TRUE(kicked_.empty());
}

// A broken chain found while taking requests on a completion is reported
// through the transport (a kick, then process_queue() returns the error).
TEST_P(VirtioBlkIo, ABrokenChainFoundOnACompletionIsReported) {
    make(GetParam());
    activate(dev_->features() | kFeatureVersion1);
    const uint64_t in = alloc(4096, 0xee);
    loop_->run_sync([&] {
        (void)send(t(Type::In), 10, {{in, 4096, true}});
        ASSERT_TRUE(dev_->process_queue(0).ok());
        drivers_[0].add_bad_head();
    });
    wait_used(1);
    // The completion handler that took the chain has returned by the time
    // this runs on the device thread.
    base::Result<void> r;
    std::vector<uint16_t> kicked;
    loop_->run_sync([&] {
        kicked = kicked_;
        r = dev_->process_queue(0);
    });
    EXPECT_EQ(kicked, std::vector<uint16_t>{0});
    ASSERT_FALSE(r.ok()) << "the broken chain was never reported";
    EXPECT_NE(r.error().message.find("head descriptor 64 is out of range"), std::string::npos) << r.error().message;
}

TEST_P(VirtioBlkIo, FlushAndGetId) {
    make(GetParam(), Access::ReadWrite, {.id = "data-disk-with-a-long-name", .num_queues = 1, .queue_size = 256});
    activate();
    const uint64_t f = send(t(Type::Flush), 0);
    const uint64_t id = alloc(20, 0xff);
    const uint64_t g = send(t(Type::GetId), 0, {{id, 20, true}});
    ASSERT_TRUE(kick().ok());
    wait_used(2);
    EXPECT_EQ(status(f), kStatusOk);
    EXPECT_EQ(status(g), kStatusOk);
    auto serial = mem_->span(id, 20);
    EXPECT_EQ(std::string(serial.begin(), serial.end()), std::string("data-disk-with-a-lon"));
    EXPECT_EQ(dev_->block_metrics().flushes, 1u);
}

TEST_P(VirtioBlkIo, DiscardAndWriteZeroesReadBackZero) {
    make(GetParam());
    activate();
    const uint64_t d = send_segments(t(Type::Discard), {{{8, 16, 0}}});
    const uint64_t z = send_segments(t(Type::WriteZeroes), {{{100, 3, 0}}, {{200, 9, kSegmentFlagUnmap}}});
    ASSERT_TRUE(kick().ok());
    wait_used(2);
    EXPECT_EQ(status(d), kStatusOk);
    EXPECT_EQ(status(z), kStatusOk);
    EXPECT_EQ(file(8 * 512, 16 * 512), std::vector<uint8_t>(16 * 512, 0));
    EXPECT_EQ(file(100 * 512, 3 * 512), std::vector<uint8_t>(3 * 512, 0));
    EXPECT_EQ(file(200 * 512, 9 * 512), std::vector<uint8_t>(9 * 512, 0));
    EXPECT_EQ(file(7 * 512, 512), expected(7 * 512, 512));
    EXPECT_EQ(file(24 * 512, 512), expected(24 * 512, 512));
    EXPECT_EQ(file(103 * 512, 512), expected(103 * 512, 512));
    EXPECT_EQ(file(209 * 512, 512), expected(209 * 512, 512));
}

TEST_P(VirtioBlkIo, ResetWaitsForInFlightIoAndTheDeviceWorksAgain) {
    make(GetParam());
    activate();
    const uint64_t buf = alloc(8 * 4096);
    for (uint16_t i = 0; i < 8; ++i) send(t(Type::In), 8ull * i, {{buf + 4096ull * i, 4096, true}});
    base::Result<void> r;
    size_t in_flight = 0;
    loop_->run_sync([&] {
        r = dev_->process_queue(0);
        dev_->reset();  // in the same turn of the loop: no completion reaped yet
        in_flight = dev_->in_flight();
    });
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(in_flight, 0u);
    EXPECT_EQ(drivers_[0].used_idx(), 0) << "completions of a reset device are dropped";
    activate();
    const uint64_t s = send(t(Type::In), 0, {{buf, 512, true}});
    ASSERT_TRUE(kick().ok());
    wait_used(1);
    EXPECT_EQ(status(s), kStatusOk);
}

INSTANTIATE_TEST_SUITE_P(VirtioBlkEngines, VirtioBlkIo, ::testing::Values(EngineKind::Sync, EngineKind::IoUring),
                         [](const auto& p) { return std::string(p.param == EngineKind::Sync ? "Sync" : "IoUring"); });

TEST_F(VirtioBlk, ConfigSpaceAndFeatures) {
    make(EngineKind::Sync, Access::ReadWrite, {.id = "blk0", .num_queues = 2, .queue_size = 128});
    std::array<uint8_t, kConfigSize> c{};
    dev_->read_config(0, c);
    auto u32 = [&](size_t o) { uint32_t v; std::memcpy(&v, &c[o], 4); return v; };
    uint64_t capacity;
    std::memcpy(&capacity, c.data(), 8);
    EXPECT_EQ(capacity, kCapacity);
    EXPECT_EQ(u32(12), 126u) << "seg_max";
    EXPECT_EQ(u32(20), 512u) << "blk_size";
    EXPECT_EQ(c[34], 2) << "num_queues";
    EXPECT_EQ(u32(40), kMaxDiscardSeg);
    std::array<uint8_t, 4> tail{1, 1, 1, 1};
    dev_->read_config(kConfigSize - 2, tail);
    EXPECT_EQ(tail, (std::array<uint8_t, 4>{0, 0, 0, 0})) << "padding and beyond read as zero";
    const uint64_t f = dev_->features();
    for (uint64_t bit : {kFeatureFlush, kFeatureMq, kFeatureDiscard, kFeatureWriteZeroes, kFeatureBlkSize,
                         kFeatureSegMax, kFeatureIndirectDesc, kFeatureEventIdx})
        EXPECT_NE(f & bit, 0u) << bit;
    EXPECT_EQ(f & kFeatureRo, 0u);
}

TEST_F(VirtioBlk, ReadOnlyDiskRefusesWritesAndLeavesTheFileAlone) {
    make(EngineKind::Sync, Access::ReadOnly);
    EXPECT_NE(dev_->features() & kFeatureRo, 0u);
    EXPECT_EQ(dev_->features() & (kFeatureDiscard | kFeatureWriteZeroes), 0u);
    activate();
    const uint64_t data = alloc(4096, 0x99);
    const uint64_t w = send(t(Type::Out), 0, {{data, 4096, false}});
    const uint64_t z = send_segments(t(Type::WriteZeroes), {{{0, 8, 0}}});
    const uint64_t r = send(t(Type::In), 0, {{alloc(512), 512, true}});
    ASSERT_TRUE(kick().ok());
    wait_used(3);
    EXPECT_EQ(status(w), kStatusIoErr);
    EXPECT_EQ(status(z), kStatusUnsupp) << "not negotiated";
    EXPECT_EQ(status(r), kStatusOk);
    EXPECT_EQ(file(0, 8192), expected(0, 8192));
}

TEST_F(VirtioBlk, OutOfRangeSectorsFail) {
    make(EngineKind::Sync);
    activate();
    const uint64_t buf = alloc(1024);
    const uint64_t a = send(t(Type::In), kCapacity - 1, {{buf, 1024, true}});
    const uint64_t b = send(t(Type::Out), ~0ull, {{buf, 512, false}});  // sector + count overflows
    const uint64_t c = send(t(Type::In), kCapacity - 1, {{buf, 512, true}});  // the last sector: fine
    const uint64_t d = send_segments(t(Type::Discard), {{{kCapacity - 4, 8, 0}}});
    const uint64_t e = send_segments(t(Type::WriteZeroes), {{{0, uint64_t{kMaxDiscardSectors} + 1, 0}}});
    const uint64_t f = send(t(Type::In), 0, {{buf, 100, true}});  // not a whole sector
    ASSERT_TRUE(kick().ok());
    wait_used(6);
    EXPECT_EQ(status(a), kStatusIoErr);
    EXPECT_EQ(status(b), kStatusIoErr);
    EXPECT_EQ(status(c), kStatusOk);
    EXPECT_EQ(status(d), kStatusIoErr);
    EXPECT_EQ(status(e), kStatusIoErr);
    EXPECT_EQ(status(f), kStatusIoErr);
    EXPECT_EQ(file(0, kImageSize), expected(0, kImageSize));
    EXPECT_EQ(dev_->metrics().errors, 5u);
}

TEST_F(VirtioBlk, UnknownTypesAndBadSegmentFlagsAreUnsupported) {
    make(EngineKind::Sync);
    activate();
    const uint64_t a = send(99, 0);
    const uint64_t b = send(kTypeGetLifetime, 0, {{alloc(16), 16, true}});
    const uint64_t c = send_segments(t(Type::Discard), {{{0, 8, kSegmentFlagUnmap}}});  // UNMAP is for write zeroes
    const uint64_t d = send_segments(t(Type::WriteZeroes), {{{0, 8, 4}}});           // a reserved flag
    ASSERT_TRUE(kick().ok());
    wait_used(4);
    for (uint64_t s : {a, b, c, d}) EXPECT_EQ(status(s), kStatusUnsupp);
    EXPECT_EQ(file(0, 4096), expected(0, 4096));
}

TEST_F(VirtioBlk, MalformedRequestsFailWithIoErr) {
    make(EngineKind::Sync);
    activate();
    const uint64_t buf = alloc(4096, 0x33);
    // A read whose data buffer is device-readable: nothing to read into.
    const uint64_t a = send(t(Type::In), 0, {{buf, 512, false}});
    // A write whose data buffer is device-writable.
    const uint64_t b = send(t(Type::Out), 0, {{buf, 512, true}});
    // A header of 8 bytes.
    const uint64_t status_c = alloc(1, 0xff);
    drivers_[0].add({{header(t(Type::In), 0), 8, false}, {status_c, 1, true}});
    // Discard segments that are not whole, and too many of them.
    const uint64_t d = send(t(Type::Discard), 0, {{buf, 24, false}});
    const uint64_t e = send_segments(t(Type::Discard), std::vector<std::array<uint64_t, 3>>(kMaxDiscardSeg + 1,
                                                                                            {{0, 1, 0}}));
    // The status byte sharing a buffer with read data is fine.
    const uint64_t shared = alloc(513, 0xff);
    drivers_[0].add({{header(t(Type::In), 3), 16, false}, {shared, 513, true}});
    ASSERT_TRUE(kick().ok());
    wait_used(6);
    for (uint64_t s : {a, b, status_c, d, e}) EXPECT_EQ(status(s), kStatusIoErr);
    EXPECT_EQ(mem_->span(shared + 512, 1)[0], kStatusOk);
    auto got = mem_->span(shared, 512);
    EXPECT_EQ(std::vector<uint8_t>(got.begin(), got.end()), expected(3 * 512, 512));
    EXPECT_EQ(file(0, 4096), expected(0, 4096));
}

// Any descriptor layout (virtio 1.x): a header split in two, write data in
// the same buffer as the header's tail.
TEST_F(VirtioBlk, HeaderAndDataMaySplitAnywhere) {
    make(EngineKind::Sync);
    activate();
    const uint64_t h = alloc(16 + 512, 0x44);
    EXPECT_TRUE(mem_->write_obj(h, t(Type::Out)).ok());
    EXPECT_TRUE(mem_->write_obj(h + 4, uint32_t{0}).ok());
    EXPECT_TRUE(mem_->write_obj(h + 8, uint64_t{20}).ok());
    const uint64_t s = alloc(1, 0xff);
    drivers_[0].add({{h, 5, false}, {h + 5, 16 + 512 - 5, false}, {s, 1, true}});
    ASSERT_TRUE(kick().ok());
    wait_used(1);
    EXPECT_EQ(status(s), kStatusOk);
    EXPECT_EQ(file(20 * 512, 512), std::vector<uint8_t>(512, 0x44));
}

TEST_F(VirtioBlk, ChainWithoutStatusByteNeedsReset) {
    make(EngineKind::Sync);
    activate();
    drivers_[0].add({{header(t(Type::Flush), 0), 16, false}});
    auto r = kick();
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("status byte"), std::string::npos) << r.error().message;
}

TEST_F(VirtioBlk, SecondQueueServesRequests) {
    make(EngineKind::Sync, Access::ReadWrite, {.id = "mq", .num_queues = 2, .queue_size = 256});
    activate();
    const uint64_t buf = alloc(512);
    const uint64_t s = send(t(Type::In), 5, {{buf, 512, true}}, 1);
    ASSERT_TRUE(kick(1).ok());
    wait_used(1, 1);
    EXPECT_EQ(status(s), kStatusOk);
    EXPECT_EQ(drivers_[0].used_idx(), 0);
    EXPECT_FALSE(kick(2).ok()) << "no such queue";
}

TEST_F(VirtioBlk, DrainCompletesEverythingAndStateMustMatchTheDisk) {
    make(EngineKind::IoUring);
    activate();
    const uint64_t buf = alloc(4 * 4096);
    for (uint16_t i = 0; i < 4; ++i) send(t(Type::In), 8ull * i, {{buf + 4096ull * i, 4096, true}});
    State saved;
    loop_->run_sync([&] {
        ASSERT_TRUE(dev_->process_queue(0).ok());
        dev_->drain();
        EXPECT_EQ(dev_->in_flight(), 0u);
        saved = dev_->save();
    });
    EXPECT_EQ(drivers_[0].used_idx(), 4) << "drain completes to the guest";
    EXPECT_EQ(saved.capacity, kCapacity);
    loop_->run_sync([&] { dev_.reset(); });  // release the image's lock

    auto reopen = [&](State s) {
        auto disk = block::DiskImage::open(path_, Access::ReadWrite);
        EXPECT_TRUE(disk.ok());
        return BlockDevice::create({}, std::move(disk).value(), std::move(block::make_engine(EngineKind::Sync)).value(), s);
    };
    EXPECT_TRUE(reopen(saved).ok());
    State bigger = saved;
    bigger.capacity += 1;
    auto r = reopen(bigger);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("sectors"), std::string::npos) << r.error().message;
}

}  // namespace
}  // namespace popek::virtio::blk
