// SplitQueue against rings a small test-side "driver" builds in guest memory.
#include <gtest/gtest.h>

#include <array>
#include <numeric>
#include <string>
#include <vector>

#include "memory/guest_memory.hpp"
#include "virtio/queue.hpp"

namespace popek::virtio {
namespace {

using memory::GuestMemory;
using memory::RamRange;

constexpr uint16_t kNext = 1, kWrite = 2, kIndirect = 4;
constexpr uint64_t kDesc = 0x1000, kAvail = 0x2000, kUsed = 0x3000;
constexpr uint64_t kData = 0x10000, kTable = 0x8000;
// RAM is [0, 1 MiB) and [2 MiB, 3 MiB): the hole between is not RAM.
constexpr uint64_t kHole = 1 << 20, kHighRam = 2 << 20;

// Writes the driver's side of the rings, little-endian like the spec.
class Driver {
public:
    Driver(const GuestMemory& mem, uint16_t size) : mem_(mem), size_(size) {}

    // Descriptor `i` of the table at `table` (the queue's or an indirect one).
    void table_desc(uint64_t table, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next = 0) {
        struct {
            uint64_t addr;
            uint32_t len;
            uint16_t flags, next;
        } d{addr, len, flags, next};
        put(table + 16ull * i, d);
    }
    void desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags = 0, uint16_t next = 0) {
        table_desc(kDesc, i, addr, len, flags, next);
    }
    void publish(uint16_t head) {
        put(kAvail + 4 + 2ull * (avail_idx % size_), head);
        set_avail_idx(static_cast<uint16_t>(avail_idx + 1));
    }
    void set_avail_idx(uint16_t v) {
        avail_idx = v;
        put(kAvail + 2, v);
    }
    void set_avail_flags(uint16_t f) { put(kAvail, f); }
    void set_used_event(uint16_t v) { put(kAvail + 4 + 2ull * size_, v); }
    uint16_t used_idx() { return get<uint16_t>(kUsed + 2); }
    uint16_t avail_event() { return get<uint16_t>(kUsed + 4 + 8ull * size_); }
    std::pair<uint32_t, uint32_t> used_elem(uint16_t slot) {
        return {get<uint32_t>(kUsed + 4 + 8ull * slot), get<uint32_t>(kUsed + 8 + 8ull * slot)};
    }

    uint16_t avail_idx = 0;

private:
    template <class T>
    void put(uint64_t gpa, T v) {
        ASSERT_TRUE(mem_.write_obj(gpa, v).ok());
    }
    template <class T>
    T get(uint64_t gpa) {
        T v{};
        EXPECT_TRUE(mem_.read(gpa, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), sizeof v)).ok());
        return v;
    }
    const GuestMemory& mem_;
    uint16_t size_;
};

class Virtqueue : public ::testing::Test {
protected:
    void SetUp() override {
        RamRange ranges[] = {{0, 1 << 20}, {kHighRam, 1 << 20}};
        auto m = GuestMemory::create(ranges);
        ASSERT_TRUE(m.ok()) << m.error().message;
        mem_.emplace(std::move(m).value());
        driver_.emplace(*mem_, kSize);
        activate(kFeatureIndirectDesc);
    }
    void activate(uint64_t features, uint16_t next = 0) {
        q_ = SplitQueue({.size = kSize, .ready = true, .desc_addr = kDesc, .avail_addr = kAvail,
                         .used_addr = kUsed, .next_avail = next, .next_used = next});
        auto r = q_.activate(*mem_, features);
        ASSERT_TRUE(r.ok()) << r.error().message;
    }
    DescriptorChain pop_ok() {
        auto c = q_.pop();
        EXPECT_TRUE(c.has_value());
        if (!c) return {};
        EXPECT_TRUE(c->ok()) << c->error().message;
        return c->ok() ? std::move(*c).value() : DescriptorChain{};
    }
    std::string pop_error() {
        auto c = q_.pop();
        if (!c || c->ok()) return "(no error)";
        return c->error().message;
    }

    static constexpr uint16_t kSize = 16;
    std::optional<GuestMemory> mem_;
    std::optional<Driver> driver_;
    SplitQueue q_;
};

