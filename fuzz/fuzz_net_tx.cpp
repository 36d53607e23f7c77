// libFuzzer target: a hostile virtio-net driver's transmit queue (and its
// receive queue, with one frame waiting in the backend).
//
// Input layout:
//   [0]       features: bit 0 CSUM, 1 HOST_TSO4, 2 HOST_TSO6, 3 HOST_ECN,
//             4 MTU, 5 INDIRECT_DESC, 6 EVENT_IDX, 7 GUEST_CSUM (+ GUEST_TSO4/6 when 1/2 are set too)
//   [1..2]    config mtu (u16)
//   [3]       transmit queue size: 1 << (b % 5)
//   [4..15]   the virtio_net_hdr of the frame the backend holds, [16..17] its
//             length after the header (it may not fit what the device offers)
//   [18..]    guest RAM contents (the rest is zero)
//
// Guest RAM is [0, 8 KiB) and [12 KiB, 16 KiB); the transmit rings sit at
// 0x0 (descriptors), 0x100 (avail), 0x200 (used), the receive rings (same
// size) at 0x300, 0x400, 0x480. Each transmit chain goes through
// parse_tx_request and append_iovecs, then both queues through NetDevice
// with a backend that checks what it is asked to do. Whatever the input:
// accepted requests obey every rule parse_tx_request promises, iovecs stay
// inside guest RAM, the device sends only well-formed frames, and a frame
// it receives is reported with at most the length of its chain.
#include "fuzz_common.hpp"
#include <sys/eventfd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "base/event_loop.hpp"
#include "memory/guest_memory.hpp"
#include "net/backend.hpp"
#include "virtio/net/device.hpp"
#include "virtio/net/request.hpp"
#include "virtio/queue.hpp"

namespace vnet = popek::virtio::net;
using popek::memory::GuestMemory;
using popek::virtio::SplitQueue;

using popek::fuzz::check;

