// The virtio-pci transport against a fake VirtioDevice, driven like a
// driver would: capabilities, the init sequence, notifications on the
// device thread, reset, interrupts, and hostile register accesses.
#include "virtio/pci/virtio_pci.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <thread>

namespace popek::virtio::pci {
namespace {

using namespace std::chrono_literals;
constexpr uint64_t kBar = 0xc0000000;
constexpr uint64_t kDeviceFeatureBit = 1ull << 0;
constexpr uint64_t kRingPacked = 1ull << 34;  // offered by the device, not implemented by the transport

// What the fake device saw, shared with the test (the device itself moves
// into the transport).
struct Log {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<std::string> events;
    std::thread::id activate_thread, process_thread, reset_thread;
    uint64_t features = 0;
    std::vector<bool> active;
    Interrupt* interrupt = nullptr;
    bool fail_activate = false, fail_process = false;
    std::chrono::milliseconds process_delay{0};

    void add(std::string e) {
        std::lock_guard lock(mu);
        events.push_back(std::move(e));
        cv.notify_all();
    }
    bool wait_for(const std::string& e) {
        std::unique_lock lock(mu);
        return cv.wait_for(lock, 5s, [&] { return std::count(events.begin(), events.end(), e) > 0; });
    }
    long index_of(const std::string& e) {
        std::lock_guard lock(mu);
        auto it = std::find(events.begin(), events.end(), e);
        return it == events.end() ? -1 : it - events.begin();
    }
};

class FakeDevice final : public VirtioDevice {
public:
    explicit FakeDevice(std::shared_ptr<Log> log) : log_(std::move(log)) {}
    [[nodiscard]] DeviceType type() const override { return DeviceType::Block; }
    [[nodiscard]] std::string id() const override { return "blk0"; }
    [[nodiscard]] uint16_t num_queues() const override { return 2; }
    [[nodiscard]] uint16_t queue_max_size() const override { return 256; }
    [[nodiscard]] uint64_t features() const override { return kDeviceFeatureBit | kFeatureEventIdx | kRingPacked; }
    void read_config(uint64_t offset, std::span<uint8_t> data) override {
        for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(offset + i);
    }
    void write_config(uint64_t offset, std::span<const uint8_t>) override { log_->add("config " + std::to_string(offset)); }
    base::Result<void> activate(const ActivateContext& ctx) override {
        log_->activate_thread = std::this_thread::get_id();
        log_->features = ctx.features;
        log_->interrupt = &ctx.interrupt;
        log_->active.clear();
        for (const auto& q : ctx.queues) log_->active.push_back(q.active());
        log_->add("activate");
        if (log_->fail_activate) return base::Error{"backend gone"};
        return {};
    }
    base::Result<void> process_queue(uint16_t queue) override {
        log_->process_thread = std::this_thread::get_id();
        const bool fail = log_->fail_process;
        const auto delay = log_->process_delay;
        log_->add("begin " + std::to_string(queue));
        std::this_thread::sleep_for(delay);
        log_->add("process " + std::to_string(queue));
        if (fail) return base::Error{"malformed chain"};
        return {};
    }
    void reset() override {
        log_->reset_thread = std::this_thread::get_id();
        log_->add("reset");
    }
    [[nodiscard]] DeviceMetrics metrics() const override { return {}; }

private:
    std::shared_ptr<Log> log_;
};

struct VectorLog {
    std::atomic<int> triggers{0};
    int updates = 0;
};
class FakeVector final : public devices::MsiVector {
public:
    explicit FakeVector(VectorLog& log) : log_(log) {}
    base::Result<void> update(uint64_t, uint32_t) override {
        ++log_.updates;
        return {};
    }
    void trigger() override { ++log_.triggers; }

private:
    VectorLog& log_;
};
class FakeLine final : public devices::IrqLine {
public:
    void set_level(bool l) override { level = l; }
    std::atomic<bool> level{false};
};
class FakeIrqs final : public devices::InterruptManager {
public:
    base::Result<std::unique_ptr<devices::MsiVector>> create_msi_vector() override {
        vectors.emplace_back();
        return std::unique_ptr<devices::MsiVector>(std::make_unique<FakeVector>(vectors.back()));
    }
    devices::IrqLine& legacy_line(uint32_t gsi) override { return lines[gsi]; }
    std::deque<VectorLog> vectors;
    std::map<uint32_t, FakeLine> lines;
};

// Stands in for KVM: remembers registrations; a test "writes" the notify
// address the way KVM would, by signalling the eventfd.
class FakeIoeventfds final : public IoeventfdRegistrar {
public:
    base::Result<void> add(int fd, uint64_t addr) override {
        std::lock_guard lock(mu);
        live[addr] = fd;
        ++adds;
        return {};
    }
    base::Result<void> remove(int fd, uint64_t addr) override {
        std::lock_guard lock(mu);
        EXPECT_EQ(live[addr], fd);
        live.erase(addr);
        return {};
    }
    std::mutex mu;
    std::map<uint64_t, int> live;
    int adds = 0;
};

struct Rig {
    memory::GuestMemory mem = [] {
        memory::RamRange ranges[] = {{0, 16 << 20}};
        return std::move(memory::GuestMemory::create(ranges)).value();
    }();
    FakeIrqs irqs;
    FakeIoeventfds ioeventfds;
    FakeLine line;
    std::shared_ptr<Log> log = std::make_shared<Log>();
    std::unique_ptr<VirtioPciDevice> t;