TEST_F(Virtqueue, SimpleChain) {
    EXPECT_FALSE(q_.pop().has_value()) << "nothing available yet";
    driver_->desc(3, kData, 100);
    driver_->publish(3);
    auto c = pop_ok();
    EXPECT_EQ(c.head, 3);
    ASSERT_EQ(c.readable.size(), 1u);
    EXPECT_EQ(c.readable[0].addr, kData);
    EXPECT_EQ(c.readable[0].len, 100u);
    EXPECT_TRUE(c.writable.empty());
    EXPECT_FALSE(q_.pop().has_value());
    EXPECT_EQ(q_.state().next_avail, 1);
}

TEST_F(Virtqueue, ReadableThenWritable) {
    driver_->desc(5, kData, 16, kNext, 2);
    driver_->desc(2, kData + 0x100, 512, kNext, 7);
    driver_->desc(7, kHighRam, 1, kWrite);
    driver_->publish(5);
    auto c = pop_ok();
    EXPECT_EQ(c.head, 5);
    EXPECT_EQ(c.readable.size(), 2u);
    EXPECT_EQ(c.writable.size(), 1u);
    EXPECT_EQ(c.readable_bytes(), 528u);
    EXPECT_EQ(c.writable_bytes(), 1u);
}

TEST_F(Virtqueue, ChainAsLongAsTheQueue) {
    for (uint16_t i = 0; i < kSize; ++i)
        driver_->desc(i, kData + 0x10ull * i, 0x10, static_cast<uint16_t>(i + 1 < kSize ? kNext : 0),
                     static_cast<uint16_t>(i + 1));
    driver_->publish(0);
    EXPECT_EQ(pop_ok().readable.size(), kSize);
}

TEST_F(Virtqueue, IndirectTable) {
    driver_->table_desc(kTable, 0, kData, 64, kNext, 2);
    driver_->table_desc(kTable, 2, kData + 64, 64, kNext | kWrite, 1);
    driver_->table_desc(kTable, 1, kData + 128, 64, kWrite);
    // The WRITE flag of the descriptor naming the table is ignored.
    driver_->desc(4, kTable, 48, kIndirect | kWrite);
    driver_->publish(4);
    auto c = pop_ok();
    EXPECT_EQ(c.head, 4);
    ASSERT_EQ(c.readable.size(), 1u);
    ASSERT_EQ(c.writable.size(), 2u);
    EXPECT_EQ(c.writable[0].addr, kData + 64);
    EXPECT_EQ(c.writable[1].addr, kData + 128);
}

TEST_F(Virtqueue, DirectDescriptorsThenIndirectTable) {
    driver_->table_desc(kTable, 0, kData + 64, 64, kWrite);
    driver_->desc(0, kData, 64, kNext, 1);
    driver_->desc(1, kTable, 16, kIndirect);
    driver_->publish(0);
    auto c = pop_ok();
    EXPECT_EQ(c.readable_bytes(), 64u);
    EXPECT_EQ(c.writable_bytes(), 64u);
}

// An indirect table may be longer than the queue, not than kMaxChainLength
// (counting the direct descriptors before it).
TEST_F(Virtqueue, IndirectChainLimit) {
    constexpr uint64_t kBig = 0x20000;
    for (uint16_t i = 0; i < kMaxChainLength; ++i)
        driver_->table_desc(kBig, i, kData, 1, kNext, static_cast<uint16_t>(i + 1));
    driver_->table_desc(kBig, kMaxChainLength - 1, kData, 1, 0);
    driver_->desc(0, kBig, 16 * kMaxChainLength, kIndirect);
    driver_->desc(1, kData, 1, kNext, 0);
    driver_->publish(0);
    driver_->publish(1);
    EXPECT_EQ(pop_ok().readable.size(), kMaxChainLength);
    EXPECT_NE(pop_error().find("descriptor 0, indirect entry 4095: the chain has more than 4096 descriptors"),
              std::string::npos);
}

