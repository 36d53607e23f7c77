#include "virtio/console/device.hpp"

#include <sys/epoll.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

namespace popek::virtio::console {

using base::Error;
using base::Result;

ConsoleDevice::ConsoleDevice(ConsoleOptions options, State state)
    : options_(std::move(options)), input_(std::move(state.pending_input)) {}

ConsoleDevice::~ConsoleDevice() { reset(); }

void ConsoleDevice::read_config(uint64_t offset, std::span<uint8_t> data) {
    std::array<uint8_t, kConfigSize> c{};
    {
        std::lock_guard lock(mu_);
        std::memcpy(c.data(), &options_.cols, 2);
        std::memcpy(c.data() + 2, &options_.rows, 2);
    }
    const uint32_t max_nr_ports = 1;  // meaningful only with MULTIPORT; one port is the truth
    std::memcpy(c.data() + 4, &max_nr_ports, 4);
    for (size_t i = 0; i < data.size(); ++i)
        data[i] = offset < kConfigSize && i < kConfigSize - offset ? c[offset + i] : 0;
}

void ConsoleDevice::write_config(uint64_t offset, std::span<const uint8_t> data) {
    // The driver writes the 32-bit emerg_wr field; its low byte is the character.
    if (offset != 8 || data.empty() || options_.out_fd < 0) return;
    const size_t n = write_output(options_.out_fd, data.first(1));
    metrics_.output(n);
}

Result<void> ConsoleDevice::activate(const ActivateContext& ctx) {
    if (ctx.queues.size() != 2)
        return Error{"virtio-console " + options_.id + ": activated with " + std::to_string(ctx.queues.size()) +
                     " queues, the device has 2"};
    mem_ = &ctx.mem;
    queues_ = ctx.queues;
    loop_ = &ctx.loop;
    {
        std::lock_guard lock(mu_);
        interrupt_ = &ctx.interrupt;
    }
    watch_input();
    return {};
}

void ConsoleDevice::watch_input() {
    if (watching_ || input_closed_ || options_.in_fd < 0 || loop_ == nullptr || input_.room() == 0) return;
    auto added = loop_->add(options_.in_fd, EPOLLIN, [this](uint32_t events) { return on_input(events); });
    if (!added.ok()) {
        metrics_.error();
        input_closed_ = true;  // e.g. a regular file, which epoll refuses
        return;
    }
    watching_ = true;
}

bool ConsoleDevice::on_input(uint32_t) {
    if (mem_ == nullptr || input_.room() == 0) {  // (a read of 0 bytes would look like end of file)
        watching_ = false;
        return false;
    }
    std::array<uint8_t, 4096> buf{};
    const ssize_t n = ::read(options_.in_fd, buf.data(), std::min(buf.size(), input_.room()));
    if (n > 0) {
        input_.append(std::span(buf).first(static_cast<size_t>(n)));
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        input_closed_ = true;  // end of input: keep delivering what is buffered
    }
    (void)deliver_input();  // a broken queue shows at the next process_queue
    if (input_closed_ || input_.room() == 0) {
        watching_ = false;  // full: resume when the guest takes some (process_queue)
        return false;
    }
    return true;
}

Result<void> ConsoleDevice::deliver_input() {
    SplitQueue& q = queues_[kReceiveQueue];
    bool used = false;
    Result<void> result;
    while (!input_.empty() && q.active()) {
        auto next = q.pop();
        if (!next) break;
        if (!next->ok()) {
            metrics_.error();
            result = next->error().context("virtio-console " + options_.id + " receiveq");
            break;
        }
        const uint32_t n = input_.deliver(*mem_, next->value());
        metrics_.request();
        metrics_.input(n);
        q.push_used(next->value().head, n);
        used = true;
    }
    if (used) notify(kReceiveQueue);
    return result;
}

Result<void> ConsoleDevice::transmit() {
    SplitQueue& q = queues_[kTransmitQueue];
    bool used = false;
    Result<void> result;
    while (q.active()) {
        auto next = q.pop();
        if (!next) break;
        if (!next->ok()) {
            metrics_.error();
            result = next->error().context("virtio-console " + options_.id + " transmitq");
            break;
        }
        bool failed = false;
        if (options_.out_fd >= 0)
            metrics_.output(transmit_chain(*mem_, next->value(), options_.out_fd, scratch_, failed));
        if (failed) metrics_.error();
        metrics_.request();
        q.push_used(next->value().head, 0);  // nothing written into the guest's buffers
        used = true;
    }
    if (used) notify(kTransmitQueue);
    return result;
}

Result<void> ConsoleDevice::process_queue(uint16_t queue) {
    if (mem_ == nullptr) return Error{"virtio-console " + options_.id + ": notified before activation"};
    if (queue == kTransmitQueue) return transmit();
    if (queue != kReceiveQueue)
        return Error{"virtio-console " + options_.id + ": notified queue " + std::to_string(queue) +
                     " does not exist"};
    // New receive buffers: hand over what is waiting, then read more.
    auto r = deliver_input();
    watch_input();
    return r;
}

void ConsoleDevice::notify(uint16_t queue) {
    if (!queues_[queue].should_notify()) return;
    std::lock_guard lock(mu_);
    if (interrupt_ != nullptr) interrupt_->signal_queue(queue);
}

void ConsoleDevice::set_size(uint16_t cols, uint16_t rows) {
    std::lock_guard lock(mu_);
    options_.cols = cols;
    options_.rows = rows;
    if (interrupt_ != nullptr) interrupt_->signal_config();
}

void ConsoleDevice::reset() {
    if (watching_ && loop_ != nullptr) loop_->remove(options_.in_fd);
    watching_ = false;
    input_closed_ = false;
    input_.clear();
    mem_ = nullptr;
    queues_ = {};
    loop_ = nullptr;
    std::lock_guard lock(mu_);
    interrupt_ = nullptr;
}

}  // namespace popek::virtio::console
