// What a virtio-blk snapshot records. In-flight requests never appear:
// the device is drained (BlockDevice::drain) before save(), so every
// request the guest submitted is either completed or still in its avail ring.
#pragma once

#include <cstdint>

namespace popek::virtio::blk {

struct State {
    // The disk the snapshot was taken with: restoring onto a disk of another
    // size or access mode, or with another queue count, is refused.
    uint64_t capacity = 0;  // sectors
    bool read_only = false;
    uint16_t num_queues = 1;
    uint64_t features = 0;  // negotiated at the last activate (0 if never)
};

}  // namespace popek::virtio::blk
