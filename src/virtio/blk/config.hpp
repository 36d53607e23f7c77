// The virtio-blk configuration space (struct virtio_blk_config, 5.2.4) and
// the limits the device advertises in it: one set of numbers feeds both the
// config bytes the driver reads and the checks parse_request() applies.
#pragma once

#include <array>
#include <cstdint>

#include "virtio/blk/request.hpp"

namespace popek::virtio::blk {

// Up to and including write_zeroes_may_unmap and its padding; the secure
// erase and zoned fields after it belong to features we do not offer.
constexpr size_t kConfigSize = 60;

// Longest single buffer the driver should use. Only advice: longer buffers
// are still served (they are as safe), so it is not enforced.
constexpr uint32_t kSizeMax = 1u << 20;
// Discard / write-zeroes: sectors per segment and segments per request.
constexpr uint32_t kMaxDiscardSectors = 1u << 21;  // 1 GiB
constexpr uint32_t kMaxDiscardSeg = 32;
constexpr uint32_t kDiscardAlignment = 8;  // sectors: the host file system's 4 KiB blocks

struct ConfigInput {
    uint64_t capacity;  // sectors
    uint16_t queue_size;
    uint16_t num_queues;
};

// seg_max: two descriptors of a full ring go to the header and the status.
constexpr uint32_t seg_max_for(uint16_t queue_size) { return queue_size > 2 ? queue_size - 2u : 1u; }

Limits device_limits(const ConfigInput& in, bool read_only);
std::array<uint8_t, kConfigSize> build_config(const ConfigInput& in);

}  // namespace popek::virtio::blk
