#include "virtio/blk/config.hpp"

#include <algorithm>
#include <cstring>

namespace popek::virtio::blk {

namespace {

template <class T>
void put(std::array<uint8_t, kConfigSize>& c, size_t offset, T v) {
    std::memcpy(c.data() + offset, &v, sizeof v);  // little-endian host, like the rings
}

}  // namespace

Limits device_limits(const ConfigInput& in, bool read_only) {
    Limits l;
    l.capacity = in.capacity;
    l.read_only = read_only;
    l.seg_max = seg_max_for(in.queue_size);
    l.max_discard_sectors = kMaxDiscardSectors;
    l.max_discard_seg = kMaxDiscardSeg;
    l.max_write_zeroes_sectors = kMaxDiscardSectors;
    l.max_write_zeroes_seg = kMaxDiscardSeg;
    return l;
}

std::array<uint8_t, kConfigSize> build_config(const ConfigInput& in) {
    std::array<uint8_t, kConfigSize> c{};
    put<uint64_t>(c, 0, in.capacity);
    put<uint32_t>(c, 8, kSizeMax);
    put<uint32_t>(c, 12, seg_max_for(in.queue_size));
    // Geometry: a conventional 16 heads x 63 sectors, cylinders to fit.
    put<uint16_t>(c, 16, static_cast<uint16_t>(std::min<uint64_t>(in.capacity / (16 * 63), 0xffff)));
    c[18] = 16;
    c[19] = 63;
    put<uint32_t>(c, 20, static_cast<uint32_t>(kSectorSize));  // blk_size
    // Topology: 4 KiB physical blocks (the host page cache works in pages),
    // aligned at 0, minimum I/O one physical block, no optimal size.
    c[24] = 3;  // physical_block_exp: 2^3 logical blocks
    c[25] = 0;  // alignment_offset
    put<uint16_t>(c, 26, 8);  // min_io_size, in logical blocks
    put<uint32_t>(c, 28, 0);  // opt_io_size
    c[32] = 1;  // writeback: a write is in the host page cache until FLUSH
    put<uint16_t>(c, 34, in.num_queues);
    put<uint32_t>(c, 36, kMaxDiscardSectors);
    put<uint32_t>(c, 40, kMaxDiscardSeg);
    put<uint32_t>(c, 44, kDiscardAlignment);
    put<uint32_t>(c, 48, kMaxDiscardSectors);  // max_write_zeroes_sectors
    put<uint32_t>(c, 52, kMaxDiscardSeg);      // max_write_zeroes_seg
    c[56] = 1;  // write_zeroes_may_unmap: UNMAP may deallocate (we punch holes)
    return c;
}

}  // namespace popek::virtio::blk
