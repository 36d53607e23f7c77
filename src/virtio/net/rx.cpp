// Receiving: frames from the backend into the driver's receive chains.
#include <sys/epoll.h>

#include <fmt/format.h>

#include <cstring>

#include "virtio/net/device.hpp"

namespace popek::virtio::net {

using base::Error;
using base::Result;

namespace {

// Gives the chain pop() just returned back to the ring unused: the next
// pop() reads and checks the same available entry again.
void give_back(SplitQueue& q) { q.state().next_avail = static_cast<uint16_t>(q.state().next_avail - 1); }

}  // namespace

Result<void> NetDevice::start_rx() {
    if (rx_armed_) return {};
    POPEK_TRY(loop_->add(backend_->fd(), EPOLLIN, [this](uint32_t) {
        auto r = receive_frames();
        if (!r.ok()) {
            failed_ = r.error();  // returned by the next process_queue
            stop_rx();
        }
        return true;  // stop_rx() takes the fd out of the loop itself
    }));
    rx_armed_ = true;
    return {};
}

void NetDevice::stop_rx() {
    if (!rx_armed_) return;
    loop_->remove(backend_->fd());
    rx_armed_ = false;
}

Result<void> NetDevice::receive_frames() {
    if (!link_up_.load()) {
        discard_frames();
        return {};
    }
    SplitQueue& q = queues_[kRxQueue];
    bool used = false;
    Result<void> result;
    for (;;) {
        auto next = q.pop();
        if (!next) {
            // No buffers: frames wait in the backend until the driver adds
            // some and notifies the receive queue.
            stop_rx();
            break;
        }
        if (!next->ok()) {
            result = next->error();
            break;
        }
        const DescriptorChain& chain = next->value();
        uint32_t written = 0;
        const Outcome outcome = receive_into(chain, written);
        if (outcome == Outcome::Used || outcome == Outcome::ReturnedUnused) {
            q.push_used(chain.head, written);
            used = true;
            continue;
        }
        give_back(q);
        if (outcome == Outcome::GivenBack) continue;  // the frame was dropped: the next one may fit
        if (outcome == Outcome::Failed) {             // until the driver's next notification
            q.arm_notification();
            stop_rx();
        }
        break;
    }
    if (used) signal_used(kRxQueue);
    return result;
}

NetDevice::Outcome NetDevice::receive_into(const DescriptorChain& chain, uint32_t& written) {
    written = 0;
    if (!chain.readable.empty()) {
        drop(metrics_.rx_bad_buffers, "a device-readable buffer in a receive chain");
        return Outcome::ReturnedUnused;
    }
    const uint64_t room = chain.writable_bytes();
    if (room < kNetHdrSize + kEthHeader) {
        drop(metrics_.rx_bad_buffers, fmt::format("a {}-byte receive chain cannot hold any frame", room));
        return Outcome::ReturnedUnused;
    }
    const uint64_t capacity = room - kNetHdrSize;  // frame bytes the chain holds

    // The header goes to our copy first (the backend writes 10 of its 12
    // bytes; the driver must see fitted flags). The frame goes straight into
    // the chain, and whatever does not fit into the bounce buffer, which
    // tells us it did not fit. A chain in too many pieces for one readv
    // takes the frame through the bounce buffer instead.
    NetHdr hdr{};
    iov_.clear();
    iov_.push_back(iovec{&hdr, kNetHdrSize});
    const bool direct =
        append_iovecs(*mem_, chain.writable, kNetHdrSize, capacity, popek::net::kMaxFrameIov - 1, iov_);
    if (!direct) iov_.resize(1);
    iov_.push_back(iovec{bounce_.data(), bounce_.size()});

    auto got = backend_->receive(iov_);
    if (!got.ok()) {
        drop(metrics_.backend_errors, got.error().message);
        return Outcome::Failed;
    }
    if (!got->has_value()) return Outcome::WouldBlock;
    const size_t n = **got;
    if (n < kNetHdrSize + kEthHeader) {
        drop(metrics_.rx_dropped, fmt::format("a {}-byte frame from {} is too short", n, backend_->description()));
        return Outcome::GivenBack;
    }
    const size_t frame = n - kNetHdrSize;
    if (frame > capacity || (!direct && frame > bounce_.size())) {
        drop(metrics_.rx_dropped,
             fmt::format("a {}-byte frame does not fit a {}-byte receive chain", frame, capacity));
        return Outcome::GivenBack;
    }
    if (auto fit = fit_rx_header(hdr, frame, negotiated_); !fit.ok()) {
        drop(metrics_.rx_dropped, fit.error().message);
        return Outcome::GivenBack;
    }
    if (!direct) write_chain(*mem_, chain, kNetHdrSize, std::span<const uint8_t>(bounce_.data(), frame));
    uint8_t raw[kNetHdrSize];
    std::memcpy(raw, &hdr, kNetHdrSize);
    write_chain(*mem_, chain, 0, raw);
    written = static_cast<uint32_t>(n);  // n <= room, which pop() keeps under 4 GiB
    metrics_.rx_packets.fetch_add(1, std::memory_order_relaxed);
    metrics_.rx_bytes.fetch_add(frame, std::memory_order_relaxed);
    return Outcome::Used;
}

// Link down: read and drop whatever the backend has.
void NetDevice::discard_frames() {
    const iovec iov{bounce_.data(), bounce_.size()};
    for (;;) {
        auto got = backend_->receive(std::span<const iovec>(&iov, 1));
        if (!got.ok()) {
            drop(metrics_.backend_errors, got.error().message);
            stop_rx();
            return;
        }
        if (!got->has_value()) return;
        drop(metrics_.rx_dropped, "received while the link is down");
    }
}

}  // namespace popek::virtio::net