namespace {

constexpr uint64_t kLowSize = 8 << 10, kHighBase = 12 << 10, kHighSize = 4 << 10;
constexpr uint64_t kTxRings[3] = {0x0, 0x100, 0x200}, kRxRings[3] = {0x300, 0x400, 0x480};

const GuestMemory& guest_memory() {
    static const GuestMemory mem = popek::fuzz::guest_memory_with_hole(kLowSize, kHighBase, kHighSize);
    return mem;
}

popek::base::EventLoop& event_loop() {  // never started: the device only registers fds
    static const std::unique_ptr<popek::base::EventLoop> loop = [] {
        auto l = popek::base::EventLoop::create("fuzz-net");
        check(l.ok());
        return std::move(l).value();
    }();
    return *loop;
}

int watchable_fd() {  // the device puts its backend's fd in the (idle) loop
    static const popek::base::UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    check(fd.valid());
    return fd.get();
}

bool in_ram(const GuestMemory& mem, const void* p, size_t len) {
    const auto b = reinterpret_cast<uintptr_t>(p);
    for (const auto& r : mem.regions()) {
        const auto host = reinterpret_cast<uintptr_t>(r.host);
        if (b >= host && len <= r.size && b - host <= r.size - len) return true;
    }
    return false;
}

void check_header(const vnet::NetHdr& h, uint32_t frame_len, const vnet::Negotiated& n) {
    check((h.flags & ~vnet::kHdrFNeedsCsum) == 0 && h.num_buffers == 0);
    if ((h.flags & vnet::kHdrFNeedsCsum) != 0)
        check((n.features & vnet::kFCsum) != 0 && uint32_t{h.csum_start} + h.csum_offset + 2 <= frame_len);
    const auto kind = static_cast<uint8_t>(h.gso_type & ~vnet::kGsoEcn);
    if (kind == vnet::kGsoNone) {
        check(h.gso_type == vnet::kGsoNone && frame_len <= n.max_plain_frame());
    } else {
        check((kind == vnet::kGsoTcpv4 && (n.features & vnet::kFHostTso4) != 0) ||
              (kind == vnet::kGsoTcpv6 && (n.features & vnet::kFHostTso6) != 0));
        check(h.gso_size != 0 && (h.flags & vnet::kHdrFNeedsCsum) != 0 && h.hdr_len <= frame_len);
    }
}

// Checks every frame it is asked to send (our header copy first, then the
// frame) and holds one frame to receive.
class CheckingBackend final : public popek::net::NetBackend {
public:
    CheckingBackend(const GuestMemory& mem, const vnet::Negotiated& n, std::span<const uint8_t> rx_hdr,
                    size_t rx_len)
        : mem_(mem), n_(n), rx_len_(rx_len) {
        std::memcpy(rx_hdr_, rx_hdr.data(), sizeof rx_hdr_);
    }
    int fd() const override { return watchable_fd(); }
    popek::base::Result<std::optional<size_t>> receive(std::span<const iovec> iov) override {
        if (rx_taken_) return std::optional<size_t>();
        rx_taken_ = true;
        check(!iov.empty() && iov[0].iov_len == vnet::kNetHdrSize && !in_ram(mem_, iov[0].iov_base, 1));
        size_t at = 0;  // like a TAP: header bytes, then the frame, cut off where the iovecs end
        for (const auto& v : iov) {
            auto* p = static_cast<uint8_t*>(v.iov_base);
            for (size_t i = 0; i < v.iov_len && at < vnet::kNetHdrSize + rx_len_; ++i, ++at)
                p[i] = at < vnet::kNetHdrSize ? rx_hdr_[at] : static_cast<uint8_t>(at);
        }
        return std::optional<size_t>(vnet::kNetHdrSize + rx_len_);
    }
    popek::base::Result<std::optional<size_t>> send(std::span<const iovec> iov) override {
        check(iov.size() >= 2 && iov[0].iov_len == vnet::kNetHdrSize && !in_ram(mem_, iov[0].iov_base, 1));
        size_t frame = 0;
        for (size_t i = 1; i < iov.size(); ++i) frame += iov[i].iov_len;
        check(frame >= vnet::kEthHeader && frame <= vnet::kMaxFrame);
        vnet::NetHdr h;
        std::memcpy(&h, iov[0].iov_base, sizeof h);
        check_header(h, static_cast<uint32_t>(frame), n_);
        ++frames;
        return std::optional<size_t>(vnet::kNetHdrSize + frame);
    }
    unsigned supported_offloads() const override { return popek::net::kOffloadCsum | popek::net::kOffloadTso4; }
    popek::base::Result<void> set_offloads(unsigned) override { return {}; }
    bool accepts_offloaded_frames() const override { return true; }
    std::string description() const override { return "fuzz sink"; }
    uint64_t frames = 0;

private:
    const GuestMemory& mem_;
    vnet::Negotiated n_;
    uint8_t rx_hdr_[vnet::kNetHdrSize];
    size_t rx_len_;
    bool rx_taken_ = false;
};

struct NoInterrupt final : popek::virtio::Interrupt {
    void signal_queue(uint16_t) override {}
    void signal_config() override {}
};

uint64_t features_from(uint8_t b) {
    uint64_t f = popek::virtio::kFeatureVersion1 | vnet::kFMac | vnet::kFStatus;
    if ((b & 1) != 0) f |= vnet::kFCsum;
    if ((b & 2) != 0) f |= vnet::kFHostTso4;
    if ((b & 4) != 0) f |= vnet::kFHostTso6;
    if ((b & 8) != 0) f |= vnet::kFHostEcn;
    if ((b & 16) != 0) f |= vnet::kFMtu;
    if ((b & 32) != 0) f |= popek::virtio::kFeatureIndirectDesc;
    if ((b & 64) != 0) f |= popek::virtio::kFeatureEventIdx;
    if ((b & 128) != 0) {
        f |= vnet::kFGuestCsum;
        if ((b & 2) != 0) f |= vnet::kFGuestTso4;
        if ((b & 4) != 0) f |= vnet::kFGuestTso6;
    }
    return f;
}

void fuzz_rx_header(std::span<const uint8_t> raw, size_t frame_len, const vnet::Negotiated& n) {
    vnet::NetHdr h;
    std::memcpy(&h, raw.data(), sizeof h);
    if (!vnet::fit_rx_header(h, frame_len, n).ok()) return;
    check(h.num_buffers == 1);
    if ((n.features & vnet::kFGuestCsum) == 0) check(h.flags == 0);
    if (h.gso_type == vnet::kGsoNone) check(frame_len <= n.max_plain_frame());
}

SplitQueue make_queue(const GuestMemory& mem, const uint64_t (&rings)[3], uint16_t size, uint64_t features) {
    SplitQueue::State s;
    s.size = size;
    s.ready = true;
    s.desc_addr = rings[0], s.avail_addr = rings[1], s.used_addr = rings[2];
    SplitQueue q(s);
    (void)q.activate(mem, features);
    return q;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 18) return 0;
    const GuestMemory& mem = guest_memory();
    const uint64_t features = features_from(data[0]);
    const vnet::Negotiated n{features, static_cast<uint16_t>(data[1] | (data[2] << 8))};
    const auto qsize = static_cast<uint16_t>(1u << (data[3] % 5));
    const std::span<const uint8_t> rx_hdr(data + 4, vnet::kNetHdrSize);
    const auto rx_len = static_cast<size_t>(data[16] | (data[17] << 8));
    fuzz_rx_header(rx_hdr, rx_len, n);

