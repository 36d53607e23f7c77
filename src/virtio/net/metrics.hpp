// virtio-net counters (relaxed atomics: written on the event-loop thread,
// read from anywhere).
#pragma once

#include <atomic>
#include <cstdint>

#include "virtio/device.hpp"

namespace popek::virtio::net {

// A snapshot of the counters.
struct NetCounters {
    uint64_t rx_packets = 0, rx_bytes = 0;  // frames (bytes without the header) given to the driver
    uint64_t tx_packets = 0, tx_bytes = 0;  // frames the backend took
    uint64_t rx_dropped = 0;      // received frames that did not fit, were not allowed, or came while the link was down
    uint64_t rx_bad_buffers = 0;  // receive chains returned unused (device-readable, or too small for any frame)
    uint64_t tx_dropped = 0;      // transmit chains refused, or sent while the link was down
    uint64_t backend_errors = 0;  // failed backend reads and writes (a failed write loses its frame)
};

struct NetMetrics {
    std::atomic<uint64_t> rx_packets{0}, rx_bytes{0}, tx_packets{0}, tx_bytes{0};
    std::atomic<uint64_t> rx_dropped{0}, rx_bad_buffers{0}, tx_dropped{0}, backend_errors{0};

    [[nodiscard]] NetCounters snapshot() const {
        NetCounters c;
        c.rx_packets = rx_packets.load(std::memory_order_relaxed);
        c.rx_bytes = rx_bytes.load(std::memory_order_relaxed);
        c.tx_packets = tx_packets.load(std::memory_order_relaxed);
        c.tx_bytes = tx_bytes.load(std::memory_order_relaxed);
        c.rx_dropped = rx_dropped.load(std::memory_order_relaxed);
        c.rx_bad_buffers = rx_bad_buffers.load(std::memory_order_relaxed);
        c.tx_dropped = tx_dropped.load(std::memory_order_relaxed);
        c.backend_errors = backend_errors.load(std::memory_order_relaxed);
        return c;
    }
    // requests: frames either way; bytes_read: received (backend to guest);
    // bytes_written: transmitted; errors: drops, bad buffers, backend errors.
    [[nodiscard]] DeviceMetrics device_metrics() const {
        const NetCounters c = snapshot();
        DeviceMetrics m;
        m.requests = c.rx_packets + c.tx_packets;
        m.bytes_read = c.rx_bytes;
        m.bytes_written = c.tx_bytes;
        m.errors = c.rx_dropped + c.rx_bad_buffers + c.tx_dropped + c.backend_errors;
        return m;
    }
};

}  // namespace popek::virtio::net