TEST_F(Virtqueue, PushUsedFillsTheUsedRing) {
    driver_->desc(0, kData, 8);
    driver_->desc(1, kData, 8);
    driver_->publish(1);
    driver_->publish(0);
    EXPECT_EQ(pop_ok().head, 1);
    EXPECT_EQ(pop_ok().head, 0);
    q_.push_used(1, 0);
    q_.push_used(0, 1234);
    EXPECT_EQ(driver_->used_idx(), 2);
    EXPECT_EQ(driver_->used_elem(0), std::make_pair(1u, 0u));
    EXPECT_EQ(driver_->used_elem(1), std::make_pair(0u, 1234u));
    EXPECT_EQ(q_.state().next_used, 2);
}

// The free-running 16-bit indices wrap from 65535 to 0; ring slots are idx % size.
TEST_F(Virtqueue, IndicesWrapAround) {
    activate(0, 65530);
    driver_->set_avail_idx(65530);
    for (uint16_t i = 0; i < 12; ++i) {
        driver_->desc(i, kData, 8);
        driver_->publish(i);
    }
    EXPECT_EQ(driver_->avail_idx, 6);
    for (uint16_t i = 0; i < 12; ++i) {
        auto c = pop_ok();
        EXPECT_EQ(c.head, i);
        q_.push_used(c.head, i);
    }
    EXPECT_FALSE(q_.pop().has_value());
    EXPECT_EQ(q_.state().next_avail, 6);
    EXPECT_EQ(driver_->used_idx(), 6);
    EXPECT_EQ(driver_->used_elem(65535 % kSize), std::make_pair(5u, 5u));
    EXPECT_EQ(driver_->used_elem(0), std::make_pair(6u, 6u));
}

TEST(VirtqueueEvent, NeedEvent) {
    EXPECT_TRUE(vring_need_event(0, 1, 0));     // the driver wants an event after entry 0
    EXPECT_FALSE(vring_need_event(1, 1, 0));    // ...not yet after entry 1
    EXPECT_TRUE(vring_need_event(5, 10, 3));    // passed in a batch
    EXPECT_FALSE(vring_need_event(2, 10, 3));   // already passed before this batch
    EXPECT_FALSE(vring_need_event(10, 10, 3));  // not reached
    EXPECT_FALSE(vring_need_event(7, 3, 3));    // nothing new
    EXPECT_TRUE(vring_need_event(65535, 1, 65534));  // across the wrap
    EXPECT_TRUE(vring_need_event(0, 1, 65535));
    EXPECT_FALSE(vring_need_event(1, 1, 65535));
    EXPECT_FALSE(vring_need_event(65533, 1, 65534));
}

TEST_F(Virtqueue, EventIdxDecidesInterrupts) {
    activate(kFeatureEventIdx, 7);
    driver_->set_avail_idx(7);
    EXPECT_FALSE(q_.pop().has_value());
    EXPECT_EQ(driver_->avail_event(), 7) << "an empty queue asks for the next chain";
    activate(kFeatureEventIdx);
    driver_->set_avail_idx(0);
    for (uint16_t i = 0; i < 4; ++i) {
        driver_->desc(i, kData, 8);
        driver_->publish(i);
    }
    for (int i = 0; i < 4; ++i) (void)pop_ok();
    EXPECT_EQ(driver_->avail_event(), 7) << "taking chains asks for no notification: the device is busy";
    EXPECT_FALSE(q_.pop(false).has_value());
    EXPECT_EQ(driver_->avail_event(), 7) << "a device that will look again later does not ask either";
    EXPECT_FALSE(q_.pop().has_value());
    EXPECT_EQ(driver_->avail_event(), 4) << "an emptied ring asks to be notified at the next chain";
    driver_->set_used_event(1);
    q_.push_used(0, 0);
    EXPECT_TRUE(q_.should_notify()) << "first decision after activate";
    q_.push_used(1, 0);  // used idx 1 -> 2 passes used_event 1
    EXPECT_TRUE(q_.should_notify());
    q_.push_used(2, 0);  // 2 -> 3: the driver asked for 1 only
    EXPECT_FALSE(q_.should_notify());
    EXPECT_FALSE(q_.should_notify()) << "nothing new";
    driver_->set_used_event(3);
    q_.push_used(3, 0);
    EXPECT_TRUE(q_.should_notify());
}