    std::span<const uint8_t> rest(data + 18, size - 18);
    for (const auto& r : mem.regions()) {
        const size_t k = std::min<size_t>(rest.size(), r.size);
        std::memcpy(r.host, rest.data(), k);
        std::memset(r.host + k, 0, r.size - k);
        rest = rest.subspan(k);
    }

    // The parser on its own.
    SplitQueue q = make_queue(mem, kTxRings, qsize, features);
    if (!q.active()) return 0;
    std::vector<iovec> iov;
    for (uint32_t i = 0; i <= qsize; ++i) {
        auto c = q.pop();
        if (!c || !c->ok()) break;
        auto req = vnet::parse_tx_request(mem, c->value(), n);
        if (!req.ok()) continue;
        check(c->value().writable.empty());
        check(req->frame_len + vnet::kNetHdrSize == c->value().readable_bytes());
        check(req->frame_len >= vnet::kEthHeader && req->frame_len <= vnet::kMaxFrame);
        check_header(req->hdr, req->frame_len, n);
        iov.clear();
        if (vnet::append_iovecs(mem, c->value().readable, vnet::kNetHdrSize, req->frame_len, 1024, iov)) {
            size_t total = 0;
            for (const auto& v : iov) {
                check(v.iov_len != 0 && in_ram(mem, v.iov_base, v.iov_len));
                total += v.iov_len;
            }
            check(total == req->frame_len);
        }
    }

    // The same queue again, through the device, and its receive queue.
    auto backend = std::make_unique<CheckingBackend>(mem, n, rx_hdr, rx_len);
    CheckingBackend& seen = *backend;
    vnet::NetDevice dev("net0", std::move(backend), vnet::State{{}, true, n.mtu});
    SplitQueue queues[2] = {make_queue(mem, kRxRings, qsize, features), make_queue(mem, kTxRings, qsize, features)};
    NoInterrupt irq;
    if (!dev.activate({mem, queues, irq, event_loop(), features, {}}).ok()) return 0;
    (void)dev.process_queue(vnet::kTxQueue);
    check(seen.frames == dev.counters().tx_packets);
    const uint16_t used_before = queues[0].state().next_used;
    (void)dev.process_queue(vnet::kRxQueue);
    const auto pushed = static_cast<uint16_t>(queues[0].state().next_used - used_before);
    check(pushed <= qsize);
    // Chains come back unused (length 0) or, one of them, with the frame at its true length.
    uint64_t with_frame = 0;
    for (uint16_t i = 0; i < pushed; ++i) {
        const auto slot = static_cast<uint16_t>((used_before + i) & (qsize - 1));
        uint32_t len = 0;
        check(mem.read(kRxRings[2] + 8 + 8ull * slot, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&len), 4)).ok());
        if (len != 0) {
            check(len == vnet::kNetHdrSize + rx_len);
            ++with_frame;
        }
    }
    check(with_frame == dev.counters().rx_packets && with_frame <= 1);
    dev.reset();
    return 0;
}
