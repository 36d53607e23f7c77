// End to end without a VM: virtio-rng behind the virtio-pci transport on
// the PCI bus, found through ECAM, driven through the MMIO bus the way a
// guest driver would, with notifications that reach the BAR (no ioeventfd).
#include <gtest/gtest.h>

#include <chrono>
#include <deque>
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

TEST(PciVirtioRng, GuestDriverGetsRandomBytes) {
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

    uint16_t used_idx = 0;
    for (int i = 0; i < 5000 && used_idx != 1; ++i) {
        std::this_thread::sleep_for(1ms);
        ASSERT_TRUE(mem->read(kUsed + 2, {reinterpret_cast<uint8_t*>(&used_idx), 2}).ok());
    }
    ASSERT_EQ(used_idx, 1) << transport->failure();
    uint32_t len = 0;
    ASSERT_TRUE(mem->read(kUsed + 8, {reinterpret_cast<uint8_t*>(&len), 4}).ok());
    EXPECT_EQ(len, 64u);
    for (int i = 0; i < 5000 && irqs.triggers[0] == 0; ++i) std::this_thread::sleep_for(1ms);
    EXPECT_EQ(irqs.triggers[0], 1) << "the queue's MSI-X vector";
    EXPECT_EQ(transport->device().metrics().requests, 1u);
}

}  // namespace
}  // namespace popek
