// Serving one virtio-rng request: fill the chain's device-writable buffers
// with random bytes from getrandom(2).
#pragma once

#include <cstdint>
#include <vector>

#include "base/result.hpp"
#include "memory/guest_memory.hpp"
#include "virtio/queue.hpp"

namespace popek::virtio::rng {

// At most this much per request: a guest asking for gigabytes gets a short
// answer (the driver asks again) instead of stalling the device's thread.
constexpr uint32_t kMaxRequestBytes = 64 * 1024;

// Fills up to kMaxRequestBytes of the chain's writable buffers (readable
// ones are ignored) and returns how many bytes it wrote. `scratch` is reused
// between calls to avoid an allocation per request.
base::Result<uint32_t> fill_request(const memory::GuestMemory& mem, const DescriptorChain& chain,
                                    std::vector<uint8_t>& scratch);

// getrandom(2) until `out` is full: loops on short reads and EINTR.
base::Result<void> get_random(std::span<uint8_t> out);

}  // namespace popek::virtio::rng
