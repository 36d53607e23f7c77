#include "virtio/net/request.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

namespace popek::virtio::net {

using base::Error;
using base::Result;

size_t Negotiated::max_plain_frame() const {
    if ((features & kFMtu) == 0) return kMaxFrame;
    return size_t{mtu} + kEthHeader + kVlanTag;
}

namespace {

// The GSO kinds a driver may send with the features it negotiated.
Result<void> check_tx_gso(const NetHdr& h, uint32_t frame_len, uint64_t features) {
    const uint8_t kind = h.gso_type & static_cast<uint8_t>(~kGsoEcn);
    const bool ecn = (h.gso_type & kGsoEcn) != 0;
    if (kind == kGsoNone) {
        if (ecn) return Error{"gso_type has the ECN bit without a GSO kind"};
        return {};
    }
    uint64_t needed = 0;
    if (kind == kGsoTcpv4) needed = kFHostTso4;
    else if (kind == kGsoTcpv6) needed = kFHostTso6;
    else return Error{fmt::format("gso_type {:#x} is not a kind popek offers (TCPv4, TCPv6)", h.gso_type)};
    if ((features & needed) == 0)
        return Error{fmt::format("gso_type {:#x} without the matching HOST_TSO feature", h.gso_type)};
    if (ecn && (features & kFHostEcn) == 0) return Error{"gso_type has the ECN bit without HOST_ECN"};
    if ((h.flags & kHdrFNeedsCsum) == 0) return Error{"a GSO frame without NEEDS_CSUM"};
    if (h.gso_size == 0) return Error{"a GSO frame with gso_size 0"};
    if (h.hdr_len > frame_len)
        return Error{fmt::format("hdr_len {} is beyond the {}-byte frame", h.hdr_len, frame_len)};
    return {};
}

}  // namespace

Result<TxRequest> parse_tx_request(const memory::GuestMemory& mem, const DescriptorChain& chain,
                                   const Negotiated& negotiated) {
    if (!chain.writable.empty()) return Error{"a device-writable buffer in a transmit chain"};
    const uint64_t total = chain.readable_bytes();
    if (total < kNetHdrSize + kEthHeader)
        return Error{fmt::format("{} bytes: shorter than a virtio_net_hdr and an Ethernet header", total)};
    if (total - kNetHdrSize > kMaxFrame)
        return Error{fmt::format("a {}-byte frame is longer than {} bytes", total - kNetHdrSize, kMaxFrame)};
    const auto frame_len = static_cast<uint32_t>(total - kNetHdrSize);

    TxRequest req;
    uint8_t raw[kNetHdrSize];
    if (read_chain(mem, chain, 0, raw) != kNetHdrSize) return Error{"the header is not in guest RAM"};
    std::memcpy(&req.hdr, raw, kNetHdrSize);
    NetHdr& h = req.hdr;

    if ((h.flags & ~kHdrFNeedsCsum) != 0)
        return Error{fmt::format("header flags {:#x}: a driver may only set NEEDS_CSUM", h.flags)};
    if ((h.flags & kHdrFNeedsCsum) != 0) {
        if ((negotiated.features & kFCsum) == 0) return Error{"NEEDS_CSUM without the CSUM feature"};
        if (uint32_t{h.csum_start} + h.csum_offset + 2 > frame_len)
            return Error{fmt::format("checksum at {}+{} is beyond the {}-byte frame", h.csum_start, h.csum_offset,
                                     frame_len)};
    } else {
        h.csum_start = h.csum_offset = 0;
    }
    POPEK_TRY(check_tx_gso(h, frame_len, negotiated.features));
    if ((h.gso_type & ~kGsoEcn) == kGsoNone) {
        h.gso_size = h.hdr_len = 0;
        if (frame_len > negotiated.max_plain_frame())
            return Error{fmt::format("a {}-byte frame without GSO is longer than the MTU allows ({})", frame_len,
                                     negotiated.max_plain_frame())};
    }
    h.num_buffers = 0;
    req.frame_len = frame_len;
    return req;
}

Result<void> fit_rx_header(NetHdr& h, size_t frame_len, const Negotiated& negotiated) {
    const uint64_t f = negotiated.features;
    h.num_buffers = 1;
    if ((f & kFGuestCsum) == 0) {
        if ((h.flags & kHdrFNeedsCsum) != 0) return Error{"a partially checksummed frame, but no GUEST_CSUM"};
        h.flags = 0;
        h.csum_start = h.csum_offset = 0;
    } else {
        h.flags &= kHdrFNeedsCsum | kHdrFDataValid;
    }
    const uint8_t kind = h.gso_type & static_cast<uint8_t>(~kGsoEcn);
    const bool ecn = (h.gso_type & kGsoEcn) != 0;
    if (kind == kGsoNone) {
        h.gso_type = kGsoNone;
        h.gso_size = h.hdr_len = 0;
        if (frame_len > negotiated.max_plain_frame())
            return Error{fmt::format("a {}-byte frame is longer than the MTU allows ({})", frame_len,
                                     negotiated.max_plain_frame())};
        return {};
    }
    const bool ok = (kind == kGsoTcpv4 && (f & kFGuestTso4) != 0) || (kind == kGsoTcpv6 && (f & kFGuestTso6) != 0);
    if (!ok || (ecn && (f & kFGuestEcn) == 0))
        return Error{fmt::format("a GSO frame (gso_type {:#x}) the driver did not negotiate", h.gso_type)};
    return {};
}

bool append_iovecs(const memory::GuestMemory& mem, const std::vector<Buffer>& bufs, uint64_t offset, uint64_t len,
                   size_t max_iov, std::vector<iovec>& out) {
    for (const auto& b : bufs) {
        if (len == 0) break;
        if (offset >= b.len) {
            offset -= b.len;
            continue;
        }
        if (out.size() >= max_iov) return false;
        uint8_t* p = mem.host_ptr(b.addr, b.len);
        if (p == nullptr) return false;
        const uint64_t n = std::min<uint64_t>(b.len - offset, len);
        out.push_back(iovec{p + offset, static_cast<size_t>(n)});
        len -= n;
        offset = 0;
    }
    return len == 0;
}

}  // namespace popek::virtio::net
