// virtio-blk counters: written on the device's event-loop thread, read from
// anywhere (relaxed atomics: each counter is exact, a set of them is not a
// consistent snapshot, which metrics never need).
#pragma once

#include <atomic>
#include <cstdint>

#include "virtio/device.hpp"

namespace popek::virtio::blk {

struct BlockMetricsSnapshot {
    DeviceMetrics common;  // requests, bytes read/written, errors (non-OK statuses)
    uint64_t flushes = 0;
    uint64_t discards = 0;       // requests, not segments
    uint64_t write_zeroes = 0;
    uint64_t unsupported = 0;    // answered UNSUPP
};

class BlockMetrics {
public:
    void request() { add(requests_, 1); }
    void read(uint64_t bytes) { add(bytes_read_, bytes); }
    void written(uint64_t bytes) { add(bytes_written_, bytes); }
    void error() { add(errors_, 1); }
    void flush() { add(flushes_, 1); }
    void discard() { add(discards_, 1); }
    void write_zeroes() { add(write_zeroes_, 1); }
    void unsupported() { add(unsupported_, 1); }

    [[nodiscard]] BlockMetricsSnapshot snapshot() const {
        BlockMetricsSnapshot s;
        s.common.requests = requests_.load(std::memory_order_relaxed);
        s.common.bytes_read = bytes_read_.load(std::memory_order_relaxed);
        s.common.bytes_written = bytes_written_.load(std::memory_order_relaxed);
        s.common.errors = errors_.load(std::memory_order_relaxed);
        s.flushes = flushes_.load(std::memory_order_relaxed);
        s.discards = discards_.load(std::memory_order_relaxed);
        s.write_zeroes = write_zeroes_.load(std::memory_order_relaxed);
        s.unsupported = unsupported_.load(std::memory_order_relaxed);
        return s;
    }

private:
    static void add(std::atomic<uint64_t>& c, uint64_t n) { c.fetch_add(n, std::memory_order_relaxed); }
    std::atomic<uint64_t> requests_{0}, bytes_read_{0}, bytes_written_{0}, errors_{0};
    std::atomic<uint64_t> flushes_{0}, discards_{0}, write_zeroes_{0}, unsupported_{0};
};

}  // namespace popek::virtio::blk
