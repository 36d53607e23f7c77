// Guest-controlled virtio-net data, checked in one place (and fuzzed:
// fuzz/fuzz_net_tx.cpp): transmit chains and their virtio_net_hdr, and the
// header of a received frame fitted to what the driver negotiated.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <vector>

#include "base/result.hpp"
#include "memory/guest_memory.hpp"
#include "virtio/net/spec.hpp"
#include "virtio/queue.hpp"

namespace popek::virtio::net {

// What the driver and device agreed on, which decides what frames may pass.
struct Negotiated {
    uint64_t features = 0;  // negotiated feature bits
    uint16_t mtu = 1500;    // config mtu (binding only with kFMtu)

    // The largest frame without GSO: mtu plus an Ethernet header and a VLAN
    // tag when kFMtu was negotiated, else kMaxFrame.
    [[nodiscard]] size_t max_plain_frame() const;
};

// A transmit chain that passed every check.
struct TxRequest {
    NetHdr hdr{};             // our copy, validated, num_buffers 0: hand this to the backend
    uint32_t frame_len = 0;   // the Ethernet frame: readable bytes after the header
};

// Checks a transmit chain popped from the queue (pop() already checked its
// structure): device-readable buffers only; a 12-byte header, then an
// Ethernet frame of 14 bytes up to max_plain_frame() (kMaxFrame with GSO);
// header flags and gso_type limited to what was negotiated (NEEDS_CSUM only
// with CSUM, TCPv4/v6 GSO only with HOST_TSO4/6, ECN only with HOST_ECN, GSO
// needs NEEDS_CSUM and a gso_size); the checksum position and hdr_len inside
// the frame. The header is copied out of guest memory once, so the driver
// cannot change it after the checks. An Error means "drop this frame": the
// message says why.
base::Result<TxRequest> parse_tx_request(const memory::GuestMemory& mem, const DescriptorChain& chain,
                                         const Negotiated& negotiated);

// Fits the header a backend wrote for a received frame of `frame_len`
// bytes to the driver: num_buffers 1; flags cleared without GUEST_CSUM. An
// Error means the driver cannot take this frame (an offload it did not
// negotiate, or longer than the MTU it was promised): drop it.
base::Result<void> fit_rx_header(NetHdr& hdr, size_t frame_len, const Negotiated& negotiated);

// Appends host iovecs for `len` bytes of `bufs` (validated guest buffers)
// starting `offset` bytes in. Returns false, leaving `out` partly filled,
// when that takes more than `max_iov` pieces in total or a buffer is no
// longer in guest RAM.
bool append_iovecs(const memory::GuestMemory& mem, const std::vector<Buffer>& bufs, uint64_t offset, uint64_t len,
                   size_t max_iov, std::vector<iovec>& out);

}  // namespace popek::virtio::net
