// libFuzzer target: a hostile driver against SplitQueue.
//
// Input layout:
//   [0]      queue size selector (1 << (b % 9), or a raw u16 when bit 7 is set)
//   [1]      features: bit 0 EVENT_IDX, bit 1 INDIRECT_DESC
//   [2..7]   desc, avail, used ring addresses (u16 each)
//   [8..11]  next_avail, next_used (u16 each)
//   [12]     n: number of operation bytes that follow
//   [13..]   n operation bytes, then guest RAM contents (the rest is zero)
//
// Guest RAM is [0, 4 KiB) and [8 KiB, 12 KiB): the hole and everything
// above 12 KiB are not RAM (fuzz_virtqueue.options lets inputs fill both). Whatever the input, the queue must return values
// or errors, every buffer it hands out must lie in RAM, and an error must
// leave the queue broken until reset.
#include "fuzz_common.hpp"
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

#include "memory/guest_memory.hpp"
#include "virtio/queue.hpp"

using popek::memory::GuestMemory;
using popek::memory::RamRange;
using popek::virtio::DescriptorChain;
using popek::virtio::SplitQueue;

using popek::fuzz::check;
using popek::fuzz::Input;

namespace {

constexpr uint64_t kLowSize = 4 << 10, kHighBase = 8 << 10, kHighSize = 4 << 10;

const GuestMemory& guest_memory() {
    static const GuestMemory mem = popek::fuzz::guest_memory_with_hole(kLowSize, kHighBase, kHighSize);
    return mem;
}

void fill_memory(const GuestMemory& mem, std::span<const uint8_t> bytes) {
    for (const auto& r : mem.regions()) {
        const size_t n = std::min<size_t>(bytes.size(), r.size);
        std::memcpy(r.host, bytes.data(), n);
        std::memset(r.host + n, 0, r.size - n);
        bytes = bytes.subspan(n);
    }
}

void check_chain(const GuestMemory& mem, const SplitQueue& q, const DescriptorChain& c) {
    check(c.head < q.state().size);
    check(c.readable.size() + c.writable.size() <= popek::virtio::kMaxChainLength);
    for (const auto* bufs : {&c.readable, &c.writable})
        for (const auto& b : *bufs) check(b.len != 0 && mem.host_ptr(b.addr, b.len) != nullptr);
    // Stream copies over the whole chain and from an offset inside it.
    std::vector<uint8_t> scratch(4096);
    const uint64_t rb = c.readable_bytes(), wb = c.writable_bytes();
    check(popek::virtio::read_chain(mem, c, 0, scratch) == std::min<uint64_t>(rb, scratch.size()));
    check(popek::virtio::read_chain(mem, c, rb / 2, scratch) <= scratch.size());
    check(popek::virtio::write_chain(mem, c, wb / 3, scratch) == std::min<uint64_t>(wb - wb / 3, scratch.size()));
}

// Pops one chain; returns false when the queue is empty or broken.
bool pop_one(const GuestMemory& mem, SplitQueue& q, bool complete) {
    const uint16_t before = q.state().next_avail;
    auto c = q.pop();
    if (!c) return false;
    if (!c->ok()) {
        check(q.state().next_avail == before);
        auto again = q.pop();
        check(again.has_value() && !again->ok());  // broken until reset
        return false;
    }
    check(q.state().next_avail == static_cast<uint16_t>(before + 1));
    check_chain(mem, q, c->value());
    if (complete) q.push_used(c->value().head, static_cast<uint32_t>(c->value().writable_bytes()));
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const GuestMemory& mem = guest_memory();
    Input in(data, size);
    SplitQueue::State s;
    const uint8_t size_sel = in.u8();
    s.size = static_cast<uint16_t>(1u << (size_sel % 9));
    const uint8_t features = in.u8();
    s.desc_addr = in.u16();
    s.avail_addr = in.u16();
    s.used_addr = in.u16();
    s.next_avail = in.u16();
    s.next_used = in.u16();
    if ((size_sel & 0x80) != 0) s.size = in.u16();
    std::vector<uint8_t> ops(in.u8());
    for (auto& op : ops) op = in.u8();
    fill_memory(mem, in.rest());

    uint64_t feature_bits = popek::virtio::kFeatureVersion1;
    if ((features & 1) != 0) feature_bits |= popek::virtio::kFeatureEventIdx;
    if ((features & 2) != 0) feature_bits |= popek::virtio::kFeatureIndirectDesc;
    SplitQueue q(s);
    if (!q.activate(mem, feature_bits).ok()) {
        check(!q.active());
        auto c = q.pop();
        check(c.has_value() && !c->ok());
        return 0;
    }
    if (ops.empty()) ops.push_back(0);
    for (size_t i = 0; i < ops.size(); ++i) {
        switch (ops[i] % 5) {
        case 0:  // drain: every chain, completed, then maybe an interrupt
            for (uint32_t n = 0; n <= q.state().size && pop_one(mem, q, true); ++n) {
            }
            (void)q.should_notify();
            break;
        case 1:  // one chain, left in flight
            (void)pop_one(mem, q, false);
            break;
        case 2:  // complete an arbitrary head (the device's choice, not validated)
            q.push_used(static_cast<uint16_t>(ops[i] >> 3), ops[i]);
            break;
        case 3:
            (void)q.should_notify();
            break;
        case 4: {  // the driver publishes more: bump avail idx in place
            auto idx = mem.span(s.avail_addr + 2, 2);
            const auto v = static_cast<uint16_t>(idx[0] + (idx[1] << 8) + (ops[i] >> 3));
            idx[0] = static_cast<uint8_t>(v);
            idx[1] = static_cast<uint8_t>(v >> 8);
            break;
        }
        }
    }
    q.reset();
    check(!q.active());
    return 0;
}
