// A virtio 1.2 split virtqueue, seen from the device side, over guest memory.
//
// Everything here reads memory the guest controls: ring indices, descriptor
// addresses, lengths, flags and indirect tables are validated in one place
// (pop()) and any violation is an error the transport turns into
// DEVICE_NEEDS_RESET. Nothing is ever read or written outside guest RAM.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "base/result.hpp"
#include "memory/guest_memory.hpp"

namespace popek::virtio {

// Feature bits the queue itself understands (virtio 1.2 section 6).
constexpr uint64_t kFeatureIndirectDesc = 1ull << 28;
constexpr uint64_t kFeatureEventIdx = 1ull << 29;
constexpr uint64_t kFeatureVersion1 = 1ull << 32;

constexpr uint16_t kMaxQueueSize = 32768;
// A chain longer than this is refused even inside an indirect table (Linux
// never builds chains near it; a loop or a hostile table would).
constexpr uint32_t kMaxChainLength = 4096;

// The spec's vring_need_event(): with EVENT_IDX, whether moving the used (or
// avail) index from `old_idx` to `new_idx` passes the other side's
// `event_idx`, i.e. event_idx is in [old_idx, new_idx) modulo 2^16.
[[nodiscard]] constexpr bool vring_need_event(uint16_t event_idx, uint16_t new_idx, uint16_t old_idx) {
    return static_cast<uint16_t>(new_idx - event_idx - 1) < static_cast<uint16_t>(new_idx - old_idx);
}

// One buffer of a chain: guest-physical address and length, already checked
// to lie wholly inside guest RAM.
struct Buffer {
    uint64_t addr;
    uint32_t len;
};

// A parsed descriptor chain: device-readable buffers, then device-writable
// ones (the spec's order; a readable buffer after a writable one is an error).
struct DescriptorChain {
    uint16_t head = 0;
    std::vector<Buffer> readable;
    std::vector<Buffer> writable;
    [[nodiscard]] uint64_t readable_bytes() const;
    [[nodiscard]] uint64_t writable_bytes() const;
};

// Copies out of / into a chain's buffers as if they were one contiguous
// stream, starting `offset` bytes in. Returns bytes copied (short at the end).
size_t read_chain(const memory::GuestMemory& mem, const DescriptorChain& chain, uint64_t offset,
                  std::span<uint8_t> out);
size_t write_chain(const memory::GuestMemory& mem, const DescriptorChain& chain, uint64_t offset,
                   std::span<const uint8_t> in);

class SplitQueue {
public:
    // What the driver configured through the transport, and the indices a
    // snapshot must carry.
    struct State {
        uint16_t size = 0;
        bool ready = false;
        uint64_t desc_addr = 0, avail_addr = 0, used_addr = 0;
        uint16_t next_avail = 0;  // next avail ring slot to consume
        uint16_t next_used = 0;   // next used ring slot to fill
        uint16_t msix_vector = 0xffff;
        bool event_idx = false;   // VIRTIO_F_EVENT_IDX negotiated
        bool indirect = false;    // VIRTIO_F_INDIRECT_DESC negotiated
    };

    SplitQueue() = default;
    explicit SplitQueue(State s) : s_(s) {}

    // Checks the configured rings: size a power of two <= kMaxQueueSize,
    // alignment (desc 16, avail 2, used 4) and every ring wholly in RAM.
    // The queue must be activated before pop/push; `features` are the
    // negotiated ones (event idx and indirect are taken from them). The ring
    // geometry is captured here: later changes to state() addresses or size
    // take effect only at the next activate(). next_avail/next_used are kept
    // (a restored snapshot resumes where it stopped).
    base::Result<void> activate(const memory::GuestMemory& mem, uint64_t features);
    // Back to a freshly constructed queue: default State, inactive, not broken.
    void reset();

    // The next chain the driver made available: nullopt when there is none;
    // an Error when the guest broke the rules (bad head index, descriptor
    // index out of range, loop, too long, buffer outside RAM, zero-length
    // buffer, readable after writable, nested or misaligned indirect table,
    // avail idx running more than `size` ahead). After an Error the queue is
    // unusable until reset.
    //
    // Notifications (EVENT_IDX): taking chains leaves avail_event where it
    // was, so the driver does not notify for chains added while the device is
    // still working through the ring. Finding the ring empty, pop() asks for a
    // notification at the next chain (arm_notification()) and looks once
    // more, unless `arm_when_empty` is false: a device that will look at the
    // ring again anyway (a completion is coming) passes false and saves the
    // driver its notifications, then must call pop() again later.
    std::optional<base::Result<DescriptorChain>> pop(bool arm_when_empty = true);

    // Asks the driver to notify for the next chain it makes available
    // (EVENT_IDX: avail_event = its current avail idx). For a device that
    // stops taking chains before the ring is empty and waits to be notified.
    void arm_notification();

    // Returns a chain to the driver with `written` bytes written into its
    // writable buffers; publishes the used index with release ordering.
    // Marks the chain's writable buffers and the used ring dirty in guest
    // memory (live migration's host-side dirty tracking): a device has
    // finished writing a buffer by the time it returns it, so a page marked
    // here is re-sent after the write, never before.
    void push_used(uint16_t head, uint32_t written);

    // After push_used calls: whether the driver wants an interrupt now
    // (VIRTQ_AVAIL_F_NO_INTERRUPT, or used_event with EVENT_IDX).
    bool should_notify();

    [[nodiscard]] State& state() { return s_; }
    [[nodiscard]] const State& state() const { return s_; }
    [[nodiscard]] bool active() const { return mem_ != nullptr; }

private:
    State s_;
    base::Result<DescriptorChain> parse_chain(uint16_t head) const;
    base::Error fail(base::Error e);

    const memory::GuestMemory* mem_ = nullptr;
    // Host addresses of the rings and the size, validated by activate().
    const uint8_t* desc_ = nullptr;
    const uint8_t* avail_ = nullptr;
    uint8_t* used_ = nullptr;
    uint16_t size_ = 0;
    uint16_t signalled_used_ = 0;   // used idx at the last interrupt (EVENT_IDX)
    bool signalled_valid_ = false;
    bool broken_ = false;
    // The writable buffers of each chain handed out, by head, until it comes
    // back through push_used (capacity is reused: no allocation per request).
    std::vector<std::vector<Buffer>> writable_by_head_;
    uint64_t used_gpa_ = 0;  // the used ring as activated
    void mark_used_ring() const;
};

}  // namespace popek::virtio
