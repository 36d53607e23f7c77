#include "devices/pci/pci_bus.hpp"

#include <algorithm>
#include <cstdio>

#include "arch/x86/layout.hpp"
#include "base/bytes.hpp"
#include "devices/pci/config_space.hpp"

namespace popek::devices::pci {

static_assert(arch::x86::kPciIntxGsiCount == 8, "PciBus keeps one shared line per INTx GSI");

namespace {

// The host bridge at 00.0: Red Hat's PCIe host bridge id (QEMU's gpex uses
// it too), class 0x060000. Linux's type-1 sanity check looks for a host
// bridge class on bus 0.
constexpr PciIds kHostBridgeIds{0x1b36, 0x0008, 0x1af4, 0x1100, 0, 0x060000};

class HostBridge final : public PciDevice {
public:
    HostBridge() : config_(kHostBridgeIds) {}
    void config_read(uint16_t offset, std::span<uint8_t> data) override {
        std::lock_guard lock(mu_);
        config_.read(offset, data);
    }
    void config_write(uint16_t offset, std::span<const uint8_t> data) override {
        std::lock_guard lock(mu_);
        config_.write(offset, data);
    }
    [[nodiscard]] std::vector<BarRequest> bars() const override { return {}; }
    void set_bar_address(uint8_t, uint64_t) override {}
    void bar_read(uint8_t, uint64_t, std::span<uint8_t> data) override {
        for (auto& b : data) b = 0xff;
    }
    void bar_write(uint8_t, uint64_t, std::span<const uint8_t>) override {}
    [[nodiscard]] std::string description() const override { return "Red Hat, Inc. QEMU PCIe Host bridge"; }

private:
    std::mutex mu_;
    PciConfigSpace config_;
};

bool valid_config_access(uint16_t reg, size_t size) {
    return (size == 1 || size == 2 || size == 4) && reg < kConfigSpaceSize && reg % size == 0;
}

std::string hex(uint64_t v) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(v));
    return buf;
}

}  // namespace

std::string pci_address(uint8_t slot) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "00:%02x.0", static_cast<unsigned>(slot));
    return buf;
}

// One BAR on the MMIO bus: forwards to the device with the BAR's index.
class PciBus::BarRegion final : public BusDevice {
public:
    BarRegion(PciDevice& dev, uint8_t index) : dev_(dev), index_(index) {}
    void read(uint64_t offset, std::span<uint8_t> data) override { dev_.bar_read(index_, offset, data); }
    void write(uint64_t offset, std::span<const uint8_t> data) override { dev_.bar_write(index_, offset, data); }

private:
    PciDevice& dev_;
    uint8_t index_;
};

// A level-triggered GSI several slots share: high while any input is high.
class PciBus::SharedIntx {
public:
    explicit SharedIntx(IrqLine& out) : out_(out) {}
    void set(uint32_t input, bool level) {
        std::lock_guard lock(mu_);
        const uint32_t before = asserted_;
        asserted_ = level ? (asserted_ | (1u << input)) : (asserted_ & ~(1u << input));
        if ((before != 0) != (asserted_ != 0)) out_.set_level(asserted_ != 0);
    }

private:
    std::mutex mu_;
    IrqLine& out_;
    uint32_t asserted_ = 0;  // bit per slot
};

class PciBus::IntxInput final : public IrqLine {
public:
    IntxInput(SharedIntx& line, uint32_t slot) : line_(line), slot_(slot) {}
    void set_level(bool level) override { line_.set(slot_, level); }

private:
    SharedIntx& line_;
    uint32_t slot_;
};

PciBus::PciBus(Bus& mmio, InterruptManager& irqs, uint64_t mmio_start, uint64_t mmio_size)
    : mmio_(mmio),
      irqs_(irqs),
      window_start_(mmio_start),
      window_end_(mmio_start + mmio_size),
      next_free_(mmio_start) {
    slots_[0] = std::make_unique<HostBridge>();
}

