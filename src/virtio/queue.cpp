#include "virtio/queue.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <string>

namespace popek::virtio {

using base::Error;
using base::Result;

static_assert(std::endian::native == std::endian::little,
              "virtio 1.x rings are little-endian; big-endian hosts would need byte swaps");

namespace {

constexpr uint16_t kDescFNext = 1;
constexpr uint16_t kDescFWrite = 2;
constexpr uint16_t kDescFIndirect = 4;
constexpr uint16_t kAvailFNoInterrupt = 1;
constexpr uint64_t kDescSize = 16;

// Ring layout (virtio 1.2, 2.7): avail = flags, idx, ring[size], used_event;
// used = flags, idx, ring[size] of {id, len}, avail_event.
constexpr uint64_t desc_table_bytes(uint16_t size) { return kDescSize * size; }
constexpr uint64_t avail_ring_bytes(uint16_t size) { return 6 + 2ull * size; }
constexpr uint64_t used_ring_bytes(uint16_t size) { return 6 + 8ull * size; }

struct RawDesc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};
static_assert(sizeof(RawDesc) == kDescSize);

// The guest may rewrite a descriptor while we parse it: copy it once and make
// sure the compiler cannot re-read guest memory in place of the copy (that
// would let a check and a use see different values).
RawDesc load_desc(const uint8_t* p) {
    RawDesc d;
    std::memcpy(&d, p, sizeof d);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    return d;
}

// Ring fields are naturally aligned (activate() checks the ring bases and the
// host mapping is page aligned), so the __atomic builtins apply directly.
uint16_t load_u16(const uint8_t* p, int order) {
    return __atomic_load_n(static_cast<const uint16_t*>(static_cast<const void*>(p)), order);
}
void store_u16(uint8_t* p, uint16_t v, int order) {
    __atomic_store_n(static_cast<uint16_t*>(static_cast<void*>(p)), v, order);
}
void store_u32(uint8_t* p, uint32_t v, int order) {
    __atomic_store_n(static_cast<uint32_t*>(static_cast<void*>(p)), v, order);
}

std::string range_text(uint64_t addr, uint64_t len) { return fmt::format("[{:#x}, +{:#x})", addr, len); }

// Where a descriptor sits, for error messages: "descriptor 7" or
// "descriptor 7, indirect entry 3".
struct Where {
    uint16_t desc;
    int64_t entry = -1;
    [[nodiscard]] std::string text() const {
        if (entry < 0) return fmt::format("descriptor {}", desc);
        return fmt::format("descriptor {}, indirect entry {}", desc, entry);
    }
};

// Collects validated buffers into a chain in the spec's order.
class ChainBuilder {
public:
    ChainBuilder(const memory::GuestMemory& mem, DescriptorChain& chain) : mem_(mem), chain_(chain) {}

    Result<void> add(const RawDesc& d, const Where& where) {
        if (d.len == 0) return Error{where.text() + ": zero-length buffer"};
        if (mem_.host_ptr(d.addr, d.len) == nullptr)
            return Error{where.text() + ": buffer " + range_text(d.addr, d.len) + " is outside guest RAM"};
        // Direct descriptors then an indirect table: together still bounded.
        if (chain_.readable.size() + chain_.writable.size() >= kMaxChainLength)
            return Error{fmt::format("{}: the chain has more than {} descriptors", where.text(), kMaxChainLength)};
        total_ += d.len;
        if (total_ > UINT32_MAX)
            return Error{where.text() + ": the chain is longer than 4 GiB in total"};
        if ((d.flags & kDescFWrite) != 0) {
            chain_.writable.push_back(Buffer{d.addr, d.len});
        } else {
            if (!chain_.writable.empty())
                return Error{where.text() + ": device-readable buffer after a device-writable one"};
            chain_.readable.push_back(Buffer{d.addr, d.len});
        }
        return {};
    }

