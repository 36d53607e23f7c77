#include "virtio/blk/device.hpp"

#include <sys/epoll.h>

#include <algorithm>
#include <bit>
#include <cstring>

namespace popek::virtio::blk {

using base::Error;
using base::Result;

Result<std::unique_ptr<BlockDevice>> BlockDevice::create(BlockOptions options, block::DiskImage disk,
                                                         std::unique_ptr<block::IoEngine> engine,
                                                         std::optional<State> saved) {
    const std::string what = "virtio-blk " + options.id + " (" + disk.path() + ")";
    if (options.num_queues == 0 || options.num_queues > kMaxQueues)
        return Error{what + ": " + std::to_string(options.num_queues) + " queues; use 1 to " +
                     std::to_string(kMaxQueues)};
    if (options.queue_size < 4 || options.queue_size > kMaxQueueSize || !std::has_single_bit(options.queue_size))
        return Error{what + ": queue size " + std::to_string(options.queue_size) +
                     " is not a power of two between 4 and " + std::to_string(kMaxQueueSize)};
    if (engine == nullptr) return Error{what + ": no I/O engine"};
    std::unique_ptr<BlockDevice> dev(new BlockDevice(std::move(options), std::move(disk), std::move(engine)));
    if (saved) {
        if (saved->capacity != dev->limits_.capacity)
            return Error{what + ": the snapshot was taken with a disk of " + std::to_string(saved->capacity) +
                         " sectors, this one has " + std::to_string(dev->limits_.capacity)};
        if (saved->read_only != dev->limits_.read_only)
            return Error{what + ": the snapshot was taken with the disk " +
                         (saved->read_only ? "read-only" : "read-write") + "; attach it the same way"};
        if (saved->num_queues != dev->options_.num_queues)
            return Error{what + ": the snapshot has " + std::to_string(saved->num_queues) + " queues, not " +
                         std::to_string(dev->options_.num_queues)};
        dev->negotiated_ = saved->features;
    }
    return dev;
}

BlockDevice::BlockDevice(BlockOptions options, block::DiskImage disk, std::unique_ptr<block::IoEngine> engine)
    : options_(std::move(options)), disk_(std::move(disk)), engine_(std::move(engine)) {
    const ConfigInput in{disk_.size() >> kSectorShift, options_.queue_size, options_.num_queues};
    limits_ = device_limits(in, disk_.read_only());
    config_ = build_config(in);
    features_ = kFeatureSizeMax | kFeatureSegMax | kFeatureGeometry | kFeatureBlkSize | kFeatureFlush |
                kFeatureTopology | kFeatureEventIdx | kFeatureIndirectDesc;
    // A read-only disk says so, and offers nothing that would write.
    features_ |= disk_.read_only() ? kFeatureRo : (kFeatureDiscard | kFeatureWriteZeroes);
    if (options_.num_queues > 1) features_ |= kFeatureMq;
    std::memcpy(serial_.data(), options_.id.data(), std::min(options_.id.size(), serial_.size()));
}

BlockDevice::~BlockDevice() { reset(); }

void BlockDevice::read_config(uint64_t offset, std::span<uint8_t> data) {
    for (size_t i = 0; i < data.size(); ++i)
        data[i] = offset < kConfigSize && i < kConfigSize - offset ? config_[offset + i] : 0;
}

void BlockDevice::write_config(uint64_t, std::span<const uint8_t>) {
    // Nothing is writable: the cache mode toggle (CONFIG_WCE) is not offered.
}

Result<void> BlockDevice::activate(const ActivateContext& ctx) {
    if (mem_ != nullptr) return Error{"virtio-blk " + options_.id + ": activated twice without a reset"};
    if (ctx.queues.size() != options_.num_queues)
        return Error{"virtio-blk " + options_.id + ": activated with " + std::to_string(ctx.queues.size()) +
                     " queues, the device has " + std::to_string(options_.num_queues)};
    POPEK_TRY(ctx.loop.add(engine_->event_fd(), EPOLLIN, [this](uint32_t) {
        on_completions();
        return true;
    }));
    mem_ = &ctx.mem;
    queues_ = ctx.queues;
    interrupt_ = &ctx.interrupt;
    loop_ = &ctx.loop;
    negotiated_ = ctx.features;
    limits_.discard = (ctx.features & kFeatureDiscard) != 0 && !limits_.read_only;
    limits_.write_zeroes = (ctx.features & kFeatureWriteZeroes) != 0 && !limits_.read_only;
    notify_.assign(queues_.size(), false);
    queue_in_flight_.assign(queues_.size(), 0);
    look_again_.assign(queues_.size(), false);
    kick_ = ctx.kick;
    return {};
}

Result<void> BlockDevice::process_queue(uint16_t queue) {
    if (mem_ == nullptr) return Error{"virtio-blk " + options_.id + ": notified before activation"};
    if (queue >= queues_.size())
        return Error{"virtio-blk " + options_.id + ": notified queue " + std::to_string(queue) + " does not exist"};
    if (broken_) {
        Error e = std::move(*broken_);
        broken_.reset();
        return e;
    }
    return take_chains(queue);
}

Result<void> BlockDevice::take_chains(uint16_t queue) {
    SplitQueue& q = queues_[queue];
    look_again_[queue] = false;
    Result<void> result;
    while (q.active()) {
        // With requests of this queue in the engine, an empty ring does not
        // ask the driver to notify: their completion looks again (one
        // notification per batch instead of one per request).
        const bool busy = queue_in_flight_[queue] > 0;
        auto next = q.pop(!busy);
        if (!next) {
            look_again_[queue] = busy;
            break;
        }
        if (!next->ok()) {
            result = next->error();
            break;
        }
        result = handle(queue, next->value());
        if (!result.ok()) break;
    }
    // Requests already handed over still run, whatever broke afterwards.
    // A failed submit leaves them in the ring; the next submit retries.
    if (!engine_->submit().ok()) metrics_.error();
    notify_queues();
    if (!result.ok()) {
        metrics_.error();
        return result.error().context("virtio-blk " + options_.id + " queue " + std::to_string(queue));
    }
    return {};
}

Result<void> BlockDevice::handle(uint16_t queue, const DescriptorChain& chain) {
    POPEK_ASSIGN_OR_RETURN(ParsedRequest parsed, parse_request(chain, *mem_, limits_));
    metrics_.request();
    if (parsed.status != kStatusOk) {
        if (parsed.status == kStatusUnsupp) metrics_.unsupported();
        metrics_.error();
        complete(queue, chain.head, parsed.status_addr, parsed.status, 1);
        return {};
    }
    const Request& r = parsed.request;
    if (r.type == RequestType::GetId) {
        uint64_t done = 0;
        for (const auto& v : r.data) {
            std::memcpy(v.iov_base, serial_.data() + done, v.iov_len);
            done += v.iov_len;
        }
        complete(queue, chain.head, parsed.status_addr, kStatusOk, static_cast<uint32_t>(r.data_len + 1));
        return {};
    }
    start(queue, chain.head, parsed);
    return {};
}

uint32_t BlockDevice::new_slot() {
    uint32_t slot;
    if (!free_slots_.empty()) {
        slot = free_slots_.back();
        free_slots_.pop_back();
    } else {
        slot = static_cast<uint32_t>(slots_.size());
        slots_.emplace_back();
    }
    return slot;
}

void BlockDevice::start(uint16_t queue, uint16_t head, const ParsedRequest& parsed) {
    const Request& r = parsed.request;
    const uint32_t slot = new_slot();
    slots_[slot] = InFlight{queue, head, parsed.status_addr, r.type, r.data_len, 0, false, true};
    ++queue_in_flight_[queue];

    std::vector<block::IoRequest> ops;
    const int fd = disk_.fd();
    switch (r.type) {
        case RequestType::In:
        case RequestType::Out:
            if (r.data_len > 0)
                ops.push_back({r.type == RequestType::In ? block::IoOp::Read : block::IoOp::Write, fd, slot,
                               r.sector << kSectorShift, 0, r.data});
            break;
        case RequestType::Flush:
            metrics_.flush();
            ops.push_back({block::IoOp::Flush, fd, slot, 0, 0, {}});
            break;
        case RequestType::Discard:
        case RequestType::WriteZeroes: {
            const bool discard = r.type == RequestType::Discard;
            discard ? metrics_.discard() : metrics_.write_zeroes();
            for (const auto& s : r.segments) {
                if (s.num_sectors == 0) continue;
                ops.push_back({discard ? block::IoOp::Discard : block::IoOp::WriteZeroes, fd, slot,
                               s.sector << kSectorShift, uint64_t{s.num_sectors} << kSectorShift, {}});
            }
            break;
        }
        case RequestType::GetId:
            break;
    }
    for (const auto& op : ops) {
        if (!engine_->prepare(op).ok()) {
            slots_[slot].failed = true;
            break;
        }
        ++slots_[slot].pending;
    }
    if (slots_[slot].pending == 0) finish_slot(slot);
}

void BlockDevice::finish_slot(uint32_t slot) {
    const InFlight f = slots_[slot];
    slots_[slot].busy = false;
    free_slots_.push_back(slot);
    --queue_in_flight_[f.queue];
    uint32_t used_len = 1;
    if (f.failed) {
        metrics_.error();
    } else if (f.type == RequestType::In) {
        metrics_.read(f.data_len);
        used_len = static_cast<uint32_t>(f.data_len + 1);  // fits: a chain is under 4 GiB
    } else if (f.type == RequestType::Out) {
        metrics_.written(f.data_len);
    }
    complete(f.queue, f.head, f.status_addr, f.failed ? kStatusIoErr : kStatusOk, used_len);
}

void BlockDevice::complete(uint16_t queue, uint16_t head, uint64_t status_addr, uint8_t status,
                           uint32_t used_len) {
    if (uint8_t* p = mem_->host_ptr(status_addr, 1); p != nullptr) *p = status;
    queues_[queue].push_used(head, used_len);  // publishes the status byte with release order
    notify_[queue] = true;
}

void BlockDevice::on_completions() {
    reaped_.clear();
    engine_->reap(reaped_);
    if (mem_ == nullptr) return;  // reset: nobody to tell
    for (const auto& c : reaped_) {
        if (c.token >= slots_.size() || !slots_[c.token].busy) continue;
        InFlight& f = slots_[c.token];
        const bool transfer = f.type == RequestType::In || f.type == RequestType::Out;
        // A short transfer means the image shrank under us: an error, never
        // stale guest memory reported as disk data.
        const int64_t expected = transfer ? static_cast<int64_t>(f.data_len) : 0;
        if (c.result != expected) f.failed = true;
        if (--f.pending == 0) finish_slot(static_cast<uint32_t>(c.token));
    }
    // Chains the driver added meanwhile, without a notification.
    for (uint16_t q = 0; q < look_again_.size() && !draining_; ++q) {
        if (!look_again_[q]) continue;
        auto r = take_chains(q);
        if (!r.ok() && !broken_) {
            // The transport hears of it through process_queue().
            broken_ = r.error();
            if (kick_) kick_(q);
        }
    }
    notify_queues();
}

void BlockDevice::notify_queues() {
    for (size_t q = 0; q < notify_.size(); ++q) {
        if (!notify_[q]) continue;
        notify_[q] = false;
        if (queues_[q].should_notify()) interrupt_->signal_queue(static_cast<uint16_t>(q));
    }
}

void BlockDevice::wait_for_io(bool complete_to_guest) {
    while (engine_->in_flight() > 0) {
        engine_->wait();
        if (complete_to_guest) {
            on_completions();
        } else {
            reaped_.clear();
            engine_->reap(reaped_);
        }
    }
}

void BlockDevice::drain() {
    if (mem_ == nullptr) return;
    draining_ = true;
    wait_for_io(true);
    draining_ = false;
}

void BlockDevice::reset() {
    if (engine_ == nullptr) return;
    wait_for_io(false);  // the kernel may be writing guest memory until then
    if (loop_ != nullptr) loop_->remove(engine_->event_fd());
    slots_.clear();
    free_slots_.clear();
    notify_.clear();
    queue_in_flight_.clear();
    look_again_.clear();
    broken_.reset();
    kick_ = nullptr;
    mem_ = nullptr;
    queues_ = {};
    interrupt_ = nullptr;
    loop_ = nullptr;
    limits_.discard = limits_.write_zeroes = false;
}

State BlockDevice::save() const {
    return State{limits_.capacity, limits_.read_only, options_.num_queues, negotiated_};
}

}  // namespace popek::virtio::blk
