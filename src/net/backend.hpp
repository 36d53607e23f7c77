// What a network device sends frames through: a TAP device today, a switch
// or NAT later, a socketpair in tests.
//
// Every frame crosses a backend with a 12-byte virtio_net_hdr in front (the
// virtio 1.x layout, num_buffers included), as a TAP with IFF_VNET_HDR and
// TUNSETVNETHDRSZ 12 reads and writes them: one read or write is one frame.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "base/result.hpp"

namespace popek::net {

constexpr size_t kVnetHdrSize = 12;

// Offloads of frames the backend hands to the device (the TUN_F_* bits of
// TUNSETOFFLOAD, same values): with kOffloadCsum a frame may arrive with a
// partial checksum (NEEDS_CSUM), with kOffloadTso4/6 as one large TCP
// segment to be cut by the receiver (kOffloadTsoEcn: with ECN/CWR set).
enum Offload : unsigned {
    kOffloadCsum = 0x01,
    kOffloadTso4 = 0x02,
    kOffloadTso6 = 0x04,
    kOffloadTsoEcn = 0x08,
};

class NetBackend {
public:
    virtual ~NetBackend() = default;

    // Poll it: EPOLLIN when a frame is waiting, EPOLLOUT when send() may
    // succeed again after it would have blocked. Non-blocking.
    [[nodiscard]] virtual int fd() const = 0;
    // Reads one frame (header + Ethernet frame) into iov. Returns its full
    // size, which is larger than the iovecs' total when it did not fit (the
    // rest is lost); nullopt when none is waiting; an Error when the backend
    // failed or was closed.
    virtual base::Result<std::optional<size_t>> receive(std::span<const iovec> iov) = 0;
    // Writes one frame (header + Ethernet frame). Returns the bytes written,
    // or nullopt when the backend cannot take it now (try after EPOLLOUT).
    virtual base::Result<std::optional<size_t>> send(std::span<const iovec> iov) = 0;

    // Which Offload bits set_offloads() accepts.
    [[nodiscard]] virtual unsigned supported_offloads() const = 0;
    // Which offloaded frames receive() may return from now on.
    virtual base::Result<void> set_offloads(unsigned offloads) = 0;
    // Whether send() takes offloaded frames (NEEDS_CSUM, TCP GSO).
    [[nodiscard]] virtual bool accepts_offloaded_frames() const = 0;

    // "tap ptap0": for messages.
    [[nodiscard]] virtual std::string description() const = 0;
};

// One frame read or written with readv/writev on a non-blocking fd that
// keeps frame boundaries (TAP, SOCK_SEQPACKET, SOCK_DGRAM): EAGAIN becomes
// nullopt, EINTR is retried, end of file (a read of 0) is an Error.
// At most kMaxFrameIov iovecs.
constexpr size_t kMaxFrameIov = 1024;
base::Result<std::optional<size_t>> readv_frame(int fd, std::span<const iovec> iov, const std::string& what);
base::Result<std::optional<size_t>> writev_frame(int fd, std::span<const iovec> iov, const std::string& what);

}  // namespace popek::net
