// PciBus with its two configuration mechanisms (ports 0xcf8-0xcff and
// ECAM), BAR placement on the MMIO bus, shared INTx lines and the listing.
#include "devices/pci/pci_bus.hpp"

#include <gtest/gtest.h>

#include <map>
#include <vector>

#include "arch/x86/layout.hpp"
#include "devices/pci/config_access.hpp"
#include "devices/pci/config_space.hpp"
#include "devices/pci/describe.hpp"

namespace popek::devices::pci {
namespace {

namespace x86 = arch::x86;

class FakeLine final : public IrqLine {
public:
    void set_level(bool l) override {
        level = l;
        ++edges;
    }
    bool level = false;
    int edges = 0;
};

class FakeIrqs final : public InterruptManager {
public:
    base::Result<std::unique_ptr<MsiVector>> create_msi_vector() override { return base::Error{"no MSI here"}; }
    IrqLine& legacy_line(uint32_t gsi) override { return lines[gsi]; }
    std::map<uint32_t, FakeLine> lines;
};

struct Access {
    uint8_t bar;
    uint64_t offset;
    size_t size;
    bool write;
};

class FakeDevice final : public PciDevice {
public:
    explicit FakeDevice(std::vector<BarRequest> bars) : config_(PciIds{0x8086, 0x1234, 0x8086, 0x5678, 2, 0x0c0330}) {
        for (const BarRequest& b : bars) EXPECT_TRUE(config_.add_bar(b).ok());
    }
    void config_read(uint16_t offset, std::span<uint8_t> data) override { config_.read(offset, data); }
    void config_write(uint16_t offset, std::span<const uint8_t> data) override { config_.write(offset, data); }
    [[nodiscard]] std::vector<BarRequest> bars() const override { return config_.bars(); }
    void set_bar_address(uint8_t index, uint64_t address) override { config_.set_bar_address(index, address); }
    void bar_read(uint8_t index, uint64_t offset, std::span<uint8_t> data) override {
        accesses.push_back({index, offset, data.size(), false});
        for (auto& b : data) b = 0xab;
    }
    void bar_write(uint8_t index, uint64_t offset, std::span<const uint8_t> data) override {
        accesses.push_back({index, offset, data.size(), true});
    }
    void connect_intx(IrqLine* line, uint8_t irq) override { config_.connect_intx(line, irq); }
    [[nodiscard]] std::string description() const override { return "Test Vendor test device"; }
    void raise(bool level) { config_.set_intx_level(level); }

    std::vector<Access> accesses;

private:
    PciConfigSpace config_;
};

struct Rig {
    Bus mmio{"mmio"};
    FakeIrqs irqs;
    PciBus bus{mmio, irqs, x86::kPciMmio32Start, x86::kPciMmio32Size};
    PciConfigIo io{bus};
    PciEcam ecam{bus};

