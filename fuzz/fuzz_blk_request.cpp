// libFuzzer target: hostile virtio-blk requests against parse_request().
//
// Input layout:
//   [0]      bits 0-2: readable buffers (0-7), bits 3-5: writable buffers (0-7)
//   [1]      bit 0 read-only disk, bit 1 DISCARD negotiated, bit 2 WRITE_ZEROES negotiated
//   [2..3]   capacity in sectors (u16)
//   [4]      seg_max, [5] max discard / write-zeroes segments, [6..7] their max sectors (u16)
//   then 5 bytes per buffer: region (1), offset (u16), length (u16), clamped
//            so that each buffer lies in one RAM region like pop() guarantees
//   the rest: guest RAM contents (headers, segments, data)
//
// Guest RAM is [0, 16 KiB) and [32 KiB, 48 KiB). Whatever the input, the
// parser must return a status or an error only for a chain without a status
// byte, and anything it accepts must respect every limit and point only into
// RAM. (Buffers may alias each other, the status byte included: a guest may
// do that to itself, so it is not checked.)
#include "fuzz_common.hpp"
#include <sys/uio.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "memory/guest_memory.hpp"
#include "virtio/blk/request.hpp"

using popek::memory::GuestMemory;
using popek::memory::RamRange;
using popek::virtio::Buffer;
using popek::virtio::DescriptorChain;
namespace blk = popek::virtio::blk;

using popek::fuzz::check;
using popek::fuzz::Input;

namespace {

constexpr uint64_t kRegionSize = 16 << 10, kHighBase = 32 << 10;

const GuestMemory& guest_memory() {
    static const GuestMemory mem = popek::fuzz::guest_memory_with_hole(kRegionSize, kHighBase, kRegionSize);
    return mem;
}

Buffer make_buffer(Input& in) {
    const uint64_t base = (in.u8() & 1) != 0 ? kHighBase : 0;
    const uint64_t offset = in.u16() % kRegionSize;
    const uint64_t len = 1 + in.u16() % (kRegionSize - offset);
    return Buffer{base + offset, static_cast<uint32_t>(len)};
}

bool inside_ram(const GuestMemory& mem, const iovec& v) {
    const auto* p = static_cast<const uint8_t*>(v.iov_base);
    for (const auto& r : mem.regions())
        if (p >= r.host && v.iov_len <= r.size && p - r.host <= static_cast<std::ptrdiff_t>(r.size - v.iov_len))
            return v.iov_len > 0;
    return false;
}

void check_accepted(const GuestMemory& mem, const blk::Limits& limits, const blk::ParsedRequest& p) {
    const blk::Request& r = p.request;
    uint64_t total = 0;
    for (const auto& v : r.data) {
        check(inside_ram(mem, v));
        total += v.iov_len;
    }
    check(total == r.data_len);
    switch (r.type) {
        case blk::RequestType::In:
        case blk::RequestType::Out:
            check(r.data_len % blk::kSectorSize == 0);
            check(r.sector <= limits.capacity && r.data_len / blk::kSectorSize <= limits.capacity - r.sector);
            check(r.data.size() <= limits.seg_max);
            check(r.type == blk::RequestType::In || !limits.read_only);
            break;
        case blk::RequestType::GetId:
            check(r.data_len > 0 && r.data_len <= blk::kIdBytes);
            break;
        case blk::RequestType::Flush:
            check(r.data.empty());
            break;
        case blk::RequestType::Discard:
        case blk::RequestType::WriteZeroes: {
            const bool discard = r.type == blk::RequestType::Discard;
            check(discard ? limits.discard : limits.write_zeroes);
            check(!limits.read_only && !r.segments.empty());
            check(r.segments.size() <= (discard ? limits.max_discard_seg : limits.max_write_zeroes_seg));
            for (const auto& s : r.segments) {
                check(s.num_sectors <= (discard ? limits.max_discard_sectors : limits.max_write_zeroes_sectors));
                check(s.sector <= limits.capacity && s.num_sectors <= limits.capacity - s.sector);
                check(!discard || !s.unmap);
            }
            break;
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const GuestMemory& mem = guest_memory();
    Input in(data, size);
    const uint8_t shape = in.u8();
    const uint8_t flags = in.u8();
    blk::Limits limits;
    limits.read_only = (flags & 1) != 0;
    limits.discard = (flags & 2) != 0;
    limits.write_zeroes = (flags & 4) != 0;
    limits.capacity = in.u16();
    limits.seg_max = in.u8();
    limits.max_discard_seg = limits.max_write_zeroes_seg = in.u8();
    limits.max_discard_sectors = limits.max_write_zeroes_sectors = in.u16();

    DescriptorChain chain;
    chain.head = 0;
    for (int i = 0; i < (shape & 7); ++i) chain.readable.push_back(make_buffer(in));
    for (int i = 0; i < ((shape >> 3) & 7); ++i) chain.writable.push_back(make_buffer(in));
    auto bytes = in.rest();
    for (const auto& r : mem.regions()) {
        const size_t n = std::min<size_t>(bytes.size(), r.size);
        std::memcpy(r.host, bytes.data(), n);
        std::memset(r.host + n, 0, r.size - n);
        bytes = bytes.subspan(n);
    }

    auto parsed = blk::parse_request(chain, mem, limits);
    if (!parsed.ok()) {
        check(chain.writable.empty());  // the only reason to refuse outright
        return 0;
    }
    check(!chain.writable.empty());
    const Buffer& last = chain.writable.back();
    check(parsed->status_addr == last.addr + last.len - 1);
    check(parsed->status <= blk::kStatusUnsupp);
    if (parsed->status == blk::kStatusOk) {
        check_accepted(mem, limits, *parsed);
    } else {
        check(parsed->request.data.empty() && parsed->request.segments.empty());
    }
    return 0;
}