// A device that stops before the ring is empty (a receive queue whose
// backend failed) asks for a notification at the driver's next chain, not at
// the chains already there.
TEST_F(Virtqueue, ArmNotificationAsksForTheDriversNextChain) {
    activate(kFeatureEventIdx);
    driver_->set_avail_idx(0);
    for (uint16_t i = 0; i < 3; ++i) {
        driver_->desc(i, kData, 8);
        driver_->publish(i);
    }
    (void)pop_ok();
    q_.arm_notification();
    EXPECT_EQ(driver_->avail_event(), 3);
    EXPECT_TRUE(vring_need_event(driver_->avail_event(), 4, 3)) << "the driver's next chain notifies";
}

TEST_F(Virtqueue, EventIdxAcrossTheWrap) {
    activate(kFeatureEventIdx, 65534);
    driver_->set_avail_idx(65534);
    for (uint16_t i = 0; i < 3; ++i) {
        driver_->desc(i, kData, 8);
        driver_->publish(i);
    }
    for (int i = 0; i < 3; ++i) (void)pop_ok();
    EXPECT_FALSE(q_.pop().has_value());
    EXPECT_EQ(driver_->avail_event(), 1);
    driver_->set_used_event(65534);
    q_.push_used(0, 0);
    EXPECT_TRUE(q_.should_notify());
    driver_->set_used_event(65535);
    q_.push_used(1, 0);  // 65535 -> 0
    q_.push_used(2, 0);  // 0 -> 1
    EXPECT_TRUE(q_.should_notify());
}

TEST_F(Virtqueue, NoInterruptFlagWithoutEventIdx) {
    driver_->desc(0, kData, 8);
    driver_->publish(0);
    (void)pop_ok();
    q_.push_used(0, 0);
    driver_->set_avail_flags(1);
    EXPECT_FALSE(q_.should_notify());
    driver_->set_avail_flags(0);
    EXPECT_TRUE(q_.should_notify());
}

TEST_F(Virtqueue, ReadAndWriteAcrossBuffers) {
    driver_->desc(0, kData, 3, kNext, 1);
    driver_->desc(1, kHighRam + 100, 5, kNext, 2);
    driver_->desc(2, kData + 0x100, 4, kNext | kWrite, 3);
    driver_->desc(3, kHighRam + 0x200, 6, kWrite);
    driver_->publish(0);
    auto c = pop_ok();
    std::array<uint8_t, 8> src{};
    std::iota(src.begin(), src.end(), uint8_t{1});
    ASSERT_TRUE(mem_->write(kData, std::span(src).first(3)).ok());
    ASSERT_TRUE(mem_->write(kHighRam + 100, std::span(src).subspan(3)).ok());
    std::array<uint8_t, 8> out{};
    EXPECT_EQ(read_chain(*mem_, c, 0, out), 8u);
    EXPECT_EQ(out, src);
    std::array<uint8_t, 4> part{};
    EXPECT_EQ(read_chain(*mem_, c, 2, part), 4u);
    EXPECT_EQ(part, (std::array<uint8_t, 4>{3, 4, 5, 6}));
    EXPECT_EQ(read_chain(*mem_, c, 6, part), 2u) << "short at the end";
    EXPECT_EQ(read_chain(*mem_, c, 100, part), 0u);

    const std::array<uint8_t, 7> in{10, 11, 12, 13, 14, 15, 16};
    EXPECT_EQ(write_chain(*mem_, c, 1, in), 7u);
    std::array<uint8_t, 4> a{};
    std::array<uint8_t, 6> b{};
    ASSERT_TRUE(mem_->read(kData + 0x100, a).ok());
    ASSERT_TRUE(mem_->read(kHighRam + 0x200, b).ok());
    EXPECT_EQ(a, (std::array<uint8_t, 4>{0, 10, 11, 12}));
    EXPECT_EQ(b, (std::array<uint8_t, 6>{13, 14, 15, 16, 0, 0}));
    EXPECT_EQ(write_chain(*mem_, c, 8, in), 2u) << "short at the end";
}

// Each case breaks one rule; the message must name the problem.
struct Malformed {
    const char* name;
    void (*build)(Driver&);
    const char* message;
};

