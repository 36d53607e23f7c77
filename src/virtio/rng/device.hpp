// virtio-rng (virtio 1.2, 5.4): one request queue; every buffer the driver
// offers is filled from the host kernel's getrandom(2) and returned at once.
#pragma once

#include <string>
#include <vector>

#include "virtio/device.hpp"
#include "virtio/rng/metrics.hpp"
#include "virtio/rng/request.hpp"
#include "virtio/rng/state.hpp"

namespace popek::virtio::rng {

class RngDevice final : public VirtioDevice {
public:
    explicit RngDevice(std::string id, State state = {});

    [[nodiscard]] DeviceType type() const override { return DeviceType::Rng; }
    [[nodiscard]] std::string id() const override { return id_; }
    [[nodiscard]] uint16_t num_queues() const override { return 1; }
    [[nodiscard]] uint16_t queue_max_size() const override { return 256; }
    [[nodiscard]] uint64_t features() const override { return kFeatureEventIdx | kFeatureIndirectDesc; }

    // No configuration space.
    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    void write_config(uint64_t offset, std::span<const uint8_t> data) override;

    base::Result<void> activate(const ActivateContext& ctx) override;
    base::Result<void> process_queue(uint16_t queue) override;
    void reset() override;

    [[nodiscard]] State save() const { return {}; }
    [[nodiscard]] DeviceMetrics metrics() const override { return metrics_.snapshot(); }

private:
    std::string id_;
    const memory::GuestMemory* mem_ = nullptr;
    SplitQueue* queue_ = nullptr;
    Interrupt* interrupt_ = nullptr;
    std::vector<uint8_t> scratch_;
    RngMetrics metrics_;
};

}  // namespace popek::virtio::rng
