// virtio-console counters (relaxed atomics: written on the event-loop
// thread, and for emergency writes on vCPU threads; read from anywhere).
#pragma once

#include <atomic>
#include <cstdint>

#include "virtio/device.hpp"

namespace popek::virtio::console {

class ConsoleMetrics {
public:
    void request() { requests_.fetch_add(1, std::memory_order_relaxed); }
    void input(uint64_t n) { bytes_in_.fetch_add(n, std::memory_order_relaxed); }
    void output(uint64_t n) { bytes_out_.fetch_add(n, std::memory_order_relaxed); }
    void error() { errors_.fetch_add(1, std::memory_order_relaxed); }
    [[nodiscard]] DeviceMetrics snapshot() const {
        DeviceMetrics m;
        m.requests = requests_.load(std::memory_order_relaxed);
        m.bytes_read = bytes_in_.load(std::memory_order_relaxed);       // host input into the guest
        m.bytes_written = bytes_out_.load(std::memory_order_relaxed);   // guest output to the host
        m.errors = errors_.load(std::memory_order_relaxed);
        return m;
    }

private:
    std::atomic<uint64_t> requests_{0}, bytes_in_{0}, bytes_out_{0}, errors_{0};
};

}  // namespace popek::virtio::console
