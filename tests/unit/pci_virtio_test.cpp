// The virtio-pci transport around a real device (virtio-rng): IDs, BAR,
// capabilities, the PCI_CFG window; then end to end without a VM: the
// device on the PCI bus, found through ECAM, driven through the MMIO bus
// the way a guest driver would, with notifications that reach the BAR (no
// ioeventfd).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <thread>

#include "arch/x86/layout.hpp"
#include "devices/pci/config_access.hpp"
#include "devices/pci/describe.hpp"
#include "devices/pci/pci_bus.hpp"
#include "virtio/pci/virtio_pci.hpp"
#include "virtio/rng/device.hpp"

namespace popek {
namespace {

namespace x86 = arch::x86;
using namespace std::chrono_literals;
using virtio::pci::kCfgTypePci;
using virtio::pci::kStatusAcknowledge;
constexpr uint64_t kBar = 0xc0000000;

class CountingVector final : public devices::MsiVector {
public:
    explicit CountingVector(std::atomic<int>& n) : n_(n) {}
    base::Result<void> update(uint64_t, uint32_t) override { return {}; }
    void trigger() override { ++n_; }

private:
    std::atomic<int>& n_;
};

class Irqs final : public devices::InterruptManager {
public:
    base::Result<std::unique_ptr<devices::MsiVector>> create_msi_vector() override {
        triggers.emplace_back(0);
        return std::unique_ptr<devices::MsiVector>(std::make_unique<CountingVector>(triggers.back()));
    }
    devices::IrqLine& legacy_line(uint32_t) override { return line; }
    class Line final : public devices::IrqLine {
    public:
        void set_level(bool) override {}
    } line;
    std::deque<std::atomic<int>> triggers;
};

// A backend without ioeventfds: every notify write exits to the BAR.
class NoIoeventfds final : public virtio::pci::IoeventfdRegistrar {
public:
    base::Result<void> add(int, uint64_t) override { return base::Error{"not supported"}; }
    base::Result<void> remove(int, uint64_t) override { return {}; }
};

struct Guest {
    devices::Bus& mmio;
    uint64_t ecam;
    uint64_t rd(uint64_t addr, size_t size) {
        uint8_t b[8] = {};
        EXPECT_TRUE(mmio.read(addr, std::span<uint8_t>(b, size))) << std::hex << addr;
        uint64_t v = 0;
        for (size_t i = 0; i < size; ++i) v |= uint64_t{b[i]} << (8 * i);
        return v;
    }
    void wr(uint64_t addr, uint64_t v, size_t size) {
        uint8_t b[8];
        for (size_t i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
        EXPECT_TRUE(mmio.write(addr, std::span<const uint8_t>(b, size))) << std::hex << addr;
    }
};


// The transport around a real device, accessed directly (no bus).
struct TransportRig {
    memory::GuestMemory mem = [] {
        memory::RamRange ranges[] = {{0, 1 << 20}};
        return std::move(memory::GuestMemory::create(ranges)).value();
    }();
    Irqs irqs;
    NoIoeventfds io;
    std::unique_ptr<virtio::pci::VirtioPciDevice> t;

