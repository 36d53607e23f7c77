#include "virtio/net/device.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

namespace popek::virtio::net {

using base::Error;
using base::Result;
using popek::net::NetBackend;

namespace {

uint64_t offered_features(const NetBackend& backend) {
    uint64_t f = kFMac | kFStatus | kFMtu | kFeatureEventIdx | kFeatureIndirectDesc;
    if (backend.accepts_offloaded_frames()) f |= kFCsum | kFHostTso4 | kFHostTso6 | kFHostEcn;
    const unsigned rx = backend.supported_offloads();
    if ((rx & popek::net::kOffloadCsum) != 0) {
        f |= kFGuestCsum;
        if ((rx & popek::net::kOffloadTso4) != 0) f |= kFGuestTso4;
        if ((rx & popek::net::kOffloadTso6) != 0) f |= kFGuestTso6;
        if ((rx & popek::net::kOffloadTsoEcn) != 0 && (f & (kFGuestTso4 | kFGuestTso6)) != 0) f |= kFGuestEcn;
    }
    return f;
}

// The spec's feature dependencies (5.1.3.1): a driver must not accept a
// feature without the ones it requires.
Result<void> check_dependencies(uint64_t f) {
    struct Rule {
        uint64_t feature, requires_any;
        const char* text;
    };
    const Rule rules[] = {
        {kFGuestTso4, kFGuestCsum, "GUEST_TSO4 without GUEST_CSUM"},
        {kFGuestTso6, kFGuestCsum, "GUEST_TSO6 without GUEST_CSUM"},
        {kFGuestEcn, kFGuestTso4 | kFGuestTso6, "GUEST_ECN without GUEST_TSO4 or GUEST_TSO6"},
        {kFHostTso4, kFCsum, "HOST_TSO4 without CSUM"},
        {kFHostTso6, kFCsum, "HOST_TSO6 without CSUM"},
        {kFHostEcn, kFHostTso4 | kFHostTso6, "HOST_ECN without HOST_TSO4 or HOST_TSO6"},
    };
    for (const auto& r : rules)
        if ((f & r.feature) != 0 && (f & r.requires_any) == 0)
            return Error{std::string("the driver accepted ") + r.text};
    return {};
}

// The backend offloads that deliver what the driver accepted, no more.
unsigned rx_offloads(uint64_t f) {
    unsigned o = 0;
    if ((f & kFGuestCsum) != 0) o |= popek::net::kOffloadCsum;
    if ((f & kFGuestTso4) != 0) o |= popek::net::kOffloadTso4;
    if ((f & kFGuestTso6) != 0) o |= popek::net::kOffloadTso6;
    if ((f & kFGuestEcn) != 0) o |= popek::net::kOffloadTsoEcn;
    return o;
}

}  // namespace

NetDevice::NetDevice(std::string id, std::unique_ptr<NetBackend> backend, State state)
    : id_(std::move(id)),
      backend_(std::move(backend)),
      mac_(state.mac),
      mtu_(state.mtu),
      offered_(offered_features(*backend_)),
      link_up_(state.link_up),
      bounce_(kNetHdrSize + kMaxFrame) {
    iov_.reserve(popek::net::kMaxFrameIov);
}

// The transport resets an active device before destroying it (after
// stopping the loop); this covers owners that did not.
NetDevice::~NetDevice() {
    if (mem_ != nullptr) reset();
}

void NetDevice::read_config(uint64_t offset, std::span<uint8_t> data) {
    uint8_t cfg[kConfigSize] = {};
    std::memcpy(cfg + kCfgMac, mac_.data(), mac_.size());
    const uint16_t status = link_up_.load() ? kStatusLinkUp : 0;
    const uint16_t pairs = 1;
    std::memcpy(cfg + kCfgStatus, &status, 2);
    std::memcpy(cfg + kCfgMaxVirtqueuePairs, &pairs, 2);
    std::memcpy(cfg + kCfgMtu, &mtu_, 2);
    for (size_t i = 0; i < data.size(); ++i) {
        const uint64_t at = offset + i;
        data[i] = at >= offset && at < kConfigSize ? cfg[at] : 0;
    }
}

void NetDevice::write_config(uint64_t, std::span<const uint8_t>) {}

Result<void> NetDevice::activate(const ActivateContext& ctx) {
    if (mem_ != nullptr) reset();
    const std::string what = "virtio-net " + id_;
    if (ctx.queues.size() != num_queues())
        return Error{fmt::format("{}: {} queues, expected {}", what, ctx.queues.size(), num_queues())};
    if (auto deps = check_dependencies(ctx.features & offered_); !deps.ok()) return deps.error().context(what);
    if (auto off = backend_->set_offloads(rx_offloads(ctx.features & offered_)); !off.ok())
        return off.error().context(what);

    mem_ = &ctx.mem;
    queues_ = ctx.queues;
    loop_ = &ctx.loop;
    negotiated_ = Negotiated{ctx.features & offered_, mtu_};
    {
        std::lock_guard lock(irq_mu_);
        interrupt_ = &ctx.interrupt;
        status_negotiated_ = (negotiated_.features & kFStatus) != 0;
    }
    if (queues_[kRxQueue].active()) {
        if (auto rx = start_rx(); !rx.ok()) {
            reset();
            return rx.error().context(what + ": watching " + backend_->description());
        }
    }
    return {};
}

Result<void> NetDevice::process_queue(uint16_t queue) {
    if (mem_ == nullptr) return Error{"virtio-net " + id_ + ": queue notified while the device is not active"};
    if (failed_) return *failed_;
    if (queue >= queues_.size()) return Error{fmt::format("virtio-net {}: there is no queue {}", id_, queue)};
    if (!queues_[queue].active()) return {};
    Result<void> r;
    if (queue == kRxQueue) {
        // The driver added receive buffers: read the backend again.
        r = start_rx();
        if (r.ok()) r = receive_frames();
    } else {
        r = transmit_frames();
    }
    if (!r.ok()) {
        failed_ = r.error();
        stop_rx();
    }
    return r;
}

void NetDevice::pause() { stop_rx(); }

void NetDevice::resume() {
    if (mem_ != nullptr && queues_[kRxQueue].active() && !failed_) {
        if (auto rx = start_rx(); !rx.ok()) failed_ = rx.error();
    }
}

void NetDevice::reset() {
    if (loop_ != nullptr) {
        stop_rx();
        if (tx_wait_armed_) loop_->remove(tx_wait_fd_.get());
    }
    tx_wait_armed_ = false;
    tx_wait_fd_.reset();
    tx_blocked_ = false;
    if (mem_ != nullptr) (void)backend_->set_offloads(0);  // whole, checksummed frames for the next driver
    mem_ = nullptr;
    queues_ = {};
    loop_ = nullptr;
    negotiated_ = Negotiated{};
    failed_.reset();
    std::lock_guard lock(irq_mu_);
    interrupt_ = nullptr;
    status_negotiated_ = false;
}

void NetDevice::set_link_up(bool up) {
    if (link_up_.exchange(up) == up) return;
    std::lock_guard lock(irq_mu_);
    if (interrupt_ != nullptr && status_negotiated_) interrupt_->signal_config();
}

State NetDevice::save() const { return State{mac_, link_up_.load(), mtu_}; }

std::string NetDevice::last_drop() const {
    std::lock_guard lock(drop_mu_);
    return last_drop_;
}

void NetDevice::drop(std::atomic<uint64_t>& counter, const std::string& why) {
    counter.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard lock(drop_mu_);
    last_drop_ = why;
}

void NetDevice::signal_used(uint16_t queue) {
    if (queues_[queue].should_notify() && interrupt_ != nullptr) interrupt_->signal_queue(queue);
}

}  // namespace popek::virtio::net
