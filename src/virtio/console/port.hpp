// The console's data paths, apart from the device plumbing: copying a
// transmit chain to the output fd, and a bounded input buffer drained into
// receive chains.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "memory/guest_memory.hpp"
#include "virtio/queue.hpp"

namespace popek::virtio::console {

// Writes all of `bytes` to `fd`, retrying EINTR and waiting (bounded) while
// a non-blocking fd is full. Returns bytes written; fewer means the output
// is gone or stuck, and the rest is dropped rather than stalling the device.
size_t write_output(int fd, std::span<const uint8_t> bytes);

// Copies a transmit chain's readable bytes to `fd`; returns bytes written.
// Device-writable buffers in it are ignored.
size_t transmit_chain(const memory::GuestMemory& mem, const DescriptorChain& chain, int fd,
                      std::vector<uint8_t>& scratch, bool& failed);

// Input read from the host and not yet given to the guest. Bounded: when it
// is full the device stops reading its input fd until the guest takes some.
class InputBuffer {
public:
    static constexpr size_t kCapacity = 64 * 1024;

    explicit InputBuffer(std::vector<uint8_t> initial = {});
    [[nodiscard]] size_t size() const { return bytes_.size() - start_; }
    [[nodiscard]] bool empty() const { return size() == 0; }
    [[nodiscard]] size_t room() const { return kCapacity > size() ? kCapacity - size() : 0; }
    void append(std::span<const uint8_t> b);
    // Copies as much as fits into the chain's writable buffers, consumes it,
    // returns the byte count.
    uint32_t deliver(const memory::GuestMemory& mem, const DescriptorChain& chain);
    [[nodiscard]] std::vector<uint8_t> contents() const;
    void clear();

private:
    std::vector<uint8_t> bytes_;
    size_t start_ = 0;  // consumed bytes at the front, compacted lazily
};

}  // namespace popek::virtio::console
