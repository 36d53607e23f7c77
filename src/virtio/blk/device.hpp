// virtio-blk: a disk image behind an I/O engine, served through one or more
// request queues (VIRTIO_BLK_F_MQ). Requests run asynchronously: the device
// parses a chain (request.hpp), hands the I/O to the engine and completes
// the chain when the engine's eventfd reports the result.
//
// Threading: as for every VirtioDevice, activate(), process_queue(),
// reset() and drain() run on the device's event-loop thread, which also
// reaps completions; read_config() and metrics() may come from any thread.
#pragma once

#include <array>
#include <functional>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "block/disk_image.hpp"
#include "block/io_engine.hpp"
#include "virtio/blk/config.hpp"
#include "virtio/blk/metrics.hpp"
#include "virtio/blk/request.hpp"
#include "virtio/blk/state.hpp"
#include "virtio/device.hpp"

namespace popek::virtio::blk {

struct BlockOptions {
    std::string id = "blk0";    // snapshot key; its first 20 bytes are the GET_ID serial
    uint16_t num_queues = 1;    // more than 1 offers VIRTIO_BLK_F_MQ
    uint16_t queue_size = 256;  // queue_max_size(): a power of two, 4..32768
};

class BlockDevice final : public VirtioDevice {
public:
    static constexpr uint16_t kMaxQueues = 64;

    // The device owns the disk (read-only disks offer VIRTIO_BLK_F_RO) and
    // the engine (make_engine(); any kind). A fresh boot passes no state; a
    // restore passes the saved one and goes through the same checks.
    static base::Result<std::unique_ptr<BlockDevice>> create(BlockOptions options, block::DiskImage disk,
                                                             std::unique_ptr<block::IoEngine> engine,
                                                             std::optional<State> saved = std::nullopt);
    ~BlockDevice() override;
    BlockDevice(const BlockDevice&) = delete;
    BlockDevice& operator=(const BlockDevice&) = delete;

    [[nodiscard]] DeviceType type() const override { return DeviceType::Block; }
    [[nodiscard]] std::string id() const override { return options_.id; }
    [[nodiscard]] uint16_t num_queues() const override { return options_.num_queues; }
    [[nodiscard]] uint16_t queue_max_size() const override { return options_.queue_size; }
    [[nodiscard]] uint64_t features() const override { return features_; }

    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    void write_config(uint64_t offset, std::span<const uint8_t> data) override;

    base::Result<void> activate(const ActivateContext& ctx) override;
    base::Result<void> process_queue(uint16_t queue) override;
    // Waits for the I/O in flight (the kernel may still be writing guest
    // memory), drops its completions and forgets the queues.
    void reset() override;
    void pause() override { drain(); }

    // Waits for every request in flight and completes it to the guest, as a
    // pause or snapshot needs before save().
    void drain();
    [[nodiscard]] State save() const;

    [[nodiscard]] DeviceMetrics metrics() const override { return metrics_.snapshot().common; }
    [[nodiscard]] BlockMetricsSnapshot block_metrics() const { return metrics_.snapshot(); }
    [[nodiscard]] uint64_t capacity() const { return limits_.capacity; }
    [[nodiscard]] bool read_only() const { return limits_.read_only; }
    [[nodiscard]] size_t in_flight() const {
        return std::accumulate(queue_in_flight_.begin(), queue_in_flight_.end(), size_t{0});
    }
    // The image, for a migration's hand-over of its lock (flush, unlock, lock).
    block::DiskImage& disk() { return disk_; }

private:
    BlockDevice(BlockOptions options, block::DiskImage disk, std::unique_ptr<block::IoEngine> engine);

    struct InFlight {
        uint16_t queue = 0, head = 0;
        uint64_t status_addr = 0;
        RequestType type = RequestType::In;
        uint64_t data_len = 0;  // In/Out: what each engine result must equal
        uint32_t pending = 0;   // engine operations still running
        bool failed = false;
        bool busy = false;
    };

    // Takes and starts every chain the driver made available in `queue`.
    base::Result<void> take_chains(uint16_t queue);
    base::Result<void> handle(uint16_t queue, const DescriptorChain& chain);
    void start(uint16_t queue, uint16_t head, const ParsedRequest& parsed);
    uint32_t new_slot();
    void complete(uint16_t queue, uint16_t head, uint64_t status_addr, uint8_t status, uint32_t used_len);
    void finish_slot(uint32_t slot);
    // Reaps the engine and completes finished requests; false when the
    // device is not active (then completions are dropped).
    void on_completions();
    void notify_queues();
    void wait_for_io(bool complete_to_guest);

    BlockOptions options_;
    block::DiskImage disk_;
    std::unique_ptr<block::IoEngine> engine_;
    Limits limits_;
    uint64_t features_ = 0;
    std::array<uint8_t, kConfigSize> config_{};  // immutable after construction
    std::array<uint8_t, kIdBytes> serial_{};

    // While active (set by activate, cleared by reset).
    const memory::GuestMemory* mem_ = nullptr;
    std::span<SplitQueue> queues_;
    Interrupt* interrupt_ = nullptr;
    base::EventLoop* loop_ = nullptr;
    uint64_t negotiated_ = 0;

    std::vector<InFlight> slots_;  // index = engine token
    std::vector<uint32_t> free_slots_;
    std::vector<bool> notify_;     // queues with used buffers not yet signalled
    // Per queue: requests in the engine, and whether the device stopped
    // taking chains without asking for a notification (EVENT_IDX) because a
    // completion was coming: it looks at that ring again on the completion.
    std::vector<uint32_t> queue_in_flight_;
    std::vector<bool> look_again_;
    bool draining_ = false;        // pause: complete what runs, take nothing new
    std::optional<base::Error> broken_;  // found while completing; process_queue() reports it
    std::function<void(uint16_t)> kick_;
    std::vector<block::IoCompletion> reaped_;
    BlockMetrics metrics_;
};

}  // namespace popek::virtio::blk
