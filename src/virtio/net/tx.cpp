// Transmitting: the driver's transmit chains to the backend.
#include <fcntl.h>
#include <sys/epoll.h>

#include <cstring>

#include "virtio/net/device.hpp"

namespace popek::virtio::net {

using base::Error;
using base::Result;

Result<void> NetDevice::transmit_frames() {
    if (tx_blocked_) return {};  // on_writable() goes on when the backend takes frames again
    SplitQueue& q = queues_[kTxQueue];
    bool used = false;
    Result<void> result;
    for (;;) {
        auto next = q.pop();
        if (!next) break;
        if (!next->ok()) {
            result = next->error();
            break;
        }
        const DescriptorChain& chain = next->value();
        if (transmit(chain) == Outcome::WouldBlock) {
            // Leave the chain in the ring; send it when the backend is writable.
            q.state().next_avail = static_cast<uint16_t>(q.state().next_avail - 1);
            if (auto w = wait_writable(); !w.ok()) {
                result = w.error();
                break;
            }
            tx_blocked_ = true;
            break;
        }
        q.push_used(chain.head, 0);  // a transmit chain has nothing written into it
        used = true;
    }
    if (used) signal_used(kTxQueue);
    return result;
}

NetDevice::Outcome NetDevice::transmit(const DescriptorChain& chain) {
    if (!link_up_.load()) {
        drop(metrics_.tx_dropped, "sent while the link is down");
        return Outcome::ReturnedUnused;
    }
    auto req = parse_tx_request(*mem_, chain, negotiated_);
    if (!req.ok()) {
        drop(metrics_.tx_dropped, req.error().message);
        return Outcome::ReturnedUnused;
    }
    // Our checked copy of the header, then the frame straight from guest
    // memory (or through the bounce buffer if it is in too many pieces).
    uint8_t hdr[kNetHdrSize];
    std::memcpy(hdr, &req->hdr, kNetHdrSize);
    iov_.clear();
    iov_.push_back(iovec{hdr, kNetHdrSize});
    if (!append_iovecs(*mem_, chain.readable, kNetHdrSize, req->frame_len, popek::net::kMaxFrameIov, iov_)) {
        const size_t got =
            read_chain(*mem_, chain, kNetHdrSize, std::span<uint8_t>(bounce_.data(), req->frame_len));
        iov_.resize(1);
        iov_.push_back(iovec{bounce_.data(), got});
    }
    auto sent = backend_->send(iov_);
    if (!sent.ok()) {
        drop(metrics_.backend_errors, sent.error().message);
        return Outcome::Failed;
    }
    if (!sent->has_value()) return Outcome::WouldBlock;
    metrics_.tx_packets.fetch_add(1, std::memory_order_relaxed);
    metrics_.tx_bytes.fetch_add(req->frame_len, std::memory_order_relaxed);
    return Outcome::Used;
}

// The backend fd is in the loop for EPOLLIN already (one registration per
// fd), so a duplicate of it waits for EPOLLOUT.
Result<void> NetDevice::wait_writable() {
    if (tx_wait_armed_) return {};
    if (!tx_wait_fd_.valid()) {
        tx_wait_fd_ = base::UniqueFd(::fcntl(backend_->fd(), F_DUPFD_CLOEXEC, 0));
        if (!tx_wait_fd_.valid())
            return Error::from_errno("virtio-net " + id_ + ": dup of " + backend_->description());
    }
    POPEK_TRY(loop_->add(tx_wait_fd_.get(), EPOLLOUT, [this](uint32_t) { return on_writable(); }));
    tx_wait_armed_ = true;
    return {};
}

bool NetDevice::on_writable() {
    tx_blocked_ = false;
    if (!failed_) {
        auto r = transmit_frames();
        if (!r.ok()) {
            failed_ = r.error();  // returned by the next process_queue
            stop_rx();
        }
    }
    if (tx_blocked_ && !failed_) return true;  // still full: keep waiting
    tx_blocked_ = false;
    tx_wait_armed_ = false;
    return false;  // the loop stops watching tx_wait_fd_
}

}  // namespace popek::virtio::net
