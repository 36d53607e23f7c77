// virtio-rng counters (relaxed atomics: written on the event-loop thread,
// read from anywhere).
#pragma once

#include <atomic>
#include <cstdint>

#include "virtio/device.hpp"

namespace popek::virtio::rng {

class RngMetrics {
public:
    void request(uint64_t bytes) {
        requests_.fetch_add(1, std::memory_order_relaxed);
        bytes_.fetch_add(bytes, std::memory_order_relaxed);
    }
    void error() { errors_.fetch_add(1, std::memory_order_relaxed); }
    [[nodiscard]] DeviceMetrics snapshot() const {
        DeviceMetrics m;
        m.requests = requests_.load(std::memory_order_relaxed);
        m.bytes_read = bytes_.load(std::memory_order_relaxed);  // entropy into the guest
        m.errors = errors_.load(std::memory_order_relaxed);
        return m;
    }

private:
    std::atomic<uint64_t> requests_{0}, bytes_{0}, errors_{0};
};

}  // namespace popek::virtio::rng
