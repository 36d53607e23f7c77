// virtio-net as the virtio 1.2 specification defines it (section 5.1):
// feature bits, the per-packet header, the configuration layout.
#pragma once

#include <cstddef>
#include <cstdint>

namespace popek::virtio::net {

// Feature bits (5.1.3).
constexpr uint64_t kFCsum = 1ull << 0;        // the driver may send partially checksummed frames
constexpr uint64_t kFGuestCsum = 1ull << 1;   // the driver takes partially checksummed frames
constexpr uint64_t kFMtu = 1ull << 3;         // config mtu is valid
constexpr uint64_t kFMac = 1ull << 5;         // config mac is valid
constexpr uint64_t kFGuestTso4 = 1ull << 7;
constexpr uint64_t kFGuestTso6 = 1ull << 8;
constexpr uint64_t kFGuestEcn = 1ull << 9;
constexpr uint64_t kFGuestUfo = 1ull << 10;
constexpr uint64_t kFHostTso4 = 1ull << 11;
constexpr uint64_t kFHostTso6 = 1ull << 12;
constexpr uint64_t kFHostEcn = 1ull << 13;
constexpr uint64_t kFHostUfo = 1ull << 14;
constexpr uint64_t kFMrgRxbuf = 1ull << 15;
constexpr uint64_t kFStatus = 1ull << 16;     // config status is valid
constexpr uint64_t kFCtrlVq = 1ull << 17;
constexpr uint64_t kFMq = 1ull << 22;

// struct virtio_net_hdr, little-endian; with VERSION_1 always 12 bytes.
struct NetHdr {
    uint8_t flags;
    uint8_t gso_type;
    uint16_t hdr_len;
    uint16_t gso_size;
    uint16_t csum_start;
    uint16_t csum_offset;
    uint16_t num_buffers;
};
static_assert(sizeof(NetHdr) == 12);
constexpr size_t kNetHdrSize = sizeof(NetHdr);

constexpr uint8_t kHdrFNeedsCsum = 1;
constexpr uint8_t kHdrFDataValid = 2;
constexpr uint8_t kHdrFRscInfo = 4;

constexpr uint8_t kGsoNone = 0;
constexpr uint8_t kGsoTcpv4 = 1;
constexpr uint8_t kGsoUdp = 3;
constexpr uint8_t kGsoTcpv6 = 4;
constexpr uint8_t kGsoUdpL4 = 5;
constexpr uint8_t kGsoEcn = 0x80;

// struct virtio_net_config: mac[6], status, max_virtqueue_pairs, mtu. The
// fields after mtu (speed, duplex, RSS) need features popek does not offer.
constexpr uint64_t kCfgMac = 0;
constexpr uint64_t kCfgStatus = 6;
constexpr uint64_t kCfgMaxVirtqueuePairs = 8;
constexpr uint64_t kCfgMtu = 10;
constexpr size_t kConfigSize = 12;

constexpr uint16_t kStatusLinkUp = 1;

constexpr uint16_t kRxQueue = 0;
constexpr uint16_t kTxQueue = 1;

constexpr size_t kEthHeader = 14;
constexpr size_t kVlanTag = 4;
// The largest frame either direction carries: an IPv4/IPv6 packet of
// 65535 bytes (a TSO super-frame) behind an Ethernet header and one VLAN tag.
constexpr size_t kMaxFrame = 65535 + kEthHeader + kVlanTag;

}  // namespace popek::virtio::net
