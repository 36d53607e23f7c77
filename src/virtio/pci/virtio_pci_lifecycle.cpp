// DRIVER_OK (activation), reset, queue notifications and device failure.
#include <sys/epoll.h>
#include <unistd.h>

#include "virtio/pci/virtio_pci.hpp"

#include <cstdio>

namespace popek::virtio::pci {

uint64_t VirtioPciDevice::notify_address(uint16_t queue) const {
    return bar_address_ + kNotifyOffset + uint64_t{queue} * kNotifyOffMultiplier;
}

base::Result<void> VirtioPciDevice::activate(uint64_t features) {
    std::vector<SplitQueue> queues;
    {
        std::lock_guard lock(mu_);
        activated_ = true;  // from here on a reset must reset the device too
        queues.reserve(num_queues_);
        for (uint16_t q = 0; q < num_queues_; ++q) {
            SplitQueue::State s = queue_cfg_[q];
            s.msix_vector = vectors_[q].load();
            queues.emplace_back(s);
        }
    }
    // SplitQueue::activate checks size, alignment and that every ring lies in RAM.
    for (uint16_t q = 0; q < num_queues_; ++q) {
        if (!queues[q].state().ready) continue;
        auto ok = queues[q].activate(mem_, features);
        if (!ok.ok()) return ok.error().context("queue " + std::to_string(q));
    }
    for (uint16_t q = 0; q < num_queues_; ++q) {
        // Without an ioeventfd, notify writes reach bar_write and signal the
        // same eventfd: slower, not wrong.
        if (queues[q].state().ready && bar_address_ != 0)
            ioeventfd_registered_[q] = ioeventfds_.add(notify_fds_[q].get(), notify_address(q)).ok();
    }
    {
        std::lock_guard lock(mu_);
        queues_ = std::move(queues);
    }

    base::Result<void> result;
    loop_->run_sync([&] {
        for (uint16_t q = 0; q < num_queues_ && result.ok(); ++q) {
            if (!queues_[q].state().ready) continue;
            auto added = loop_->add(notify_fds_[q].get(), EPOLLIN, [this, q](uint32_t) { return on_notify(q); });
            if (!added.ok()) result = added.error().context("watching queue " + std::to_string(q));
        }
        if (result.ok()) result = device_->activate(
                ActivateContext{mem_, queues_, interrupt(), *loop_, features, [this](uint16_t q) { notify(q); }});
        if (result.ok()) {
            running_.store(true, std::memory_order_release);
            // Kicks that raced ahead of the handlers are in the eventfds:
            // the handlers run for them on the next loop iteration.
        } else {
            for (const auto& fd : notify_fds_) loop_->remove(fd.get());
        }
    });
    if (!result.ok()) unregister_ioeventfds();
    return result;
}

void VirtioPciDevice::unregister_ioeventfds() {
    for (uint16_t q = 0; q < num_queues_; ++q) {
        if (!ioeventfd_registered_[q]) continue;
        (void)ioeventfds_.remove(notify_fds_[q].get(), notify_address(q));
        ioeventfd_registered_[q] = false;
    }
}

void VirtioPciDevice::reset_device() {
    bool was_activated;
    {
        std::lock_guard lock(mu_);
        was_activated = activated_;
    }
    running_.store(false, std::memory_order_release);
    if (was_activated) {
        // Quiesce on the device's own thread: no handler runs concurrently,
        // and none runs for these fds afterwards.
        loop_->run_sync([&] {
            for (const auto& fd : notify_fds_) loop_->remove(fd.get());
            device_->reset();
        });
        unregister_ioeventfds();
    }
    for (const auto& fd : notify_fds_) {  // drop stale kicks
        uint64_t n;
        (void)!::read(fd.get(), &n, sizeof n);
    }
    // Only now does the driver read 0 back (4.1.4.3.2: reset completes
    // before device_status reads 0).
    std::lock_guard lock(mu_);
    reset_registers();
}

bool VirtioPciDevice::on_notify(uint16_t queue) {
    uint64_t n;
    (void)!::read(notify_fds_[queue].get(), &n, sizeof n);
    if (!running_.load(std::memory_order_acquire)) return true;
    auto r = device_->process_queue(queue);
    if (!r.ok()) device_failed(r.error().context("queue " + std::to_string(queue)));
    return true;
}

void VirtioPciDevice::notify(uint16_t queue) {
    if (!running_.load(std::memory_order_acquire)) return;
    const uint64_t one = 1;
    (void)!::write(notify_fds_[queue].get(), &one, sizeof one);
}

void VirtioPciDevice::kick_all_queues() {
    const uint64_t one = 1;
    for (const auto& fd : notify_fds_) (void)!::write(fd.get(), &one, sizeof one);
}

void VirtioPciDevice::device_failed(const base::Error& error) {
    // The guest broke the rules: stop processing, tell the driver through
    // DEVICE_NEEDS_RESET and a configuration change interrupt.
    running_.store(false, std::memory_order_release);
    {
        std::lock_guard lock(mu_);
        status_ = static_cast<uint8_t>(status_ | kStatusNeedsReset);
        failure_ = error.message;
    }
    // Say why, but a guest can break the device after every reset: a few lines only.
    constexpr unsigned kMaxReports = 5;
    unsigned n = failures_reported_.fetch_add(1, std::memory_order_relaxed);
    if (n < kMaxReports)
        std::fprintf(stderr, "popek: virtio %s: the guest broke the device (%s); it needs a reset%s\n",
                     device_->id().c_str(), error.message.c_str(),
                     n + 1 == kMaxReports ? "; further reports for this device are suppressed" : "");
    signal_config();
}

}  // namespace popek::virtio::pci
