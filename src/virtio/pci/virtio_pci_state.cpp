// Pausing, and restoring a transport from a snapshot.
#include "virtio/pci/virtio_pci.hpp"

namespace popek::virtio::pci {

void VirtioPciDevice::pause() {
    std::lock_guard status_lock(status_mu_);
    if (!running_.load(std::memory_order_acquire)) return;
    loop_->run_sync([&] {
        running_.store(false, std::memory_order_release);
        device_->pause();
    });
    paused_ = true;
}

void VirtioPciDevice::resume() {
    std::lock_guard status_lock(status_mu_);
    if (!paused_) return;
    paused_ = false;
    loop_->run_sync([&] {
        device_->resume();
        running_.store(true, std::memory_order_release);
    });
    // Notifications that arrived while paused were read and dropped: look
    // at every queue once.
    kick_all_queues();
}

base::Result<void> VirtioPciDevice::restore(const State& s) {
    const std::string what = "virtio " + device_->id();
    if (s.queues.size() != num_queues_)
        return base::Error{what + ": the snapshot has " + std::to_string(s.queues.size()) + " queues, the device " +
                           std::to_string(num_queues_)};
    for (const auto& q : s.queues) {
        if (q.size > queue_max_) return base::Error{what + ": a saved queue is larger than the device allows"};
    }
    if (s.pci_config.size() != devices::pci::kLegacyConfigSize)
        return base::Error{what + ": saved PCI configuration space has the wrong size"};
    if ((s.driver_features & ~offered_) != 0)
        return base::Error{what + ": the snapshot's driver features were not offered by this device"};

    std::lock_guard status_lock(status_mu_);
    {
        std::lock_guard lock(mu_);
        // BARs never move, so a snapshot from another device layout cannot be followed.
        uint8_t bar0[4];
        config_.read(0x10, bar0);
        for (int i = 0; i < 4; i++) {
            if (bar0[i] != s.pci_config[0x10 + static_cast<size_t>(i)])
                return base::Error{what + ": BAR0 is at another address than in the snapshot (device order changed?)"};
        }
        // Replaying the saved dwords as guest writes sets exactly the bits a
        // guest can set (command, interrupt line, MSI-X control).
        for (uint16_t off = 0; off < devices::pci::kLegacyConfigSize; off += 4)
            config_.write(off, std::span<const uint8_t>(s.pci_config).subspan(off, 4));
        status_ = s.status;
        generation_ = s.config_generation;
        isr_ = s.isr;
        device_feature_select_ = s.device_feature_select;
        driver_feature_select_ = s.driver_feature_select;
        driver_features_ = s.driver_features;
        queue_select_ = s.queue_select;
        queue_cfg_ = s.queues;
        for (uint16_t q = 0; q < num_queues_; ++q) vectors_[q].store(valid_vector(s.queues[q].msix_vector));
        vectors_[num_queues_].store(valid_vector(s.config_msix_vector));
        config_.set_intx_level(isr_ != 0);
    }
    POPEK_TRY(msix_->restore(s.msix));
    if ((s.status & kStatusDriverOk) != 0 && (s.status & (kStatusNeedsReset | kStatusFailed)) == 0) {
        auto activated = activate(s.driver_features);
        if (!activated.ok()) return activated.error().context(what + ": restoring the active device");
        // A request the driver published and notified just before the pause
        // was never taken (the kick was dropped while paused): its guest
        // waits for a completion, not to notify again. Look at every queue once.
        kick_all_queues();
    }
    return {};
}

}  // namespace popek::virtio::pci
