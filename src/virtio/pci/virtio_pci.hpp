// The virtio 1.2 PCI transport (modern only, section 4.1): a PCI function
// that wraps one VirtioDevice.
//
// IDs: vendor 0x1af4, device 0x1040 + virtio type, subsystem 0x1af4:0x1100
// (QEMU's), revision 1; class by type (block 0x010000, net 0x020000,
// console 0x078000, rng 0x00ff00).
//
// BAR0, a 64 KiB 32-bit memory BAR, holds every structure:
//   0x0000 common configuration   0x1000 ISR status   0x2000 device config
//   0x3000 notifications: queue q at 0x3000 + 4q (notify_off_multiplier 4)
//   0x8000 MSI-X table (num_queues + 1 vectors; the last is "config")
//   0xf000 MSI-X PBA
// Vendor capabilities COMMON, NOTIFY, ISR, DEVICE and PCI_CFG point there.
//
// Threads: vCPU threads access config space and BAR0. The wrapped device
// runs on an EventLoop this transport owns ("virtio-<id>"): activate(),
// process_queue() and reset() run there. Queue notifications arrive on one
// eventfd per queue, registered as an ioeventfd at DRIVER_OK (writes that
// still reach BAR0 signal the same eventfd). Interrupts go through MSI-X
// when the guest enabled it, else through the ISR and INTA.
//
// Locks: status_mu_ serializes device_status transitions and is held while
// waiting for the device thread; mu_ guards registers and config space and
// is never held while waiting for that thread (which takes mu_ to raise
// INTx or report a failure).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "base/event_loop.hpp"
#include "base/result.hpp"
#include "base/unique_fd.hpp"
#include "devices/interrupts.hpp"
#include "devices/pci/config_space.hpp"
#include "devices/pci/msix.hpp"
#include "devices/pci/pci_device.hpp"
#include "memory/guest_memory.hpp"
#include "virtio/device.hpp"
#include "virtio/pci/ioeventfd.hpp"
#include "virtio/queue.hpp"

namespace popek::virtio::pci {

constexpr uint16_t kVirtioVendorId = 0x1af4;
constexpr uint16_t kModernDeviceIdBase = 0x1040;

constexpr uint64_t kBarSize = 0x10000;
constexpr uint32_t kCommonCfgOffset = 0x0000;
constexpr uint32_t kCommonCfgLength = 0x3c;  // through queue_reset (virtio 1.2)
constexpr uint32_t kIsrOffset = 0x1000;
constexpr uint32_t kDeviceCfgOffset = 0x2000;
constexpr uint32_t kDeviceCfgLength = 0x1000;
constexpr uint32_t kNotifyOffset = 0x3000;
constexpr uint32_t kNotifyOffMultiplier = 4;
constexpr uint16_t kMaxQueues = 1024;  // the notify region is 4 KiB
constexpr uint32_t kMsixTableOffset = 0x8000;
constexpr uint32_t kMsixPbaOffset = 0xf000;

// virtio_pci_cap.cfg_type
constexpr uint8_t kCfgTypeCommon = 1;
constexpr uint8_t kCfgTypeNotify = 2;
constexpr uint8_t kCfgTypeIsr = 3;
constexpr uint8_t kCfgTypeDevice = 4;
constexpr uint8_t kCfgTypePci = 5;

// device_status
constexpr uint8_t kStatusAcknowledge = 0x01;
constexpr uint8_t kStatusDriver = 0x02;
constexpr uint8_t kStatusDriverOk = 0x04;
constexpr uint8_t kStatusFeaturesOk = 0x08;
constexpr uint8_t kStatusNeedsReset = 0x40;
constexpr uint8_t kStatusFailed = 0x80;

constexpr uint8_t kIsrQueue = 0x1;
constexpr uint8_t kIsrConfig = 0x2;
constexpr uint16_t kNoVector = 0xffff;

class VirtioPciDevice final : public devices::pci::PciDevice {
public:
    // What a snapshot needs besides the wrapped device's own state.
    struct State {
        uint8_t status = 0;
        uint8_t config_generation = 0;
        uint8_t isr = 0;
        uint32_t device_feature_select = 0;
        uint32_t driver_feature_select = 0;
        uint64_t driver_features = 0;
        uint16_t queue_select = 0;
        uint16_t config_msix_vector = kNoVector;
        std::vector<SplitQueue::State> queues;  // configuration and ring indices; msix_vector included
        devices::pci::Msix::State msix;
        std::vector<uint8_t> pci_config;  // the first 256 bytes, as the guest reads them
    };

    // Everything is injected; all of it must outlive the transport. The
    // device thread is created but not started (see start()).
    static base::Result<std::unique_ptr<VirtioPciDevice>> create(std::unique_ptr<VirtioDevice> device,
                                                                 const memory::GuestMemory& mem,
                                                                 devices::InterruptManager& irqs,
                                                                 IoeventfdRegistrar& ioeventfds);
    ~VirtioPciDevice() override;
    VirtioPciDevice(const VirtioPciDevice&) = delete;
    VirtioPciDevice& operator=(const VirtioPciDevice&) = delete;

