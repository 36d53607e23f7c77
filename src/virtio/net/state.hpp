// What a virtio-net snapshot records: the identity and link the driver
// sees. Frames in flight are not state: none is held between event-loop
// iterations (a chain taken but not used goes back to the ring), and the
// backend keeps frames it was not asked for yet.
#pragma once

#include <array>
#include <cstdint>

namespace popek::virtio::net {

struct State {
    std::array<uint8_t, 6> mac{};
    bool link_up = true;
    uint16_t mtu = 1500;  // config mtu (VIRTIO_NET_F_MTU)
};

}  // namespace popek::virtio::net