    TransportRig() {
        auto r = virtio::pci::VirtioPciDevice::create(std::make_unique<virtio::rng::RngDevice>("rng0"), mem, irqs, io);
        EXPECT_TRUE(r.ok());
        t = std::move(r).value();
        t->set_bar_address(0, kBar);
        t->connect_intx(&irqs.line, 17);
    }
    uint64_t r(uint64_t off, size_t size) {
        uint8_t b[8] = {};
        t->bar_read(0, off, std::span<uint8_t>(b, size));
        uint64_t v = 0;
        for (size_t i = 0; i < size; ++i) v |= uint64_t{b[i]} << (8 * i);
        return v;
    }
    uint8_t status() { return static_cast<uint8_t>(r(0x14, 1)); }
    uint32_t cfg(int off, size_t size) {
        uint8_t b[4] = {};
        t->config_read(static_cast<uint16_t>(off), std::span<uint8_t>(b, size));
        return uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 | uint32_t{b[3]} << 24;
    }
    void wcfg(int off, uint32_t v, size_t size) {
        uint8_t b[4];
        for (size_t i = 0; i < 4; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
        t->config_write(static_cast<uint16_t>(off), std::span<const uint8_t>(b, size));
    }
};

TEST(PciVirtio, IdsClassAndBar) {
    TransportRig r;
    EXPECT_EQ(r.cfg(0x00, 4), 0x10441af4u) << "0x1040 + rng (4)";
    EXPECT_EQ(r.cfg(0x08, 4), 0x00ff0001u) << "class 0x00ff00, revision 1";
    EXPECT_EQ(r.cfg(0x2c, 4), 0x11001af4u);
    EXPECT_EQ(r.cfg(0x3d, 1), 1u) << "INTA";
    EXPECT_EQ(r.cfg(0x10, 4), kBar);
    r.wcfg(0x10, 0xffffffff, 4);
    EXPECT_EQ(r.cfg(0x10, 4), 0xffff0000u) << "64 KiB";
    r.wcfg(0x10, static_cast<uint32_t>(kBar), 4);
    EXPECT_EQ(r.t->description(), "Red Hat, Inc. Virtio 1.0 RNG");
}


TEST(PciVirtio, CapabilityWalkFindsEveryStructure) {
    TransportRig r;
    ASSERT_TRUE(r.cfg(0x06, 2) & 0x10);
    struct Cap { uint16_t at; uint32_t bar, offset, length, len; };
    std::map<uint32_t, Cap> caps;
    uint16_t msix = 0;
    int hops = 0;
    for (uint16_t p = static_cast<uint16_t>(r.cfg(0x34, 1)); p != 0 && hops < 48;
         p = static_cast<uint16_t>(r.cfg(p + 1, 1)), ++hops) {
        EXPECT_EQ(p % 4, 0u);
        if (r.cfg(p, 1) == 0x11) msix = p;
        if (r.cfg(p, 1) != 0x09) continue;
        caps[r.cfg(p + 3, 1)] = {p, r.cfg(p + 4, 1), r.cfg(p + 8, 4), r.cfg(p + 12, 4), r.cfg(p + 2, 1)};
    }
    ASSERT_EQ(caps.size(), 5u) << "COMMON NOTIFY ISR DEVICE PCI_CFG";
    EXPECT_EQ(caps[1].offset, 0x0000u);
    EXPECT_GE(caps[1].length, 0x38u);
    EXPECT_EQ(caps[2].offset, 0x3000u);
    EXPECT_EQ(caps[2].length, 4u) << "one queue, 4 bytes";
    EXPECT_EQ(caps[2].len, 20u);
    EXPECT_EQ(r.cfg(caps[2].at + 16, 4), 4u) << "notify_off_multiplier";
    EXPECT_EQ(caps[3].offset, 0x1000u);
    EXPECT_EQ(caps[4].offset, 0x2000u);
    EXPECT_EQ(caps[5].len, 20u);
    for (auto& [type, c] : caps) {
        EXPECT_EQ(c.bar, 0u) << type;
        EXPECT_LE(c.offset + c.length, 0x10000u) << type;
    }
    ASSERT_NE(msix, 0);
    EXPECT_EQ(r.cfg(msix + 2, 2), 1u) << "2 vectors: the queue and config";
    EXPECT_EQ(r.cfg(msix + 4, 4), 0x8000u);
    EXPECT_EQ(r.cfg(msix + 8, 4), 0xf000u);
    EXPECT_EQ(r.r(0x12, 2), 1u) << "num_queues through the COMMON structure";
}


TEST(PciVirtio, PciCfgWindowReachesBar0) {
    TransportRig r;
    uint16_t window = 0;
    for (uint16_t p = static_cast<uint16_t>(r.cfg(0x34, 1)); p != 0; p = static_cast<uint16_t>(r.cfg(p + 1, 1)))
        if (r.cfg(p, 1) == 0x09 && r.cfg(p + 3, 1) == kCfgTypePci) window = p;
    ASSERT_NE(window, 0);
    r.wcfg(window + 4, 0, 1);      // bar
    r.wcfg(window + 8, 0x12, 4);   // offset: num_queues
    r.wcfg(window + 12, 2, 4);     // length
    EXPECT_EQ(r.cfg(window + 16, 2), 1u);
    r.wcfg(window + 8, 0x14, 4);   // device_status
    r.wcfg(window + 12, 1, 4);
    r.wcfg(window + 16, kStatusAcknowledge, 1);
    EXPECT_EQ(r.status(), kStatusAcknowledge);
    r.wcfg(window + 12, 3, 4);     // bad length: no access
    r.wcfg(window + 16, 0, 4);
    EXPECT_EQ(r.status(), kStatusAcknowledge);
}


TEST(PciVirtio, GuestDriverGetsRandomBytes) {
    memory::RamRange ranges[] = {{0, 16 << 20}};
    auto mem = memory::GuestMemory::create(ranges);
    ASSERT_TRUE(mem.ok());
    devices::Bus mmio("mmio");
    Irqs irqs;
    NoIoeventfds ioeventfds;
    devices::pci::PciBus bus(mmio, irqs, x86::kPciMmio32Start, x86::kPciMmio32Size);
    devices::pci::PciEcam ecam(bus);
    ASSERT_TRUE(mmio.insert(x86::kPciEcamStart, x86::kPciEcamSize, &ecam, "pci-ecam").ok());

    auto dev = virtio::pci::VirtioPciDevice::create(std::make_unique<virtio::rng::RngDevice>("rng0"), *mem, irqs,
                                                    ioeventfds);
    ASSERT_TRUE(dev.ok()) << dev.error().message;
    virtio::pci::VirtioPciDevice* transport = dev->get();
    auto slot = bus.add(std::move(dev).value());
    ASSERT_TRUE(slot.ok()) << slot.error().message;
    EXPECT_EQ(*slot, 1);
    transport->start();

    EXPECT_EQ(devices::pci::describe_pci(bus),
              "00:00.0 Host bridge [0600]: Red Hat, Inc. QEMU PCIe Host bridge [1b36:0008]\n"
              "00:01.0 Unclassified device [00ff]: Red Hat, Inc. Virtio 1.0 RNG [1af4:1044]"
              " BAR0 mem at 0xc0000000 [size 64K] MSI-X 2 vectors\n");

    // Find the device and its structures through ECAM, as a driver does.
    Guest g{mmio, x86::kPciEcamStart + (uint64_t{1} << 15)};
    ASSERT_EQ(g.rd(g.ecam, 4), 0x10441af4u);
    g.wr(g.ecam + 0x04, 0x0006, 2);  // memory decode, bus master
    const uint64_t bar = g.rd(g.ecam + 0x10, 4) & ~0xfull;
    uint64_t common = 0, notify = 0, mult = 0;
    uint64_t msix_cap = 0;
    for (uint64_t p = g.rd(g.ecam + 0x34, 1); p != 0; p = g.rd(g.ecam + p + 1, 1)) {
        if (g.rd(g.ecam + p, 1) == 0x11) msix_cap = p;
        if (g.rd(g.ecam + p, 1) != 0x09) continue;
        const uint64_t type = g.rd(g.ecam + p + 3, 1), off = g.rd(g.ecam + p + 8, 4);
        if (type == 1) common = bar + off;
        if (type == 2) {
            notify = bar + off;
            mult = g.rd(g.ecam + p + 16, 4);
        }
    }
    ASSERT_TRUE(common && notify && msix_cap);

    // MSI-X: vector 0 for the queue.
    const uint64_t table = bar + (g.rd(g.ecam + msix_cap + 4, 4) & ~7ull);
    g.wr(table, 0xfee00000, 8);
    g.wr(table + 8, 0x41, 4);
    g.wr(table + 12, 0, 4);
    g.wr(g.ecam + msix_cap + 2, 0x8000, 2);

    g.wr(common + 0x14, 0, 1);
    g.wr(common + 0x14, 3, 1);
    g.wr(common + 0x08, 1, 4);
    g.wr(common + 0x0c, 1, 4);  // VERSION_1 only
    g.wr(common + 0x14, 0x0b, 1);
    ASSERT_EQ(g.rd(common + 0x14, 1), 0x0bu);
    constexpr uint64_t kDesc = 0x100000, kAvail = 0x101000, kUsed = 0x102000, kBuf = 0x200000;
    g.wr(common + 0x16, 0, 2);
    g.wr(common + 0x18, 16, 2);
    g.wr(common + 0x1a, 0, 2);
    g.wr(common + 0x20, kDesc, 8);
    g.wr(common + 0x28, kAvail, 8);
    g.wr(common + 0x30, kUsed, 8);
    g.wr(common + 0x1c, 1, 2);
    g.wr(common + 0x14, 0x0f, 1);
    ASSERT_EQ(g.rd(common + 0x14, 1), 0x0fu) << transport->failure();

    // One device-writable 64-byte buffer, then a kick.
    struct [[gnu::packed]] Desc {
        uint64_t addr;
        uint32_t len;
        uint16_t flags, next;
    } d{kBuf, 64, 2, 0};
    ASSERT_TRUE(mem->write_obj(kDesc, d).ok());
    ASSERT_TRUE(mem->write_obj(kAvail + 4, uint16_t{0}).ok());
    ASSERT_TRUE(mem->write_obj(kAvail + 2, uint16_t{1}).ok());
    const uint16_t notify_off = static_cast<uint16_t>(g.rd(common + 0x1e, 2));
    g.wr(notify + notify_off * mult, 0, 2);

    // The driver's side of the used ring: acquire the index, then read the element.
    auto* idx_ptr = reinterpret_cast<uint16_t*>(mem->host_ptr(kUsed + 2, 2));
    ASSERT_NE(idx_ptr, nullptr);
    std::atomic_ref<uint16_t> used_idx_ref(*idx_ptr);
    uint16_t used_idx = 0;
    for (int i = 0; i < 5000 && (used_idx = used_idx_ref.load(std::memory_order_acquire)) != 1; ++i)
        std::this_thread::sleep_for(1ms);
    ASSERT_EQ(used_idx, 1) << transport->failure();
    uint32_t len = 0;
    ASSERT_TRUE(mem->read(kUsed + 8, {reinterpret_cast<uint8_t*>(&len), 4}).ok());
    EXPECT_EQ(len, 64u);
    for (int i = 0; i < 5000 && irqs.triggers[0] == 0; ++i) std::this_thread::sleep_for(1ms);
    EXPECT_EQ(irqs.triggers[0], 1) << "the queue's MSI-X vector";
    EXPECT_EQ(transport->device().metrics().requests, 1u);
}

TEST(PciVirtio, TransportRefusesDevicesItCannotCarry) {
    class Odd final : public virtio::VirtioDevice {
    public:
        explicit Odd(uint16_t queues, uint16_t max) : q_(queues), m_(max) {}
        [[nodiscard]] virtio::DeviceType type() const override { return virtio::DeviceType::Rng; }
        [[nodiscard]] std::string id() const override { return "odd"; }
        [[nodiscard]] uint16_t num_queues() const override { return q_; }
        [[nodiscard]] uint16_t queue_max_size() const override { return m_; }
        [[nodiscard]] uint64_t features() const override { return 0; }
        void read_config(uint64_t, std::span<uint8_t>) override {}
        void write_config(uint64_t, std::span<const uint8_t>) override {}
        base::Result<void> activate(const virtio::ActivateContext&) override { return {}; }
        base::Result<void> process_queue(uint16_t) override { return {}; }
        void reset() override {}
        [[nodiscard]] virtio::DeviceMetrics metrics() const override { return {}; }

    private:
        uint16_t q_, m_;
    };
    memory::RamRange ranges[] = {{0, 1 << 20}};
    auto mem = memory::GuestMemory::create(ranges);
    ASSERT_TRUE(mem.ok());
    Irqs irqs;
    NoIoeventfds io;
    using virtio::pci::VirtioPciDevice;
    EXPECT_FALSE(VirtioPciDevice::create(std::make_unique<Odd>(0, 256), *mem, irqs, io).ok());
    EXPECT_FALSE(VirtioPciDevice::create(std::make_unique<Odd>(1025, 256), *mem, irqs, io).ok());
    EXPECT_FALSE(VirtioPciDevice::create(std::make_unique<Odd>(1, 100), *mem, irqs, io).ok());
    EXPECT_FALSE(VirtioPciDevice::create(nullptr, *mem, irqs, io).ok());
    auto ok = VirtioPciDevice::create(std::make_unique<Odd>(1, 1024), *mem, irqs, io);
    ASSERT_TRUE(ok.ok());
    EXPECT_EQ((*ok)->description(), "Red Hat, Inc. Virtio 1.0 RNG");
    EXPECT_EQ((*ok)->offered_features(), virtio::kFeatureVersion1);
}

}  // namespace
}  // namespace popek
