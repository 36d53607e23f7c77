#include "virtio/rng/device.hpp"

#include <algorithm>

namespace popek::virtio::rng {

using base::Error;
using base::Result;

RngDevice::RngDevice(std::string id, State) : id_(std::move(id)) {}

void RngDevice::read_config(uint64_t, std::span<uint8_t> data) { std::fill(data.begin(), data.end(), 0); }

void RngDevice::write_config(uint64_t, std::span<const uint8_t>) {}

Result<void> RngDevice::activate(const ActivateContext& ctx) {
    if (ctx.queues.size() != 1)
        return Error{"virtio-rng " + id_ + ": activated with " + std::to_string(ctx.queues.size()) +
                     " queues, the device has 1"};
    mem_ = &ctx.mem;
    queue_ = &ctx.queues[0];
    interrupt_ = &ctx.interrupt;
    return {};
}

Result<void> RngDevice::process_queue(uint16_t queue) {
    if (queue_ == nullptr) return Error{"virtio-rng " + id_ + ": notified before activation"};
    if (queue != 0) return Error{"virtio-rng " + id_ + ": notified queue " + std::to_string(queue) + " does not exist"};
    bool used = false;
    Result<void> result;
    while (queue_->active()) {
        auto next = queue_->pop();
        if (!next) break;
        if (!next->ok()) {
            metrics_.error();
            result = next->error().context("virtio-rng " + id_);
            break;
        }
        const DescriptorChain& chain = next->value();
        auto filled = fill_request(*mem_, chain, scratch_);
        uint32_t written = 0;
        if (filled.ok()) {
            written = *filled;
        } else {
            metrics_.error();  // the host has no entropy to give: return the buffer empty
        }
        metrics_.request(written);
        queue_->push_used(chain.head, written);
        used = true;
    }
    if (used && queue_->should_notify()) interrupt_->signal_queue(0);
    return result;
}

void RngDevice::reset() {
    mem_ = nullptr;
    queue_ = nullptr;
    interrupt_ = nullptr;
}

}  // namespace popek::virtio::rng
