// virtio-rng keeps nothing across a snapshot but the fact that it exists:
// every request is answered the moment it is seen.
#pragma once

namespace popek::virtio::rng {

struct State {};

}  // namespace popek::virtio::rng