    // Starts the device thread. Call it where the VMM starts its other
    // threads (after blocking the signals it reads through a signalfd).
    // Until then device work runs inline on the calling vCPU thread.
    void start();

    // PciDevice.
    void config_read(uint16_t offset, std::span<uint8_t> data) override;
    void config_write(uint16_t offset, std::span<const uint8_t> data) override;
    [[nodiscard]] std::vector<devices::pci::BarRequest> bars() const override;
    void set_bar_address(uint8_t index, uint64_t address) override;
    void bar_read(uint8_t index, uint64_t offset, std::span<uint8_t> data) override;
    void bar_write(uint8_t index, uint64_t offset, std::span<const uint8_t> data) override;
    void connect_intx(devices::IrqLine* line, uint8_t irq) override;
    [[nodiscard]] std::string description() const override;

    // Reads queue indices on the device thread: call with vCPUs paused
    // (and the device paused, so no request is in flight).
    [[nodiscard]] State save() const;
    // On a freshly created transport (vCPUs not running): takes the saved
    // registers, configuration space and MSI-X state and, if the driver had
    // set DRIVER_OK, activates the device with the saved ring indices.
    // Errors say what in the state does not fit this device.
    base::Result<void> restore(const State& state);
    // With vCPUs paused: completes the requests in flight and stops queue
    // processing (notifications wait in their eventfds); resume() processes
    // what arrived meanwhile. No-ops when the device is not running.
    void pause();
    void resume();
    // Why the device last entered DEVICE_NEEDS_RESET ("" if it never did).
    [[nodiscard]] std::string failure() const;
    [[nodiscard]] VirtioDevice& device() { return *device_; }
    [[nodiscard]] base::EventLoop& loop() { return *loop_; }
    [[nodiscard]] uint64_t offered_features() const { return offered_; }

private:
    class TransportInterrupt;
    VirtioPciDevice(std::unique_ptr<VirtioDevice> device, const memory::GuestMemory& mem,
                    IoeventfdRegistrar& ioeventfds, const devices::pci::PciIds& ids);
    base::Result<void> build_capabilities();

    // virtio_pci_common.cpp
    void common_read(uint64_t offset, std::span<uint8_t> data);
    void common_write(uint64_t offset, std::span<const uint8_t> data);
    void write_status(uint8_t value);
    [[nodiscard]] bool features_acceptable() const;
    [[nodiscard]] uint16_t valid_vector(uint64_t vector) const;
    void reset_registers();  // mu_ held

    // virtio_pci_lifecycle.cpp
    base::Result<void> activate(uint64_t features);  // status_mu_ held, mu_ not
    void reset_device();                              // status_mu_ held, mu_ not
    bool on_notify(uint16_t queue);                   // device thread
    void device_failed(const base::Error& error);     // any thread but a vCPU's holding mu_
    void notify(uint16_t queue);
    void kick_all_queues();  // as if the driver notified every queue
    void unregister_ioeventfds();
    [[nodiscard]] uint64_t notify_address(uint16_t queue) const;

    // Interrupts (virtio_pci.cpp); any thread.
    std::atomic<unsigned> failures_reported_{0};

    void raise(uint8_t isr_bit, uint16_t vector);
    void signal_config();
    uint8_t read_isr();
    Interrupt& interrupt();

    std::unique_ptr<VirtioDevice> device_;
    const memory::GuestMemory& mem_;
    IoeventfdRegistrar& ioeventfds_;
    const uint16_t num_queues_;
    const uint16_t queue_max_;
    const uint64_t offered_;
    std::string thread_name_;
    std::unique_ptr<base::EventLoop> loop_;
    std::unique_ptr<devices::pci::Msix> msix_;
    std::unique_ptr<TransportInterrupt> interrupt_;
    std::vector<base::UniqueFd> notify_fds_;          // one per queue, for the transport's life
    std::vector<bool> ioeventfd_registered_;          // status_mu_
    std::unique_ptr<std::atomic<uint16_t>[]> vectors_;  // MSI-X vector per queue, then config
    std::atomic<bool> running_{false};                // activated and not failed: process queues
    bool paused_ = false;                             // status_mu_: pause() stopped a running device
    uint64_t bar_address_ = 0;                        // set at build time

    std::mutex status_mu_;
    mutable std::mutex mu_;
    devices::pci::PciConfigSpace config_;
    uint16_t pci_cfg_cap_ = 0;
    uint8_t status_ = 0;
    uint8_t generation_ = 0;
    uint8_t isr_ = 0;
    bool activated_ = false;  // device.activate() was called since the last reset
    uint32_t device_feature_select_ = 0;
    uint32_t driver_feature_select_ = 0;
    uint64_t driver_features_ = 0;
    uint16_t queue_select_ = 0;
    std::vector<SplitQueue::State> queue_cfg_;  // what the driver configured
    std::vector<SplitQueue> queues_;            // the device thread's while activated
    std::string failure_;
};

}  // namespace popek::virtio::pci