    Rig() {
        auto r = VirtioPciDevice::create(std::make_unique<FakeDevice>(log), mem, irqs, ioeventfds);
        EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
        t = std::move(r).value();
        t->set_bar_address(0, kBar);
        t->connect_intx(&line, 17);
        t->start();
    }
    uint64_t r(uint64_t off, size_t size) {
        uint8_t b[8] = {};
        t->bar_read(0, off, std::span<uint8_t>(b, size));
        uint64_t v = 0;
        for (size_t i = 0; i < size; ++i) v |= uint64_t{b[i]} << (8 * i);
        return v;
    }
    void w(uint64_t off, uint64_t v, size_t size) {
        uint8_t b[8];
        for (size_t i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
        t->bar_write(0, off, std::span<const uint8_t>(b, size));
    }
    uint32_t cfg(uint16_t off, size_t size) {
        uint8_t b[4] = {};
        t->config_read(off, std::span<uint8_t>(b, size));
        return uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 | uint32_t{b[3]} << 24;
    }
    void wcfg(uint16_t off, uint32_t v, size_t size) {
        uint8_t b[4];
        for (size_t i = 0; i < 4; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
        t->config_write(off, std::span<const uint8_t>(b, size));
    }
    uint8_t status() { return static_cast<uint8_t>(r(0x14, 1)); }
    uint64_t offered() {
        w(0x00, 0, 4);
        uint64_t lo = r(0x04, 4);
        w(0x00, 1, 4);
        return lo | r(0x04, 4) << 32;
    }
    void features(uint64_t f) {
        w(0x08, 0, 4);
        w(0x0c, f & 0xffffffff, 4);
        w(0x08, 1, 4);
        w(0x0c, f >> 32, 4);
    }
    void to_features_ok(uint64_t f = kFeatureVersion1 | kFeatureEventIdx | kDeviceFeatureBit) {
        w(0x14, 0, 1);
        w(0x14, kStatusAcknowledge, 1);
        w(0x14, kStatusAcknowledge | kStatusDriver, 1);
        features(f);
        w(0x14, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk, 1);
    }
    void queue(uint16_t q, uint16_t size, uint64_t base, uint16_t vector = kNoVector) {
        w(0x16, q, 2);
        w(0x18, size, 2);
        w(0x1a, vector, 2);
        w(0x20, base, 4);
        w(0x24, base >> 32, 4);
        w(0x28, base + 0x1000, 8);
        w(0x30, base + 0x2000, 8);
        w(0x1c, 1, 2);
    }
    void driver_ok() { w(0x14, 0x0f, 1); }
    void up() {
        to_features_ok();
        queue(0, 128, 0x100000, 0);
        queue(1, 256, 0x200000, 1);
        driver_ok();
    }
    // MSI-X on, every vector unmasked and programmed.
    void enable_msix(uint16_t cap) {
        for (uint64_t v = 0; v < 3; ++v) {
            w(0x8000 + 16 * v, 0xfee00000, 4);
            w(0x8000 + 16 * v + 8, 0x30 + v, 4);
            w(0x8000 + 16 * v + 12, 0, 4);
        }
        wcfg(static_cast<uint16_t>(cap + 2), 0x8000, 2);
    }
    uint16_t find_cap(uint8_t id) {
        for (uint16_t p = static_cast<uint16_t>(cfg(0x34, 1)); p != 0; p = static_cast<uint16_t>(cfg(p + 1, 1)))
            if (cfg(p, 1) == id) return p;
        return 0;
    }
};

TEST(VirtioPci, FullInitSequence) {
    Rig r;
    r.w(0x14, 0, 1);
    EXPECT_EQ(r.status(), 0);
    r.w(0x14, kStatusAcknowledge, 1);
    r.w(0x14, kStatusAcknowledge | kStatusDriver, 1);
    const uint64_t offered = r.offered();
    EXPECT_EQ(offered, kFeatureVersion1 | kFeatureEventIdx | kDeviceFeatureBit) << "RING_PACKED masked";
    r.features(offered);
    r.w(0x14, 0x0b, 1);
    EXPECT_EQ(r.status(), 0x0b) << "FEATURES_OK accepted";
    r.w(0x16, 0, 2);
    EXPECT_EQ(r.r(0x18, 2), 256u) << "queue_size reads the maximum";
    EXPECT_EQ(r.r(0x1e, 2), 0u);
    r.w(0x16, 1, 2);
    EXPECT_EQ(r.r(0x1e, 2), 1u) << "queue_notify_off";
    r.queue(0, 128, 0x100000, 0);
    r.queue(1, 256, 0x200000, 1);
    EXPECT_EQ(r.r(0x20, 8), 0x200000u);
    EXPECT_EQ(r.r(0x1c, 2), 1u);
    EXPECT_EQ(r.log->index_of("activate"), -1) << "nothing before DRIVER_OK";
    r.driver_ok();
    EXPECT_EQ(r.status(), 0x0f);
    ASSERT_TRUE(r.log->wait_for("activate"));
    EXPECT_NE(r.log->activate_thread, std::this_thread::get_id()) << "activated on the device thread";
    EXPECT_EQ(r.log->features, offered);
    EXPECT_EQ(r.log->active, (std::vector<bool>{true, true}));
    std::lock_guard lock(r.ioeventfds.mu);
    EXPECT_EQ(r.ioeventfds.live.size(), 2u);
    EXPECT_TRUE(r.ioeventfds.live.count(kBar + 0x3000));
    EXPECT_TRUE(r.ioeventfds.live.count(kBar + 0x3004));
}

TEST(VirtioPci, NotifyRunsTheQueueOnTheDeviceThread) {
    Rig r;
    r.up();
    r.w(0x3004, 1, 2);  // a notify write that reached the BAR
    ASSERT_TRUE(r.log->wait_for("process 1"));
    EXPECT_EQ(r.log->process_thread, r.log->activate_thread);
    EXPECT_NE(r.log->process_thread, std::this_thread::get_id());
    int fd;
    {
        std::lock_guard lock(r.ioeventfds.mu);
        fd = r.ioeventfds.live.at(kBar + 0x3000);
    }
    const uint64_t one = 1;  // what KVM does for an ioeventfd
    ASSERT_EQ(::write(fd, &one, sizeof one), 8);
    ASSERT_TRUE(r.log->wait_for("process 0"));
}

TEST(VirtioPci, ResetQuiescesTheDeviceFirst) {
    Rig r;
    r.up();
    r.log->process_delay = 200ms;
    r.w(0x3000, 0, 2);
    ASSERT_TRUE(r.log->wait_for("begin 0"));
    r.w(0x14, 0, 1);  // the vCPU waits here until the device is reset
    EXPECT_EQ(r.status(), 0);
    ASSERT_GE(r.log->index_of("reset"), 0);
    EXPECT_GT(r.log->index_of("reset"), r.log->index_of("process 0")) << "in-flight work finished first";
    EXPECT_EQ(r.log->reset_thread, r.log->activate_thread);
    {
        std::lock_guard lock(r.ioeventfds.mu);
        EXPECT_TRUE(r.ioeventfds.live.empty());
    }
    EXPECT_EQ(r.r(0x18, 2), 256u) << "queue registers back to their reset values";
    EXPECT_EQ(r.r(0x1c, 2), 0u);
    EXPECT_EQ(r.r(0x1a, 2), kNoVector);
    r.w(0x08, 0, 4);
    EXPECT_EQ(r.r(0x0c, 4), 0u) << "features forgotten";
    r.log->process_delay = 0ms;
    r.w(0x3004, 1, 2);
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(r.log->index_of("process 1"), -1) << "no queue work after reset";
    r.up();  // and it comes back
    EXPECT_EQ(r.status(), 0x0f);
}

TEST(VirtioPci, FeaturesOkNeedsVersion1AndOfferedBitsOnly) {
    Rig r;
    r.to_features_ok(kDeviceFeatureBit);
    EXPECT_EQ(r.status(), 0x03) << "no VERSION_1: FEATURES_OK stays clear";
    r.to_features_ok(kFeatureVersion1 | kRingPacked);
    EXPECT_EQ(r.status(), 0x03) << "a bit the transport does not offer";
    r.w(0x14, 0x07, 1);
    EXPECT_EQ(r.status(), 0x03) << "DRIVER_OK without FEATURES_OK";
    r.to_features_ok(kFeatureVersion1);
    EXPECT_EQ(r.status(), 0x0b);
    r.features(kFeatureVersion1 | kDeviceFeatureBit);  // too late: features are fixed
    r.w(0x08, 0, 4);
    EXPECT_EQ(r.r(0x0c, 4), 0u);
    r.w(0x14, 0x01, 1);
    EXPECT_EQ(r.status(), 0x0b) << "only a reset clears bits";
    EXPECT_EQ(r.log->index_of("activate"), -1);
}

TEST(VirtioPci, HostileCommonConfigAccesses) {
    Rig r;
    r.to_features_ok();
    r.w(0x16, 7, 2);  // no queue 7
    EXPECT_EQ(r.r(0x18, 2), 0u) << "absent queue: size 0";
    r.w(0x18, 16, 2);
    r.w(0x1c, 1, 2);
    r.w(0x20, 0x1000, 8);
    EXPECT_EQ(r.r(0x20, 8), 0u);
    r.w(0x16, 0, 2);
    for (uint64_t bad : {100u, 0u, 512u, 0xffffu}) r.w(0x18, bad, 2);
    EXPECT_EQ(r.r(0x18, 2), 256u) << "sizes that are not a power of two <= 256 are ignored";
    r.w(0x18, 128, 4);  // wrong width
    r.w(0x18, 128, 1);
    r.w(0x19, 0, 1);
    EXPECT_EQ(r.r(0x18, 2), 256u);
    r.w(0x18, 128, 2);
    EXPECT_EQ(r.r(0x18, 2), 128u);
    r.w(0x16, 1, 1);  // 1-byte write to a 16-bit field
    EXPECT_EQ(r.r(0x16, 2), 0u);
    r.w(0x1a, 99, 2);
    EXPECT_EQ(r.r(0x1a, 2), kNoVector) << "a vector the table lacks reads NO_VECTOR";
    // Read-only fields.
    for (uint64_t off : {0x04u, 0x12u, 0x15u, 0x1eu, 0x38u}) {
        const uint64_t before = r.r(off, 2);
        r.w(off, 0x5a5a, off == 0x04 ? 4 : (off == 0x15 ? 1 : 2));
        EXPECT_EQ(r.r(off, 2), before) << off;
    }
    // Odd widths and offsets anywhere in the BAR.
    uint8_t junk[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    for (uint64_t off : {0x0ull, 0x13ull, 0x3bull, 0xfffull, 0x1000ull, 0x2fffull, 0x3ffeull, 0x7fffull, 0xfff8ull,
                         0xffffull, 0x10000ull, ~0ull}) {
        for (size_t size : {1u, 3u, 8u}) {
            r.t->bar_write(0, off, std::span<const uint8_t>(junk, size));
            uint8_t out[8];
            r.t->bar_read(0, off, std::span<uint8_t>(out, size));
        }
    }
    r.t->bar_write(1, 0x14, std::span<const uint8_t>(junk, 1));  // no BAR1
    EXPECT_EQ(r.r(0x12, 2), 2u);
    EXPECT_EQ(r.status(), 0x0b) << "nothing above changed the status";
    EXPECT_EQ(r.log->index_of("activate"), -1);
}

TEST(VirtioPci, QueueOutsideRamSetsNeedsResetInsteadOfActivating) {
    Rig r;
    r.to_features_ok();
    r.queue(0, 128, 0x40000000);  // RAM ends at 16 MiB
    r.driver_ok();
    EXPECT_EQ(r.status(), 0x4f) << "DRIVER_OK | NEEDS_RESET";
    EXPECT_EQ(r.log->index_of("activate"), -1);
    EXPECT_NE(r.t->failure().find("outside guest RAM"), std::string::npos) << r.t->failure();
    // MSI-X is off: the configuration change interrupt is ISR bit 1 on INTA.
    EXPECT_TRUE(r.line.level);
    EXPECT_EQ(r.r(0x1000, 1), kIsrConfig);
    EXPECT_FALSE(r.line.level);
    EXPECT_EQ(r.r(0x1000, 1), 0u) << "reading ISR cleared it";
    r.w(0x3000, 0, 2);
    std::this_thread::sleep_for(20ms);
    EXPECT_EQ(r.log->index_of("begin 0"), -1);
    r.up();
    EXPECT_EQ(r.status(), 0x0f) << "a reset recovers";
}

TEST(VirtioPci, DeviceErrorsSetNeedsResetWithAConfigInterrupt) {
    Rig r;
    const uint16_t msix = r.find_cap(0x11);
    ASSERT_NE(msix, 0);
    r.enable_msix(msix);
    r.to_features_ok();
    r.w(0x10, 2, 2);  // config vector
    r.queue(0, 128, 0x100000, 0);
    r.log->fail_process = true;
    r.driver_ok();
    r.w(0x3000, 0, 2);
    ASSERT_TRUE(r.log->wait_for("process 0"));
    for (int i = 0; i < 500 && r.irqs.vectors[2].triggers == 0; ++i) std::this_thread::sleep_for(1ms);
    EXPECT_EQ(r.irqs.vectors[2].triggers, 1);
    EXPECT_EQ(r.status(), 0x4f);
    EXPECT_NE(r.t->failure().find("malformed chain"), std::string::npos);

    r.log->fail_process = false;
    r.log->fail_activate = true;
    r.to_features_ok();
    r.queue(0, 128, 0x100000, 0);
    r.driver_ok();
    EXPECT_EQ(r.status(), 0x4f);
    EXPECT_NE(r.t->failure().find("backend gone"), std::string::npos);
    std::lock_guard lock(r.ioeventfds.mu);
    EXPECT_TRUE(r.ioeventfds.live.empty()) << "a failed activation leaves no ioeventfds";
}

TEST(VirtioPci, InterruptsUseMsixOrIsrAndIntx) {
    Rig r;
    r.up();
    ASSERT_TRUE(r.log->wait_for("activate"));
    Interrupt& irq = *r.log->interrupt;
    // INTx: ISR queue bit, PCI status bit 3, the line.
    irq.signal_queue(1);
    EXPECT_TRUE(r.line.level);
    EXPECT_TRUE(r.cfg(0x06, 2) & 0x08);
    r.wcfg(0x04, 0x0400, 2);  // INTx disable masks the line, not the status
    EXPECT_FALSE(r.line.level);
    r.wcfg(0x04, 0x0000, 2);
    EXPECT_TRUE(r.line.level);
    EXPECT_EQ(r.r(0x1000, 4), kIsrQueue);
    EXPECT_FALSE(r.line.level);
    // MSI-X: queue 1 uses vector 1, queue 0 vector 0; nothing on INTx.
    r.enable_msix(r.find_cap(0x11));
    irq.signal_queue(1);
    irq.signal_queue(1);
    irq.signal_queue(0);
    EXPECT_EQ(r.irqs.vectors[1].triggers, 2);
    EXPECT_EQ(r.irqs.vectors[0].triggers, 1);
    EXPECT_FALSE(r.line.level);
    r.w(0x16, 1, 2);
    r.w(0x1a, kNoVector, 2);
    irq.signal_queue(1);
    EXPECT_EQ(r.irqs.vectors[1].triggers, 2) << "NO_VECTOR: no interrupt";
    irq.signal_queue(9);  // a queue the device does not have
    const uint8_t gen = static_cast<uint8_t>(r.r(0x15, 1));
    irq.signal_config();
    EXPECT_EQ(r.r(0x15, 1), uint8_t(gen + 1)) << "config_generation moves";
}

TEST(VirtioPci, SaveCapturesTransportState) {
    Rig r;
    r.enable_msix(r.find_cap(0x11));
    r.up();
    auto s = r.t->save();
    EXPECT_EQ(s.status, 0x0f);
    EXPECT_EQ(s.driver_features, kFeatureVersion1 | kFeatureEventIdx | kDeviceFeatureBit);
    ASSERT_EQ(s.queues.size(), 2u);
    EXPECT_EQ(s.queues[0].size, 128);
    EXPECT_EQ(s.queues[1].desc_addr, 0x200000u);
    EXPECT_EQ(s.queues[1].msix_vector, 1);
    EXPECT_TRUE(s.queues[1].event_idx);
    EXPECT_TRUE(s.msix.enabled);
    EXPECT_EQ(s.msix.entries[2].data, 0x32u);
    ASSERT_EQ(s.pci_config.size(), 256u);
    EXPECT_EQ(s.pci_config[0], 0xf4);
}

// A request published and notified just before a snapshot's pause is not
// taken by the paused device, and its kick is not part of the state: the
// restored transport looks at every queue once, or that guest waits forever.
TEST(VirtioPci, RestoreLooksAtEveryQueueOnce) {
    Rig source;
    source.up();
    const auto saved = source.t->save();

    Rig restored;
    ASSERT_TRUE(restored.t->restore(saved).ok());
    ASSERT_TRUE(restored.log->wait_for("activate"));
    EXPECT_TRUE(restored.log->wait_for("process 0")) << "queue 0 not looked at after the restore";
    EXPECT_TRUE(restored.log->wait_for("process 1")) << "queue 1 not looked at after the restore";
}

}  // namespace
}  // namespace popek::virtio::pci