    // The descriptor `d` (found at direct index `at`) refers to an indirect
    // table: walk it. Its own WRITE flag is ignored, as the spec requires.
    Result<void> add_indirect(const RawDesc& d, uint16_t at) {
        const Where self{at};
        if (d.len == 0 || d.len % kDescSize != 0)
            return Error{fmt::format("{}: indirect table length {:#x} is not a non-zero multiple of 16",
                                     self.text(), d.len)};
        const uint8_t* table = mem_.host_ptr(d.addr, d.len);
        if (table == nullptr)
            return Error{self.text() + ": indirect table " + range_text(d.addr, d.len) + " is outside guest RAM"};
        const uint32_t entries = d.len / static_cast<uint32_t>(kDescSize);
        const uint32_t limit = std::min(entries, kMaxChainLength);
        uint32_t i = 0;
        for (uint32_t count = 1;; ++count) {
            const Where where{at, i};
            if (count > limit)
                return Error{fmt::format("{}: indirect chain longer than {} descriptors (a loop?)", self.text(),
                                         limit)};
            const RawDesc e = load_desc(table + kDescSize * i);
            if ((e.flags & kDescFIndirect) != 0)
                return Error{where.text() + ": INDIRECT flag inside an indirect table"};
            POPEK_TRY(add(e, where));
            if ((e.flags & kDescFNext) == 0) return {};
            if (e.next >= entries)
                return Error{fmt::format("{}: next index {} is outside the indirect table ({} entries)",
                                         where.text(), e.next, entries)};
            i = e.next;
        }
    }

private:
    const memory::GuestMemory& mem_;
    DescriptorChain& chain_;
    uint64_t total_ = 0;
};

uint64_t total_len(const std::vector<Buffer>& bufs) {
    uint64_t n = 0;
    for (const auto& b : bufs) n += b.len;
    return n;
}

// Walks `len` bytes of the stream formed by `bufs`, starting `offset` bytes
// in: calls fn(guest host pointer, position in the caller's data, bytes).
template <class Fn>
size_t for_each_piece(const memory::GuestMemory& mem, const std::vector<Buffer>& bufs, uint64_t offset,
                      size_t len, Fn fn) {
    size_t done = 0;
    for (const auto& b : bufs) {
        if (done == len) break;
        if (offset >= b.len) {
            offset -= b.len;
            continue;
        }
        uint8_t* p = mem.host_ptr(b.addr, b.len);
        if (p == nullptr) break;  // pop() validated it; only a changed memory map gets here
        const auto n = static_cast<size_t>(std::min<uint64_t>(b.len - offset, len - done));
        fn(p + offset, done, n);
        done += n;
        offset = 0;
    }
    return done;
}

}  // namespace

uint64_t DescriptorChain::readable_bytes() const { return total_len(readable); }
uint64_t DescriptorChain::writable_bytes() const { return total_len(writable); }

size_t read_chain(const memory::GuestMemory& mem, const DescriptorChain& chain, uint64_t offset,
                  std::span<uint8_t> out) {
    return for_each_piece(mem, chain.readable, offset, out.size(),
                          [&](const uint8_t* guest, size_t at, size_t n) { std::memcpy(out.data() + at, guest, n); });
}

size_t write_chain(const memory::GuestMemory& mem, const DescriptorChain& chain, uint64_t offset,
                   std::span<const uint8_t> in) {
    return for_each_piece(mem, chain.writable, offset, in.size(),
                          [&](uint8_t* guest, size_t at, size_t n) { std::memcpy(guest, in.data() + at, n); });
}

Result<void> SplitQueue::activate(const memory::GuestMemory& mem, uint64_t features) {
    mem_ = nullptr;
    const uint16_t size = s_.size;
    if (size == 0 || !std::has_single_bit(size) || size > kMaxQueueSize)
        return Error{fmt::format("queue size {} is not a power of two between 1 and {}", size, kMaxQueueSize)};
    struct Ring {
        const char* name;
        uint64_t addr, align, len;
    };
    const Ring rings[] = {{"descriptor table", s_.desc_addr, 16, desc_table_bytes(size)},
                          {"available ring", s_.avail_addr, 2, avail_ring_bytes(size)},
                          {"used ring", s_.used_addr, 4, used_ring_bytes(size)}};
    for (const auto& r : rings) {
        if (r.addr % r.align != 0)
            return Error{fmt::format("{} address {:#x} is not {}-byte aligned", r.name, r.addr, r.align)};
        if (mem.host_ptr(r.addr, r.len) == nullptr)
            return Error{fmt::format("{} {} is outside guest RAM", r.name, range_text(r.addr, r.len))};
    }
    desc_ = mem.host_ptr(s_.desc_addr, desc_table_bytes(size));
    avail_ = mem.host_ptr(s_.avail_addr, avail_ring_bytes(size));
    used_ = mem.host_ptr(s_.used_addr, used_ring_bytes(size));
    size_ = size;
    s_.event_idx = (features & kFeatureEventIdx) != 0;
    s_.indirect = (features & kFeatureIndirectDesc) != 0;
    signalled_valid_ = false;
    writable_by_head_.assign(size, {});
    used_gpa_ = s_.used_addr;
    mem_ = &mem;
    return {};
}

void SplitQueue::reset() { *this = SplitQueue(); }

Error SplitQueue::fail(Error e) {
    broken_ = true;
    return e;
}

