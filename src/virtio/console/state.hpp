// What a virtio-console snapshot records: input the host has read but the
// guest has not received yet (no receive buffer was free).
#pragma once

#include <cstdint>
#include <vector>

namespace popek::virtio::console {

struct State {
    std::vector<uint8_t> pending_input;
};

}  // namespace popek::virtio::console
