#include "virtio/blk/request.hpp"

#include <algorithm>
#include <array>
#include <cstring>

namespace popek::virtio::blk {

using base::Error;
using base::Result;

namespace {

template <class T>
T load_le(const uint8_t* p) {
    T v;
    std::memcpy(&v, p, sizeof v);  // the host is little-endian (queue.cpp asserts it)
    return v;
}

// Host iovecs for `len` bytes of the stream formed by `bufs`, starting
// `offset` bytes in. False if any piece is not guest RAM (pop() already
// checked; this only guards a changed memory map).
bool collect(const memory::GuestMemory& mem, const std::vector<Buffer>& bufs, uint64_t offset, uint64_t len,
             std::vector<iovec>& out) {
    for (const auto& b : bufs) {
        if (len == 0) break;
        if (offset >= b.len) {
            offset -= b.len;
            continue;
        }
        const uint64_t n = std::min<uint64_t>(b.len - offset, len);
        uint8_t* p = mem.host_ptr(b.addr + offset, n);
        if (p == nullptr) return false;
        out.push_back(iovec{p, static_cast<size_t>(n)});
        len -= n;
        offset = 0;
    }
    return len == 0;
}

// [sector, sector + count) lies within the disk (no overflow possible).
bool in_range(uint64_t sector, uint64_t count, uint64_t capacity) {
    return sector <= capacity && count <= capacity - sector;
}

struct Parser {
    const DescriptorChain& chain;
    const memory::GuestMemory& mem;
    const Limits& limits;
    uint64_t readable;       // bytes in the readable stream
    uint64_t writable_data;  // bytes in the writable stream before the status byte

    uint8_t read_write(Request& r, bool is_write) const {
        // Reads take data only from writable buffers, writes only from
        // readable ones: a buffer in the wrong direction is an error, not
        // something to reinterpret.
        if (is_write ? writable_data != 0 : readable != kHeaderSize) return kStatusIoErr;
        if (is_write && limits.read_only) return kStatusIoErr;  // spec: IOERR, and write nothing
        const uint64_t len = is_write ? readable - kHeaderSize : writable_data;
        if (len % kSectorSize != 0) return kStatusIoErr;
        if (!in_range(r.sector, len >> kSectorShift, limits.capacity)) return kStatusIoErr;
        const bool ok = is_write ? collect(mem, chain.readable, kHeaderSize, len, r.data)
                                 : collect(mem, chain.writable, 0, len, r.data);
        if (!ok || r.data.size() > limits.seg_max) return kStatusIoErr;
        r.data_len = len;
        return kStatusOk;
    }

    uint8_t get_id(Request& r) const {
        if (readable != kHeaderSize || writable_data == 0) return kStatusIoErr;
        r.data_len = std::min(writable_data, kIdBytes);
        return collect(mem, chain.writable, 0, r.data_len, r.data) ? kStatusOk : kStatusIoErr;
    }

    uint8_t segments(Request& r, bool discard) const {
        if (!(discard ? limits.discard : limits.write_zeroes)) return kStatusUnsupp;
        if (writable_data != 0) return kStatusIoErr;
        if (limits.read_only) return kStatusIoErr;
        const uint64_t bytes = readable - kHeaderSize;
        const uint64_t max_seg = discard ? limits.max_discard_seg : limits.max_write_zeroes_seg;
        const uint64_t max_sectors = discard ? limits.max_discard_sectors : limits.max_write_zeroes_sectors;
        if (bytes == 0 || bytes % kSegmentSize != 0 || bytes / kSegmentSize > max_seg) return kStatusIoErr;
        for (uint64_t i = 0; i < bytes / kSegmentSize; ++i) {
            std::array<uint8_t, kSegmentSize> raw{};
            if (read_chain(mem, chain, kHeaderSize + i * kSegmentSize, raw) != raw.size()) return kStatusIoErr;
            const auto sector = load_le<uint64_t>(raw.data());
            const auto count = load_le<uint32_t>(raw.data() + 8);
            const auto flags = load_le<uint32_t>(raw.data() + 12);
            // Unknown flags, and UNMAP on a discard, are UNSUPP (5.2.6.2).
            const uint32_t allowed = discard ? 0 : kSegmentFlagUnmap;
            if ((flags & ~allowed) != 0) return kStatusUnsupp;
            if (count > max_sectors || !in_range(sector, count, limits.capacity)) return kStatusIoErr;
            r.segments.push_back(Segment{sector, count, (flags & kSegmentFlagUnmap) != 0});
        }
        return kStatusOk;
    }
};

}  // namespace

Result<ParsedRequest> parse_request(const DescriptorChain& chain, const memory::GuestMemory& mem,
                                    const Limits& limits) {
    if (chain.writable.empty())
        return Error{"virtio-blk: request " + std::to_string(chain.head) +
                     " has no device-writable buffer for its status byte"};
    const Buffer& last = chain.writable.back();
    ParsedRequest out;
    out.status_addr = last.addr + last.len - 1;  // len > 0: pop() refuses empty buffers
    if (mem.host_ptr(out.status_addr, 1) == nullptr)
        return Error{"virtio-blk: request " + std::to_string(chain.head) + ": status byte outside guest RAM"};

    const Parser p{chain, mem, limits, chain.readable_bytes(), chain.writable_bytes() - 1};
    std::array<uint8_t, kHeaderSize> header{};
    if (p.readable < kHeaderSize || read_chain(mem, chain, 0, header) != header.size()) {
        out.status = kStatusIoErr;
        return out;
    }
    Request& r = out.request;
    const auto type = load_le<uint32_t>(header.data());
    r.sector = load_le<uint64_t>(header.data() + 8);  // bytes 4..7 are reserved (ioprio)
    switch (type) {
        case static_cast<uint32_t>(RequestType::In):
            r.type = RequestType::In;
            out.status = p.read_write(r, false);
            break;
        case static_cast<uint32_t>(RequestType::Out):
            r.type = RequestType::Out;
            out.status = p.read_write(r, true);
            break;
        case static_cast<uint32_t>(RequestType::Flush):
            r.type = RequestType::Flush;
            out.status = p.readable == kHeaderSize && p.writable_data == 0 ? kStatusOk : kStatusIoErr;
            break;
        case static_cast<uint32_t>(RequestType::GetId):
            r.type = RequestType::GetId;
            out.status = p.get_id(r);
            break;
        case static_cast<uint32_t>(RequestType::Discard):
            r.type = RequestType::Discard;
            out.status = p.segments(r, true);
            break;
        case static_cast<uint32_t>(RequestType::WriteZeroes):
            r.type = RequestType::WriteZeroes;
            out.status = p.segments(r, false);
            break;
        default:
            out.status = kStatusUnsupp;
            break;
    }
    if (out.status != kStatusOk) out.request = Request{r.type, r.sector, {}, 0, {}};
    return out;
}

}  // namespace popek::virtio::blk