    FakeDevice* add(std::vector<BarRequest> bars = {{0, 0x4000, false, false}}) {
        auto dev = std::make_unique<FakeDevice>(std::move(bars));
        FakeDevice* raw = dev.get();
        auto slot = bus.add(std::move(dev));
        EXPECT_TRUE(slot.ok()) << (slot.ok() ? "" : slot.error().message);
        return slot.ok() ? raw : nullptr;
    }
    // Configuration mechanism #1, as Linux's pci_conf1_read does it.
    uint32_t cf8_read(uint8_t bus_nr, uint8_t dev, uint8_t fn, uint16_t reg, size_t size) {
        out32(0, 0x80000000u | uint32_t{bus_nr} << 16 | uint32_t{dev} << 11 | uint32_t{fn} << 8 | (reg & 0xfcu));
        uint8_t b[4] = {};
        io.read(4 + (reg & 3u), std::span<uint8_t>(b, size));
        return value(b, size);
    }
    void cf8_write(uint8_t dev, uint16_t reg, uint32_t v, size_t size) {
        out32(0, 0x80000000u | uint32_t{dev} << 11 | (reg & 0xfcu));
        uint8_t b[4];
        for (int i = 0; i < 4; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
        io.write(4 + (reg & 3u), std::span<const uint8_t>(b, size));
    }
    uint32_t ecam_read(uint8_t bus_nr, uint8_t dev, uint8_t fn, uint16_t reg, size_t size) {
        uint8_t b[4] = {};
        ecam.read(uint64_t{bus_nr} << 20 | uint64_t{dev} << 15 | uint64_t{fn} << 12 | reg, std::span<uint8_t>(b, size));
        return value(b, size);
    }
    void out32(uint64_t port_off, uint32_t v) {
        uint8_t b[4];
        for (int i = 0; i < 4; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
        io.write(port_off, b);
    }
    static uint32_t value(const uint8_t* b, size_t size) {
        uint32_t v = 0;
        for (size_t i = 0; i < size; ++i) v |= uint32_t{b[i]} << (8 * i);
        return v;
    }
};

TEST(PciBus, HostBridgeAtSlotZero) {
    Rig r;
    EXPECT_EQ(r.ecam_read(0, 0, 0, 0x00, 4), 0x00081b36u);
    EXPECT_EQ(r.ecam_read(0, 0, 0, 0x08, 4) >> 8, 0x060000u) << "class: host bridge";
    EXPECT_EQ(r.ecam_read(0, 0, 0, 0x0e, 1), 0u);
    EXPECT_EQ(r.ecam_read(0, 0, 0, 0x3d, 1), 0u) << "no INTx pin";
}

TEST(PciBus, AbsentFunctionsReadAllOnes) {
    Rig r;
    r.add();
    EXPECT_EQ(r.cf8_read(0, 5, 0, 0, 2), 0xffffu);
    EXPECT_EQ(r.ecam_read(0, 5, 0, 0, 2), 0xffffu);
    EXPECT_EQ(r.cf8_read(0, 1, 1, 0, 4), 0xffffffffu) << "function 1";
    EXPECT_EQ(r.ecam_read(0, 1, 7, 0, 4), 0xffffffffu);
    EXPECT_EQ(r.cf8_read(1, 1, 0, 0, 2), 0xffffu) << "bus 1 does not exist";
    EXPECT_EQ(r.cf8_read(0xff, 0, 0, 0, 4), 0xffffffffu);
    EXPECT_NE(r.cf8_read(0, 1, 0, 0, 2), 0xffffu);
}

TEST(PciBus, ConfigMechanismsAgree) {
    Rig r;
    r.add();
    r.add({{0, 0x1000, true, true}});
    for (int d : {0, 1, 2, 3, 31}) {
        const auto dev = static_cast<uint8_t>(d);
        for (uint16_t reg = 0; reg < 0x40; reg += 2) {
            EXPECT_EQ(r.cf8_read(0, dev, 0, reg, 2), r.ecam_read(0, dev, 0, reg, 2)) << int{dev} << " " << reg;
            EXPECT_EQ(r.cf8_read(0, dev, 0, reg, 1), r.ecam_read(0, dev, 0, reg, 1));
            if (reg % 4 == 0) {
                EXPECT_EQ(r.cf8_read(0, dev, 0, reg, 4), r.ecam_read(0, dev, 0, reg, 4));
            }
        }
    }
    // A write through one is seen through the other.
    r.cf8_write(1, 0x04, 0x0006, 2);
    EXPECT_EQ(r.ecam_read(0, 1, 0, 0x04, 2), 0x0006u);
    uint8_t cmd[2] = {0x02, 0x00};
    r.ecam.write(uint64_t{2} << 15 | 0x04, cmd);
    EXPECT_EQ(r.cf8_read(0, 2, 0, 0x04, 2), 0x0002u);
}

TEST(PciBus, Cf8AddressRegisterAndDataPortOffsets) {
    Rig r;
    r.add();
    r.out32(0, 0xffffffff);
    uint8_t a[4] = {};
    r.io.read(0, a);
    EXPECT_EQ(Rig::value(a, 4), 0x80fffffcu) << "reserved bits 30:24 and 1:0 read 0";
    // Byte and word accesses to 0xcf8-0xcfb are not CONFIG_ADDRESS.
    uint8_t one = 0x12;
    r.io.write(1, std::span<const uint8_t>(&one, 1));
    r.io.read(0, a);
    EXPECT_EQ(Rig::value(a, 4), 0x80fffffcu);
    r.io.read(0, std::span<uint8_t>(a, 2));
    EXPECT_EQ(Rig::value(a, 2), 0xffffu);
    // Data port byte n is byte n of the dword: vendor 0x8086, device 0x1234.
    r.out32(0, 0x80000000u | 1u << 11);
    uint8_t b[4] = {};
    r.io.read(6, std::span<uint8_t>(b, 2));  // 0xcfe: device id
    EXPECT_EQ(Rig::value(b, 2), 0x1234u);
    r.io.read(7, std::span<uint8_t>(b, 1));  // 0xcff
    EXPECT_EQ(b[0], 0x12);
    r.io.read(5, std::span<uint8_t>(b, 2));  // 0xcfd: misaligned word
    EXPECT_EQ(Rig::value(b, 2), 0xffffu);
    r.io.read(6, std::span<uint8_t>(b, 4));  // dword off the data port's start
    EXPECT_EQ(Rig::value(b, 4), 0xffffffffu);
    // Without the enable bit the data port reads all-ones.
    r.out32(0, 1u << 11);
    r.io.read(4, std::span<uint8_t>(b, 4));
    EXPECT_EQ(Rig::value(b, 4), 0xffffffffu);
}

TEST(PciBus, EcamRejectsMalformedAccesses) {
    Rig r;
    r.add();
    uint8_t b[8] = {};
    r.ecam.read(uint64_t{1} << 15 | 1, std::span<uint8_t>(b, 2));
    EXPECT_EQ(Rig::value(b, 2), 0xffffu) << "misaligned";
    r.ecam.read(uint64_t{1} << 15, std::span<uint8_t>(b, 8));
    EXPECT_EQ(b[7], 0xff) << "8-byte configuration reads do not exist";
    r.ecam.read(uint64_t{1} << 20, std::span<uint8_t>(b, 4));
    EXPECT_EQ(Rig::value(b, 4), 0xffffffffu) << "bus 1";
    EXPECT_EQ(r.ecam_read(0, 1, 0, 0xffc, 4), 0u) << "extended space of a present device";
}

TEST(PciBus, BarsArePlacedAlignedAndDecodeOnTheMmioBus) {
    Rig r;
    FakeDevice* a = r.add({{0, 0x4000, false, false}});
    FakeDevice* b = r.add({{0, 0x1000, false, false}, {2, 0x100000, true, true}});
    ASSERT_TRUE(a && b);
    ASSERT_EQ(r.bus.bar_placements().size(), 3u);
    for (const auto& p : r.bus.bar_placements()) {
        EXPECT_EQ(p.address % p.bar.size, 0u) << "naturally aligned";
        EXPECT_GE(p.address, x86::kPciMmio32Start);
        EXPECT_LE(p.address + p.bar.size, x86::kPciMmio32Start + x86::kPciMmio32Size);
    }
    EXPECT_EQ(r.mmio.entries().size(), 3u);
    const uint64_t bar2 = r.ecam_read(0, 2, 0, 0x18, 4) & ~0xfu;
    EXPECT_EQ(r.ecam_read(0, 2, 0, 0x1c, 4), 0u) << "below 4 GiB";
    EXPECT_EQ(r.ecam_read(0, 2, 0, 0x18, 4) & 0xf, 0xcu) << "64-bit prefetchable";
    uint8_t buf[4];
    ASSERT_TRUE(r.mmio.read(bar2 + 0x10, buf));
    ASSERT_EQ(b->accesses.size(), 1u);
    EXPECT_EQ(b->accesses[0].bar, 2);
    EXPECT_EQ(b->accesses[0].offset, 0x10u);
    EXPECT_EQ(buf[0], 0xab);
    const uint64_t bar0 = r.ecam_read(0, 1, 0, 0x10, 4) & ~0xfu;
    ASSERT_TRUE(r.mmio.write(bar0 + 0x3ffc, buf));
    EXPECT_TRUE(a->accesses.back().write);
    EXPECT_EQ(a->accesses.back().offset, 0x3ffcu);
}

TEST(PciBus, RefusesWhatDoesNotFit) {
    Bus mmio("mmio");
    FakeIrqs irqs;
    PciBus small(mmio, irqs, 0xc0000000, 0x10000);
    auto big = small.add(std::make_unique<FakeDevice>(std::vector<BarRequest>{{0, 0x20000, false, false}}));
    ASSERT_FALSE(big.ok());
    EXPECT_NE(big.error().message.find("full"), std::string::npos) << big.error().message;
    EXPECT_EQ(mmio.entries().size(), 0u) << "nothing registered";
    EXPECT_EQ(small.device(1), nullptr) << "nothing added";

    class Other final : public BusDevice {
    public:
        void read(uint64_t, std::span<uint8_t>) override {}
        void write(uint64_t, std::span<const uint8_t>) override {}
    } other;
    ASSERT_TRUE(mmio.insert(0xc0000000, 0x1000, &other, "other").ok());
    auto clash = small.add(std::make_unique<FakeDevice>(std::vector<BarRequest>{{0, 0x1000, false, false}}));
    ASSERT_FALSE(clash.ok());
    EXPECT_NE(clash.error().message.find("overlaps other"), std::string::npos) << clash.error().message;

    Rig r;
    for (int i = 1; i < kNumSlots; ++i) r.add({});
    auto full = r.bus.add(std::make_unique<FakeDevice>(std::vector<BarRequest>{}));
    ASSERT_FALSE(full.ok());
    EXPECT_NE(full.error().message.find("no free slot"), std::string::npos);
    EXPECT_FALSE(r.bus.add(nullptr).ok());
}

TEST(PciBus, IntxIsInta16PlusSlotMod8AndShared) {
    Rig r;
    std::vector<FakeDevice*> devs(1, nullptr);
    for (int i = 1; i <= 9; ++i) devs.push_back(r.add({}));
    for (uint8_t slot = 1; slot <= 9; ++slot) {
        EXPECT_EQ(r.ecam_read(0, slot, 0, 0x3d, 1), 1u) << "INTA";
        EXPECT_EQ(r.ecam_read(0, slot, 0, 0x3c, 1), x86::pci_intx_gsi(slot));
    }
    FakeLine& gsi17 = r.irqs.lines[17];
    devs[1]->raise(true);
    devs[9]->raise(true);  // slot 9 shares GSI 17 with slot 1
    EXPECT_TRUE(gsi17.level);
    devs[1]->raise(false);
    EXPECT_TRUE(gsi17.level) << "slot 9 still asserts";
    devs[9]->raise(false);
    EXPECT_FALSE(gsi17.level);
    EXPECT_EQ(gsi17.edges, 2) << "one rise, one fall";
    devs[2]->raise(true);
    EXPECT_TRUE(r.irqs.lines[18].level);
}

TEST(PciBus, DescribeListsEveryFunction) {
    Rig r;
    r.add({{0, 0x4000, false, false}, {2, 0x100000, true, true}});
    const std::string text = describe_pci(r.bus);
    EXPECT_EQ(text,
              "00:00.0 Host bridge [0600]: Red Hat, Inc. QEMU PCIe Host bridge [1b36:0008]\n"
              "00:01.0 Serial bus controller [0c03]: Test Vendor test device [8086:1234]"
              " BAR0 mem at 0xc0100000 [size 16K] BAR2 mem64 at 0xc0000000 [prefetchable, size 1M]\n")
        << text;
    EXPECT_EQ(pci_class_name(0x010000), "Mass storage controller");
    EXPECT_EQ(pci_class_name(0x020000), "Ethernet controller");
    EXPECT_EQ(pci_class_name(0xff0000), "Device");
}

}  // namespace
}  // namespace popek::devices::pci
