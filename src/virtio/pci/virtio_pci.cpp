#include "virtio/pci/virtio_pci.hpp"

#include <sys/eventfd.h>

#include "base/bytes.hpp"

namespace popek::virtio::pci {

using devices::pci::BarRequest;

namespace {

constexpr uint16_t kSubsystemVendor = 0x1af4;
constexpr uint16_t kSubsystemId = 0x1100;
constexpr uint8_t kRevision = 1;

// Transport feature bits (24-40) the transport implements; the device
// offers the rest of that range at its peril, so they are masked.
constexpr uint64_t kTransportRange = ((1ull << 41) - 1) & ~((1ull << 24) - 1);
constexpr uint64_t kTransportSupported = kFeatureIndirectDesc | kFeatureEventIdx | kFeatureVersion1;

// virtio_pci_cap without cap_vndr/cap_next: cap_len, cfg_type, bar, id,
// padding[2], offset, length (+ 4 more bytes for NOTIFY and PCI_CFG).
constexpr size_t kCapBody = 14;
constexpr uint16_t kPciCfgBar = 4;      // from the capability's start
constexpr uint16_t kPciCfgOffset = 8;
constexpr uint16_t kPciCfgLength = 12;
constexpr uint16_t kPciCfgData = 16;

uint32_t class_for(DeviceType type) {
    switch (type) {
        case DeviceType::Block: return 0x010000;
        case DeviceType::Net: return 0x020000;
        case DeviceType::Console: return 0x078000;
        case DeviceType::Rng: return 0x00ff00;
    }
    return 0x00ff00;
}

const char* type_name(DeviceType type) {
    switch (type) {
        case DeviceType::Block: return "block device";
        case DeviceType::Net: return "network device";
        case DeviceType::Console: return "console";
        case DeviceType::Rng: return "RNG";
    }
    return "device";
}

std::vector<uint8_t> cap_body(uint8_t cfg_type, uint32_t offset, uint32_t length, size_t extra) {
    std::vector<uint8_t> b(kCapBody + extra, 0);
    b[0] = static_cast<uint8_t>(2 + b.size());  // cap_len counts cap_vndr and cap_next
    b[1] = cfg_type;
    b[2] = 0;  // BAR0
    base::store<uint32_t>(b, 6, offset);
    base::store<uint32_t>(b, 10, length);
    return b;
}

bool in_bar(uint64_t offset, size_t size) {
    // One 4 KiB region per access: no access spans two structures.
    return (size == 1 || size == 2 || size == 4 || size == 8) && offset < kBarSize &&
           (offset & 0xfff) + size <= 0x1000;
}

}  // namespace

class VirtioPciDevice::TransportInterrupt final : public Interrupt {
public:
    explicit TransportInterrupt(VirtioPciDevice& t) : t_(t) {}
    void signal_queue(uint16_t queue) override {
        if (queue < t_.num_queues_) t_.raise(kIsrQueue, t_.vectors_[queue].load(std::memory_order_relaxed));
    }
    void signal_config() override { t_.signal_config(); }

private:
    VirtioPciDevice& t_;
};

base::Result<std::unique_ptr<VirtioPciDevice>> VirtioPciDevice::create(std::unique_ptr<VirtioDevice> device,
                                                                       const memory::GuestMemory& mem,
                                                                       devices::InterruptManager& irqs,
                                                                       IoeventfdRegistrar& ioeventfds) {
    if (device == nullptr) return base::Error{"virtio-pci: no device"};
    const std::string id = device->id();
    const uint16_t queues = device->num_queues(), max = device->queue_max_size();
    if (queues == 0 || queues > kMaxQueues)
        return base::Error{"virtio-pci " + id + ": " + std::to_string(queues) + " queues; 1 to " +
                           std::to_string(kMaxQueues) + " are possible"};
    if (max == 0 || max > kMaxQueueSize || (max & (max - 1)) != 0)
        return base::Error{"virtio-pci " + id + ": queue size " + std::to_string(max) +
                           " is not a power of two up to " + std::to_string(kMaxQueueSize)};
    const DeviceType type = device->type();
    devices::pci::PciIds ids{kVirtioVendorId, static_cast<uint16_t>(kModernDeviceIdBase + static_cast<uint32_t>(type)),
                             kSubsystemVendor, kSubsystemId, kRevision, class_for(type)};
    std::unique_ptr<VirtioPciDevice> t(new VirtioPciDevice(std::move(device), mem, ioeventfds, ids));

    POPEK_ASSIGN_OR_RETURN(t->loop_, base::EventLoop::create(t->thread_name_.c_str()));
    POPEK_ASSIGN_OR_RETURN(t->msix_, devices::pci::Msix::create(irqs, static_cast<uint16_t>(queues + 1), 0,
                                                               kMsixTableOffset, kMsixPbaOffset));
    for (uint16_t q = 0; q < queues; ++q) {
        base::UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (!fd.valid()) return base::Error::from_errno("virtio-pci " + id + ": eventfd for queue " + std::to_string(q));
        t->notify_fds_.push_back(std::move(fd));
    }
    auto caps = t->build_capabilities();
    if (!caps.ok()) return caps.error().context("virtio-pci " + id);
    return t;
}

VirtioPciDevice::VirtioPciDevice(std::unique_ptr<VirtioDevice> device, const memory::GuestMemory& mem,
                                 IoeventfdRegistrar& ioeventfds, const devices::pci::PciIds& ids)
    : device_(std::move(device)),
      mem_(mem),
      ioeventfds_(ioeventfds),
      num_queues_(device_->num_queues()),
      queue_max_(device_->queue_max_size()),
      offered_(((device_->features() & ~kTransportRange) | (device_->features() & kTransportSupported)) |
               kFeatureVersion1),
      thread_name_(("virtio-" + device_->id()).substr(0, 15)),  // pthread names hold 15 characters
      interrupt_(std::make_unique<TransportInterrupt>(*this)),
      ioeventfd_registered_(num_queues_, false),
      vectors_(std::make_unique<std::atomic<uint16_t>[]>(size_t{num_queues_} + 1)),
      config_(ids) {
    for (size_t i = 0; i <= num_queues_; ++i) vectors_[i].store(kNoVector);
    std::lock_guard lock(mu_);
    reset_registers();
}

VirtioPciDevice::~VirtioPciDevice() {
    if (loop_ != nullptr) loop_->stop();  // from here on, run_sync runs inline
    if (activated_) device_->reset();
    unregister_ioeventfds();
}

base::Result<void> VirtioPciDevice::build_capabilities() {
    using devices::pci::kCapIdVendor;
    std::lock_guard lock(mu_);
    POPEK_TRY(config_.add_bar(bars().front()));
    POPEK_TRY(config_.add_capability(kCapIdVendor, cap_body(kCfgTypeCommon, kCommonCfgOffset, kCommonCfgLength, 0)));
    auto notify = cap_body(kCfgTypeNotify, kNotifyOffset, uint32_t{num_queues_} * kNotifyOffMultiplier, 4);
    base::store<uint32_t>(notify, kCapBody, kNotifyOffMultiplier);
    POPEK_TRY(config_.add_capability(kCapIdVendor, notify));
    POPEK_TRY(config_.add_capability(kCapIdVendor, cap_body(kCfgTypeIsr, kIsrOffset, 1, 0)));
    POPEK_TRY(config_.add_capability(kCapIdVendor, cap_body(kCfgTypeDevice, kDeviceCfgOffset, kDeviceCfgLength, 0)));
    // The PCI_CFG window: bar, offset, length and data are the driver's.
    auto window = cap_body(kCfgTypePci, 0, 0, 4);
    std::vector<uint8_t> writable(window.size(), 0);
    writable[2] = 0xff;
    for (size_t i = 6; i < writable.size(); ++i) writable[i] = 0xff;
    POPEK_ASSIGN_OR_RETURN(pci_cfg_cap_, config_.add_capability(kCapIdVendor, window, writable));
    POPEK_TRY(msix_->add_capability(config_));
    return {};
}

void VirtioPciDevice::start() { loop_->start(); }

std::vector<BarRequest> VirtioPciDevice::bars() const { return {BarRequest{0, kBarSize, false, false}}; }

void VirtioPciDevice::set_bar_address(uint8_t index, uint64_t address) {
    std::lock_guard lock(mu_);
    if (index != 0) return;
    bar_address_ = address;
    config_.set_bar_address(0, address);
}

void VirtioPciDevice::connect_intx(devices::IrqLine* line, uint8_t irq) {
    std::lock_guard lock(mu_);
    config_.connect_intx(line, irq);
}

std::string VirtioPciDevice::description() const {
    return std::string("Red Hat, Inc. Virtio 1.0 ") + type_name(device_->type());
}

// The PCI_CFG window: a driver without BAR access reaches BAR0 through
// bar/offset/length/data; reading or writing `data` performs the access.
// mu_ is dropped around the BAR access, which takes the locks it needs.
void VirtioPciDevice::config_read(uint16_t offset, std::span<uint8_t> data) {
    const uint16_t window = static_cast<uint16_t>(pci_cfg_cap_ + kPciCfgData);
    if (offset < window + 4 && offset + data.size() > window) {
        uint32_t bar, at, length;
        {
            std::lock_guard lock(mu_);
            bar = config_.load(static_cast<uint16_t>(pci_cfg_cap_ + kPciCfgBar), 1);
            at = config_.load(static_cast<uint16_t>(pci_cfg_cap_ + kPciCfgOffset), 4);
            length = config_.load(static_cast<uint16_t>(pci_cfg_cap_ + kPciCfgLength), 4);
        }
        if (bar == 0 && (length == 1 || length == 2 || length == 4) && at % length == 0) {
            uint8_t buf[4] = {};
            bar_read(0, at, std::span<uint8_t>(buf, length));
            std::lock_guard lock(mu_);
            config_.store(window, static_cast<uint32_t>(base::load_le(buf)), 4);
        }
    }
    std::lock_guard lock(mu_);
    config_.read(offset, data);
}

void VirtioPciDevice::config_write(uint16_t offset, std::span<const uint8_t> data) {
    const uint16_t window = static_cast<uint16_t>(pci_cfg_cap_ + kPciCfgData);
    uint32_t bar = 1, at = 0, length = 0, value = 0;
    {
        std::lock_guard lock(mu_);
        config_.write(offset, data);
        msix_->config_written(config_);
        config_.set_intx_level(isr_ != 0 && !msix_->enabled());
        if (offset < window + 4 && offset + data.size() > window) {
            bar = config_.load(static_cast<uint16_t>(pci_cfg_cap_ + kPciCfgBar), 1);
            at = config_.load(static_cast<uint16_t>(pci_cfg_cap_ + kPciCfgOffset), 4);
            length = config_.load(static_cast<uint16_t>(pci_cfg_cap_ + kPciCfgLength), 4);
            value = config_.load(window, 4);
        }
    }
    if (bar == 0 && (length == 1 || length == 2 || length == 4) && at % length == 0) {
        uint8_t buf[4];
        base::store_le(buf, value);
        bar_write(0, at, std::span<const uint8_t>(buf, length));
    }
}

void VirtioPciDevice::bar_read(uint8_t index, uint64_t offset, std::span<uint8_t> data) {
    for (auto& b : data) b = 0;
    if (index != 0 || !in_bar(offset, data.size())) return;
    if (offset < kIsrOffset) {
        common_read(offset - kCommonCfgOffset, data);
    } else if (offset < kDeviceCfgOffset) {
        if (offset == kIsrOffset) data[0] = read_isr();
    } else if (offset < kNotifyOffset) {
        device_->read_config(offset - kDeviceCfgOffset, data);
    } else if (offset >= kMsixTableOffset && offset < kMsixPbaOffset) {
        msix_->table_read(offset - kMsixTableOffset, data);
    } else if (offset >= kMsixPbaOffset) {
        msix_->pba_read(offset - kMsixPbaOffset, data);
    }
}

void VirtioPciDevice::bar_write(uint8_t index, uint64_t offset, std::span<const uint8_t> data) {
    if (index != 0 || !in_bar(offset, data.size())) return;
    if (offset < kIsrOffset) {
        common_write(offset - kCommonCfgOffset, data);
    } else if (offset >= kDeviceCfgOffset && offset < kNotifyOffset) {
        device_->write_config(offset - kDeviceCfgOffset, data);
    } else if (offset >= kNotifyOffset && offset < kNotifyOffset + 0x1000) {
        const uint64_t slot = (offset - kNotifyOffset) / kNotifyOffMultiplier;
        if (slot < num_queues_) notify(static_cast<uint16_t>(slot));
    } else if (offset >= kMsixTableOffset && offset < kMsixPbaOffset) {
        msix_->table_write(offset - kMsixTableOffset, data);
    }  // ISR and PBA are read-only
}

void VirtioPciDevice::raise(uint8_t isr_bit, uint16_t vector) {
    const bool msix = msix_->enabled();
    if (!msix || isr_bit == kIsrConfig) {
        std::lock_guard lock(mu_);
        isr_ = static_cast<uint8_t>(isr_ | isr_bit);
        if (!msix) config_.set_intx_level(true);
    }
    if (msix && vector != kNoVector) msix_->trigger(vector);
}

void VirtioPciDevice::signal_config() {
    {
        std::lock_guard lock(mu_);
        ++generation_;
    }
    raise(kIsrConfig, vectors_[num_queues_].load(std::memory_order_relaxed));
}

Interrupt& VirtioPciDevice::interrupt() { return *interrupt_; }

uint8_t VirtioPciDevice::read_isr() {
    std::lock_guard lock(mu_);
    const uint8_t v = isr_;
    isr_ = 0;
    config_.set_intx_level(false);
    return v;
}

VirtioPciDevice::State VirtioPciDevice::save() const {
    State s;
    bool activated = false;
    {
        std::lock_guard lock(mu_);
        activated = activated_;
        s.status = status_;
        s.config_generation = generation_;
        s.isr = isr_;
        s.device_feature_select = device_feature_select_;
        s.driver_feature_select = driver_feature_select_;
        s.driver_features = driver_features_;
        s.queue_select = queue_select_;
        s.config_msix_vector = vectors_[num_queues_].load();
        s.queues = queue_cfg_;
        for (uint16_t q = 0; q < num_queues_; ++q) s.queues[q].msix_vector = vectors_[q].load();
        s.pci_config.resize(devices::pci::kLegacyConfigSize);
        for (uint16_t off = 0; off < devices::pci::kLegacyConfigSize; off += 4)
            config_.read(off, std::span<uint8_t>(s.pci_config).subspan(off, 4));
    }
    if (activated) {
        // Ring indices belong to the device thread.
        loop_->run_sync([&] {
            for (size_t q = 0; q < queues_.size() && q < s.queues.size(); ++q) {
                const uint16_t vector = s.queues[q].msix_vector;
                s.queues[q] = queues_[q].state();
                s.queues[q].msix_vector = vector;
            }
        });
    }
    s.msix = msix_->save();
    return s;
}

std::string VirtioPciDevice::failure() const {
    std::lock_guard lock(mu_);
    return failure_;
}

}  // namespace popek::virtio::pci