const Malformed kMalformed[] = {
    {"head out of range", [](Driver& d) { d.publish(16); }, "head descriptor 16 is out of range"},
    {"avail idx too far ahead", [](Driver& d) { d.set_avail_idx(17); }, "more than the queue size 16"},
    {"next out of range",
     [](Driver& d) { d.desc(0, kData, 8, kNext, 99); d.publish(0); }, "next index 99 is out of range"},
    {"loop",
     [](Driver& d) { d.desc(0, kData, 8, kNext, 1); d.desc(1, kData, 8, kNext, 0); d.publish(0); },
     "longer than 16 descriptors"},
    {"zero length", [](Driver& d) { d.desc(0, kData, 0); d.publish(0); }, "descriptor 0: zero-length buffer"},
    {"buffer in the hole", [](Driver& d) { d.desc(7, kHole, 16); d.publish(7); },
     "descriptor 7: buffer [0x100000, +0x10) is outside guest RAM"},
    {"buffer crossing the end of RAM", [](Driver& d) { d.desc(0, kHole - 8, 16); d.publish(0); },
     "is outside guest RAM"},
    {"buffer address overflow", [](Driver& d) { d.desc(0, ~0ull - 4, 16); d.publish(0); },
     "is outside guest RAM"},
    {"readable after writable",
     [](Driver& d) { d.desc(0, kData, 8, kNext | kWrite, 1); d.desc(1, kData, 8); d.publish(0); },
     "descriptor 1: device-readable buffer after a device-writable one"},
    {"indirect and next",
     [](Driver& d) { d.table_desc(kTable, 0, kData, 8, 0); d.desc(0, kTable, 16, kIndirect | kNext, 1);
                     d.desc(1, kData, 8); d.publish(0); },
     "both INDIRECT and NEXT"},
    {"empty indirect table", [](Driver& d) { d.desc(0, kTable, 0, kIndirect); d.publish(0); },
     "not a non-zero multiple of 16"},
    {"indirect table length", [](Driver& d) { d.desc(0, kTable, 24, kIndirect); d.publish(0); },
     "not a non-zero multiple of 16"},
    {"indirect table outside RAM", [](Driver& d) { d.desc(0, kHole - 16, 32, kIndirect); d.publish(0); },
     "indirect table [0xffff0, +0x20) is outside guest RAM"},
    {"nested indirect",
     [](Driver& d) { d.table_desc(kTable, 0, kTable, 16, kIndirect); d.desc(0, kTable, 16, kIndirect); d.publish(0); },
     "INDIRECT flag inside an indirect table"},
    {"indirect next outside the table",
     [](Driver& d) { d.table_desc(kTable, 0, kData, 8, kNext, 2); d.desc(0, kTable, 32, kIndirect); d.publish(0); },
     "next index 2 is outside the indirect table (2 entries)"},
    {"indirect loop",
     [](Driver& d) { d.table_desc(kTable, 0, kData, 8, kNext, 1); d.table_desc(kTable, 1, kData, 8, kNext, 0);
                     d.desc(0, kTable, 32, kIndirect); d.publish(0); },
     "indirect chain longer than 2 descriptors"},
    {"indirect buffer outside RAM",
     [](Driver& d) { d.table_desc(kTable, 0, kHole, 8, 0); d.desc(0, kTable, 16, kIndirect); d.publish(0); },
     "descriptor 0, indirect entry 0: buffer [0x100000, +0x8) is outside guest RAM"},
};

TEST_F(Virtqueue, MalformedChainsBreakTheQueueUntilReset) {
    for (const auto& m : kMalformed) {
        SCOPED_TRACE(m.name);
        SetUp();
        m.build(*driver_);
        const std::string error = pop_error();
        EXPECT_NE(error.find(m.message), std::string::npos) << error;
        // Still broken, even once the driver "fixes" the ring.
        driver_->desc(0, kData, 8);
        driver_->set_avail_idx(0);
        driver_->publish(0);
        EXPECT_NE(pop_error().find("unusable"), std::string::npos);
        q_.push_used(0, 0);
        EXPECT_FALSE(q_.should_notify());
        q_.reset();
        EXPECT_FALSE(q_.active());
        activate(kFeatureIndirectDesc);
        EXPECT_EQ(pop_ok().head, 0);
    }
}