PciBus::~PciBus() {
    // Devices first: their threads may still raise INTx through the shared
    // lines, which the members below own.
    for (auto& dev : slots_) dev.reset();
}

base::Result<uint8_t> PciBus::add(std::unique_ptr<PciDevice> dev) {
    if (dev == nullptr) return base::Error{"PCI: no device to add"};
    uint8_t slot = 0;
    while (slot < kNumSlots && slots_[slot] != nullptr) ++slot;
    const std::string name = dev->description();
    if (slot == kNumSlots) return base::Error{"PCI: no free slot on bus 0 for " + name};

    // Place every BAR first (largest first keeps natural alignment cheap),
    // check it against the MMIO bus, and only then change anything.
    std::vector<BarRequest> bars = dev->bars();
    std::sort(bars.begin(), bars.end(), [](const BarRequest& a, const BarRequest& b) { return a.size > b.size; });
    std::vector<BarPlacement> placed;
    uint64_t next = next_free_;
    for (const BarRequest& bar : bars) {
        const std::string what = pci_address(slot) + " (" + name + ") BAR" + std::to_string(bar.index);
        if (bar.size < 16 || (bar.size & (bar.size - 1)) != 0)
            return base::Error{"PCI " + what + ": size " + std::to_string(bar.size) + " is not a power of two >= 16"};
        const uint64_t addr = base::align_up(next, bar.size);
        if (addr < next || addr > window_end_ || window_end_ - addr < bar.size)
            return base::Error{"PCI " + what + ": the MMIO window " + hex(window_start_) + "-" + hex(window_end_) +
                               " is full; use fewer or smaller devices"};
        for (const Bus::Entry& e : mmio_.entries())
            if (e.base < addr + bar.size && addr < e.base + e.len)
                return base::Error{"PCI " + what + " at " + hex(addr) + " overlaps " + e.id};
        placed.push_back(BarPlacement{slot, bar, addr});
        next = addr + bar.size;
    }

    PciDevice* raw = dev.get();
    slots_[slot] = std::move(dev);
    next_free_ = next;
    const uint32_t gsi = arch::x86::pci_intx_gsi(slot);
    auto& shared = intx_[gsi - arch::x86::kPciIntxGsiBase];
    if (shared == nullptr) shared = std::make_unique<SharedIntx>(irqs_.legacy_line(gsi));
    intx_inputs_.push_back(std::make_unique<IntxInput>(*shared, slot));
    raw->connect_intx(intx_inputs_.back().get(), static_cast<uint8_t>(gsi));

    for (const BarPlacement& p : placed) {
        raw->set_bar_address(p.bar.index, p.address);
        regions_.push_back(std::make_unique<BarRegion>(*raw, p.bar.index));
        placements_.push_back(p);
        POPEK_TRY(mmio_.insert(p.address, p.bar.size, regions_.back().get(),
                               "pci " + pci_address(slot) + " BAR" + std::to_string(p.bar.index)));
    }
    return slot;
}

PciDevice* PciBus::device(uint8_t slot) const { return slot < kNumSlots ? slots_[slot].get() : nullptr; }

void PciBus::config_read(uint8_t bus, uint8_t device_nr, uint8_t function, uint16_t reg,
                         std::span<uint8_t> data) const {
    PciDevice* dev = bus == 0 && function == 0 ? device(device_nr) : nullptr;
    if (dev == nullptr || !valid_config_access(reg, data.size())) {
        for (auto& b : data) b = 0xff;
        return;
    }
    dev->config_read(reg, data);
}

void PciBus::config_write(uint8_t bus, uint8_t device_nr, uint8_t function, uint16_t reg,
                          std::span<const uint8_t> data) const {
    PciDevice* dev = bus == 0 && function == 0 ? device(device_nr) : nullptr;
    if (dev == nullptr || !valid_config_access(reg, data.size())) return;
    dev->config_write(reg, data);
}

}  // namespace popek::devices::pci
