// virtio-console (virtio 1.2, 5.3) without MULTIPORT: one port on
// receiveq 0 (host to guest) and transmitq 1 (guest to host). Output goes to
// an fd; input is read from an fd on the device's event loop, buffered
// (bounded) until the guest offers receive buffers.
//
// Threading: activate/process_queue/reset and input handling run on the
// device's event-loop thread; config access (including emergency writes)
// and set_size() may come from any thread.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "virtio/console/metrics.hpp"
#include "virtio/console/port.hpp"
#include "virtio/console/state.hpp"
#include "virtio/device.hpp"

namespace popek::virtio::console {

constexpr uint64_t kFeatureSize = 1ull << 0;         // VIRTIO_CONSOLE_F_SIZE: cols/rows are valid
constexpr uint64_t kFeatureEmergWrite = 1ull << 2;   // VIRTIO_CONSOLE_F_EMERG_WRITE
constexpr uint16_t kReceiveQueue = 0, kTransmitQueue = 1;
constexpr size_t kConfigSize = 12;                   // cols, rows, max_nr_ports, emerg_wr

struct ConsoleOptions {
    std::string id = "console0";
    int in_fd = -1;   // not owned; -1: no input
    int out_fd = -1;  // not owned; -1: output is discarded
    uint16_t cols = 80, rows = 25;
};

class ConsoleDevice final : public VirtioDevice {
public:
    explicit ConsoleDevice(ConsoleOptions options, State state = {});
    ~ConsoleDevice() override;
    ConsoleDevice(const ConsoleDevice&) = delete;
    ConsoleDevice& operator=(const ConsoleDevice&) = delete;

    [[nodiscard]] DeviceType type() const override { return DeviceType::Console; }
    [[nodiscard]] std::string id() const override { return options_.id; }
    [[nodiscard]] uint16_t num_queues() const override { return 2; }
    [[nodiscard]] uint16_t queue_max_size() const override { return 256; }
    [[nodiscard]] uint64_t features() const override {
        return kFeatureSize | kFeatureEmergWrite | kFeatureEventIdx | kFeatureIndirectDesc;
    }

    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    // emerg_wr (offset 8): the low byte goes straight to the output.
    void write_config(uint64_t offset, std::span<const uint8_t> data) override;

    base::Result<void> activate(const ActivateContext& ctx) override;
    base::Result<void> process_queue(uint16_t queue) override;
    void reset() override;

    // The host terminal changed size: update the config, tell the driver.
    void set_size(uint16_t cols, uint16_t rows);
    [[nodiscard]] State save() const { return State{input_.contents()}; }
    [[nodiscard]] DeviceMetrics metrics() const override { return metrics_.snapshot(); }

private:
    bool on_input(uint32_t events);
    // Moves buffered input into receive chains; false if the queue broke.
    base::Result<void> deliver_input();
    base::Result<void> transmit();
    void watch_input();
    void notify(uint16_t queue);

    ConsoleOptions options_;
    mutable std::mutex mu_;  // cols/rows and interrupt_ (vCPU threads, set_size)
    Interrupt* interrupt_ = nullptr;

    const memory::GuestMemory* mem_ = nullptr;
    std::span<SplitQueue> queues_;
    base::EventLoop* loop_ = nullptr;
    bool watching_ = false;      // in_fd is in the loop
    bool input_closed_ = false;  // end of file or an error on in_fd
    InputBuffer input_;
    std::vector<uint8_t> scratch_;
    ConsoleMetrics metrics_;
};

}  // namespace popek::virtio::console