TEST_F(Virtqueue, IndirectNeedsTheFeature) {
    activate(0);
    driver_->table_desc(kTable, 0, kData, 8, 0);
    driver_->desc(0, kTable, 16, kIndirect);
    driver_->publish(0);
    EXPECT_NE(pop_error().find("VIRTIO_F_INDIRECT_DESC was not negotiated"), std::string::npos);
}

TEST_F(Virtqueue, PopNeedsActivation) {
    SplitQueue q;
    auto c = q.pop();
    ASSERT_TRUE(c.has_value());
    EXPECT_FALSE(c->ok());
}

TEST_F(Virtqueue, ActivateChecksTheRings) {
    auto check = [&](uint16_t size, uint64_t desc, uint64_t avail, uint64_t used, const char* message) {
        SplitQueue q({.size = size, .desc_addr = desc, .avail_addr = avail, .used_addr = used});
        auto r = q.activate(*mem_, 0);
        if (message == nullptr) {
            EXPECT_TRUE(r.ok()) << r.error().message;
            EXPECT_TRUE(q.active());
            return;
        }
        ASSERT_FALSE(r.ok()) << message;
        EXPECT_NE(r.error().message.find(message), std::string::npos) << r.error().message;
        EXPECT_FALSE(q.active());
    };
    check(16, kDesc, kAvail, kUsed, nullptr);
    check(32768, 0, kHighRam, kHighRam + 0x10000, nullptr);
    check(0, kDesc, kAvail, kUsed, "queue size 0 is not a power of two");
    check(24, kDesc, kAvail, kUsed, "queue size 24 is not a power of two");
    check(65535, kDesc, kAvail, kUsed, "queue size 65535");
    check(16, kDesc + 8, kAvail, kUsed, "descriptor table address 0x1008 is not 16-byte aligned");
    check(16, kDesc, kAvail + 1, kUsed, "available ring address 0x2001 is not 2-byte aligned");
    check(16, kDesc, kAvail, kUsed + 2, "used ring address 0x3002 is not 4-byte aligned");
    check(16, kHole, kAvail, kUsed, "descriptor table [0x100000, +0x100) is outside guest RAM");
    check(16, kDesc, kHole - 32, kUsed, "available ring [0xfffe0, +0x26) is outside guest RAM");
    check(16, kDesc, kAvail, kHole - 128, "used ring [0xfff80, +0x86) is outside guest RAM");
    check(32768, kHole - 0x40000, kAvail, kUsed, "descriptor table");
}

}  // namespace
}  // namespace popek::virtio

namespace popek::virtio {
namespace {

// Live migration's host-side dirty tracking: a buffer a device wrote (an
// I/O completion, a blk read) is dirty once the chain comes back, and so is
// the used ring; nothing is marked while tracking is off.
TEST_F(Virtqueue, PushUsedMarksWrittenBuffersAndTheUsedRingDirty) {
    std::vector<uint64_t> bits;
    mem_->start_dirty_tracking();
    mem_->take_dirty(bits);
    bits.assign(bits.size(), 0);
    driver_->desc(0, kData, 8, kNext, 1);
    driver_->desc(1, kHighRam + 0x3000, 0x2000, kWrite);
    driver_->publish(0);
    mem_->take_dirty(bits);  // the driver's own writes above
    bits.assign(bits.size(), 0);
    auto chain = pop_ok();
    ASSERT_EQ(chain.writable.size(), 1u);
    q_.push_used(chain.head, 0x2000);
    mem_->take_dirty(bits);
    auto dirty = [&](uint64_t gpa) {
        const uint64_t p = mem_->page_index(gpa);
        return ((bits[p / 64] >> (p % 64)) & 1) != 0;
    };
    EXPECT_TRUE(dirty(kHighRam + 0x3000));
    EXPECT_TRUE(dirty(kHighRam + 0x4000));
    EXPECT_FALSE(dirty(kHighRam + 0x5000));
    EXPECT_FALSE(dirty(kData)) << "a readable buffer is not written by the device";
    EXPECT_TRUE(dirty(kUsed));
    mem_->stop_dirty_tracking();
    bits.assign(bits.size(), 0);
    driver_->publish(0);
    auto again = pop_ok();
    q_.push_used(again.head, 0);
    mem_->take_dirty(bits);
    for (uint64_t w : bits) EXPECT_EQ(w, 0u);
}

}  // namespace
}  // namespace popek::virtio
