// The PCI bus and the virtio devices a VmConfig asks for.
#include <unistd.h>

#include "arch/x86/layout.hpp"
#include "block/disk_image.hpp"
#include "block/io_engine.hpp"
#include "net/tap.hpp"
#include "virtio/blk/device.hpp"
#include "virtio/console/device.hpp"
#include "virtio/net/device.hpp"
#include "virtio/rng/device.hpp"
#include "vmm/machine.hpp"

namespace popek::vmm {

using base::Error;
using base::Result;
namespace x86 = arch::x86;

namespace {

Result<std::unique_ptr<block::IoEngine>> engine_for(const DiskConfig& d) {
    if (d.engine == "sync") return block::make_engine(block::EngineKind::Sync);
    auto uring = block::make_engine(block::EngineKind::IoUring);
    if (uring || d.engine == "io_uring") return uring;
    return block::make_engine(block::EngineKind::Sync);  // "auto": io_uring unavailable here
}

// A locally administered unicast MAC derived from the device id, stable
// across runs so guests keep their interface names and leases.
std::array<uint8_t, 6> default_mac(const std::string& id) {
    uint32_t h = 2166136261u;
    for (char c : id) h = (h ^ static_cast<uint8_t>(c)) * 16777619u;
    return {0x52, 0x54, 0x00, static_cast<uint8_t>(h >> 16), static_cast<uint8_t>(h >> 8), static_cast<uint8_t>(h)};
}

}  // namespace

Result<void> Machine::add_virtio(std::unique_ptr<virtio::VirtioDevice> device) {
    std::string id = device->id();
    POPEK_ASSIGN_OR_RETURN(auto pci_dev, virtio::pci::VirtioPciDevice::create(std::move(device), memory_,
                                                                              *interrupts_, *ioeventfds_));
    virtio::pci::VirtioPciDevice* raw = pci_dev.get();
    auto slot = pci_bus_->add(std::move(pci_dev));
    if (!slot) return slot.error().context(id);
    virtio_.push_back(raw);
    return {};
}

// `saved`: the snapshot's device states, or null. Each virtio device is
// built through the constructor a fresh boot uses, given its saved State;
// the transports take their saved registers once all devices are on the bus.
Result<void> Machine::build_pci(const SavedDevices* saved) {
    pci_bus_ = std::make_unique<devices::pci::PciBus>(mmio_, *interrupts_, x86::kPciMmio32Start, x86::kPciMmio32Size);
    pci_config_io_ = std::make_unique<devices::pci::PciConfigIo>(*pci_bus_);
    pci_ecam_ = std::make_unique<devices::pci::PciEcam>(*pci_bus_);
    POPEK_TRY(pio_.insert(x86::kPortPciConfig, x86::kPortPciConfigLen, pci_config_io_.get(), "pci-config-io"));
    POPEK_TRY(mmio_.insert(x86::kPciEcamStart, x86::kPciEcamSize, pci_ecam_.get(), "pci-ecam"));
    ioeventfds_ = std::make_unique<virtio::pci::VmIoeventfds>(*vm_);

    for (const auto& d : cfg_.disks) {
        auto access = d.readonly ? block::Access::ReadOnly : block::Access::ReadWrite;
        // A migration's destination locks writable images only at activation.
        auto image = block::DiskImage::open(d.path, access,
                                            disks_lock_later_ ? block::LockWhen::Later : block::LockWhen::Now);
        if (!image) return image.error().context("--disk " + d.path);
        auto engine = engine_for(d);
        if (!engine) return engine.error().context("--disk " + d.path + ": I/O engine " + d.engine);
        virtio::blk::BlockOptions opts;
        opts.id = d.id;
        opts.num_queues = d.queues;
        std::optional<virtio::blk::State> state;
        if (saved != nullptr) state = std::get<virtio::blk::State>(saved->virtio.at(d.id).device);
        auto dev = virtio::blk::BlockDevice::create(opts, std::move(image).value(), std::move(engine).value(), state);
        if (!dev) return dev.error().context("--disk " + d.path);
        POPEK_TRY(add_virtio(std::move(dev).value()));
    }
    for (const auto& n : cfg_.nets) {
        auto tap = net::Tap::open(n.tap);
        if (!tap) return tap.error();
        virtio::net::State state;
        state.mac = n.mac_given ? n.mac : default_mac(n.id);
        if (saved != nullptr) state = std::get<virtio::net::State>(saved->virtio.at(n.id).device);
        POPEK_TRY(add_virtio(std::make_unique<virtio::net::NetDevice>(n.id, std::move(tap).value(), state)));
    }
    if (cfg_.rng) POPEK_TRY(add_virtio(std::make_unique<virtio::rng::RngDevice>("rng0")));
    if (cfg_.console == ConsoleDevice::Virtio) {
        virtio::console::ConsoleOptions opts;
        opts.in_fd = -1;  // stdin feeds the serial console
        opts.out_fd = STDOUT_FILENO;
        virtio::console::State state;
        if (saved != nullptr) state = std::get<virtio::console::State>(saved->virtio.at(opts.id).device);
        POPEK_TRY(add_virtio(std::make_unique<virtio::console::ConsoleDevice>(opts, state)));
    }
    if (saved != nullptr) {
        for (auto* t : virtio_) {
            const std::string id = t->device().id();
            POPEK_TRY(t->restore(saved->virtio.at(id).transport));
        }
    }
    return {};
}

std::string Machine::describe_devices() const { return devices::pci::describe_pci(*pci_bus_); }

}  // namespace popek::vmm