Result<DescriptorChain> SplitQueue::parse_chain(uint16_t head) const {
    DescriptorChain chain;
    chain.head = head;
    ChainBuilder builder(*mem_, chain);
    const uint32_t limit = std::min<uint32_t>(size_, kMaxChainLength);
    uint16_t idx = head;
    for (uint32_t count = 1;; ++count) {
        if (count > limit)
            return Error{fmt::format("chain at head {}: longer than {} descriptors (a loop?)", head, limit)};
        const RawDesc d = load_desc(desc_ + kDescSize * idx);
        if ((d.flags & kDescFIndirect) != 0) {
            if (!s_.indirect)
                return Error{fmt::format("descriptor {}: INDIRECT flag, but VIRTIO_F_INDIRECT_DESC was not "
                                         "negotiated", idx)};
            if ((d.flags & kDescFNext) != 0)
                return Error{fmt::format("descriptor {}: both INDIRECT and NEXT flags are set", idx)};
            POPEK_TRY(builder.add_indirect(d, idx));
            return chain;
        }
        POPEK_TRY(builder.add(d, Where{idx}));
        if ((d.flags & kDescFNext) == 0) return chain;
        if (d.next >= size_)
            return Error{fmt::format("descriptor {}: next index {} is out of range (queue size {})", idx, d.next,
                                     size_)};
        idx = d.next;
    }
}

void SplitQueue::arm_notification() {
    if (mem_ == nullptr || broken_ || !s_.event_idx) return;
    store_u16(used_ + 4 + 8ull * size_, load_u16(avail_ + 2, __ATOMIC_ACQUIRE), __ATOMIC_RELAXED);
    mark_used_ring();
}

std::optional<Result<DescriptorChain>> SplitQueue::pop(bool arm_when_empty) {
    if (mem_ == nullptr) return Result<DescriptorChain>(Error{"virtqueue: pop() on a queue that is not active"});
    if (broken_) return Result<DescriptorChain>(Error{"virtqueue: unusable after an earlier error until reset"});
    uint16_t avail_idx = load_u16(avail_ + 2, __ATOMIC_ACQUIRE);
    if (avail_idx == s_.next_avail) {
        if (!s_.event_idx || !arm_when_empty) return std::nullopt;
        // Ask for a notification at the next chain, then look once more: the
        // driver may have added one before it could see our avail_event
        // (the driver pairs this with a full barrier of its own).
        store_u16(used_ + 4 + 8ull * size_, s_.next_avail, __ATOMIC_RELAXED);
        mark_used_ring();
        std::atomic_thread_fence(std::memory_order_seq_cst);
        avail_idx = load_u16(avail_ + 2, __ATOMIC_ACQUIRE);
        if (avail_idx == s_.next_avail) return std::nullopt;
    }
    const auto pending = static_cast<uint16_t>(avail_idx - s_.next_avail);
    if (pending > size_)
        return Result<DescriptorChain>(fail(Error{fmt::format(
            "available index {} is {} entries ahead of the next one to consume ({}), more than the queue size {}",
            avail_idx, pending, s_.next_avail, size_)}));
    const auto slot = static_cast<uint16_t>(s_.next_avail & (size_ - 1));
    const uint16_t head = load_u16(avail_ + 4 + 2ull * slot, __ATOMIC_RELAXED);
    if (head >= size_)
        return Result<DescriptorChain>(fail(Error{fmt::format(
            "available ring entry {}: head descriptor {} is out of range (queue size {})", slot, head, size_)}));
    auto chain = parse_chain(head);
    if (!chain.ok()) return Result<DescriptorChain>(fail(chain.error()));
    ++s_.next_avail;
    writable_by_head_[head].assign(chain->writable.begin(), chain->writable.end());
    return chain;
}

void SplitQueue::push_used(uint16_t head, uint32_t written) {
    if (mem_ == nullptr || broken_) return;
    const auto slot = static_cast<uint16_t>(s_.next_used & (size_ - 1));
    uint8_t* elem = used_ + 4 + 8ull * slot;
    store_u32(elem, head, __ATOMIC_RELAXED);
    store_u32(elem + 4, written, __ATOMIC_RELAXED);
    ++s_.next_used;
    // The element must be visible before the index that publishes it.
    store_u16(used_ + 2, s_.next_used, __ATOMIC_RELEASE);
    if (head < writable_by_head_.size()) {
        for (const Buffer& b : writable_by_head_[head]) mem_->mark_dirty(b.addr, b.len);
        writable_by_head_[head].clear();
    }
    mark_used_ring();
}

void SplitQueue::mark_used_ring() const { mem_->mark_dirty(used_gpa_, used_ring_bytes(size_)); }

bool SplitQueue::should_notify() {
    if (mem_ == nullptr || broken_) return false;
    // Our used idx store must be ordered before reading what the driver
    // asked for; the driver does the mirror image (store flags/used_event,
    // full barrier, read used idx).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!s_.event_idx) return (load_u16(avail_, __ATOMIC_RELAXED) & kAvailFNoInterrupt) == 0;
    const uint16_t used_event = load_u16(avail_ + 4 + 2ull * size_, __ATOMIC_RELAXED);
    const uint16_t old = signalled_used_;
    const bool known = signalled_valid_;
    signalled_used_ = s_.next_used;
    signalled_valid_ = true;
    // Unknown what the driver saw last (just activated): interrupt to be safe.
    if (!known) return true;
    return vring_need_event(used_event, s_.next_used, old);
}

}  // namespace popek::virtio
