// MSI-X: the capability, table programming, per-vector and function
// masking, pending bits and delivery on unmask.
#include "devices/pci/msix.hpp"

#include <gtest/gtest.h>

#include <deque>
#include <map>

namespace popek::devices::pci {
namespace {

struct VectorLog {
    int triggers = 0;
    int updates = 0;
    uint64_t address = 0;
    uint32_t data = 0;
};

class FakeVector final : public MsiVector {
public:
    explicit FakeVector(VectorLog& log) : log_(log) {}
    base::Result<void> update(uint64_t address, uint32_t data) override {
        ++log_.updates;
        log_.address = address;
        log_.data = data;
        return {};
    }
    void trigger() override { ++log_.triggers; }

private:
    VectorLog& log_;
};

class FakeLine final : public IrqLine {
public:
    void set_level(bool l) override { level = l; }
    bool level = false;
};

class FakeIrqs final : public InterruptManager {
public:
    base::Result<std::unique_ptr<MsiVector>> create_msi_vector() override {
        if (fail_after-- == 0) return base::Error{"out of vectors"};
        logs.emplace_back();
        return std::unique_ptr<MsiVector>(std::make_unique<FakeVector>(logs.back()));
    }
    IrqLine& legacy_line(uint32_t gsi) override { return lines[gsi]; }
    std::deque<VectorLog> logs;  // stable addresses
    std::map<uint32_t, FakeLine> lines;
    int fail_after = -1;
};

struct Rig {
    FakeIrqs irqs;
    PciConfigSpace config{PciIds{0x1af4, 0x1042, 0, 0, 1, 0}};
    std::unique_ptr<Msix> msix;
    uint16_t cap = 0;

    explicit Rig(uint16_t vectors = 3) {
        auto m = Msix::create(irqs, vectors, 0, 0x8000, 0xf000);
        EXPECT_TRUE(m.ok());
        msix = std::move(m).value();
        auto at = msix->add_capability(config);
        EXPECT_TRUE(at.ok());
        cap = at.ok() ? *at : 0;
    }
    void control(uint16_t value) {
        uint8_t b[2] = {static_cast<uint8_t>(value), static_cast<uint8_t>(value >> 8)};
        config.write(static_cast<uint16_t>(cap + 2), b);
        msix->config_written(config);
    }
    void table32(uint64_t off, uint32_t v) {
        uint8_t b[4];
        for (int i = 0; i < 4; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
        msix->table_write(off, b);
    }
    uint32_t read_table32(uint64_t off) {
        uint8_t b[4] = {};
        msix->table_read(off, b);
        return uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 | uint32_t{b[3]} << 24;
    }
    uint64_t pba() {
        uint8_t b[8] = {};
        msix->pba_read(0, b);
        uint64_t v = 0;
        for (int i = 0; i < 8; ++i) v |= uint64_t{b[i]} << (8 * i);
        return v;
    }
    void program(uint16_t vector, uint64_t addr, uint32_t data, bool masked) {
        table32(vector * 16u + 0, static_cast<uint32_t>(addr));
        table32(vector * 16u + 4, static_cast<uint32_t>(addr >> 32));
        table32(vector * 16u + 8, data);
        table32(vector * 16u + 12, masked ? 1 : 0);
    }
};

TEST(PciMsix, CapabilityDescribesTableAndPba) {
    Rig r(3);
    EXPECT_EQ(r.config.load(r.cap, 1), kCapIdMsix);
    EXPECT_EQ(r.config.load(static_cast<uint16_t>(r.cap + 2), 2), 2u) << "table size - 1";
    EXPECT_EQ(r.config.load(static_cast<uint16_t>(r.cap + 4), 4), 0x8000u) << "table offset, BIR 0";
    EXPECT_EQ(r.config.load(static_cast<uint16_t>(r.cap + 8), 4), 0xf000u) << "PBA offset, BIR 0";
    // Only Enable and Function Mask are writable.
    uint8_t all[2] = {0xff, 0xff};
    r.config.write(static_cast<uint16_t>(r.cap + 2), all);
    EXPECT_EQ(r.config.load(static_cast<uint16_t>(r.cap + 2), 2), 0xc002u);
    EXPECT_EQ(r.msix->table_bytes(), 48u);
    EXPECT_EQ(r.msix->pba_bytes(), 8u);
}

TEST(PciMsix, EntriesResetMaskedAndReadBack) {
    Rig r;
    EXPECT_EQ(r.read_table32(12), 1u) << "vector control: masked after reset";
    r.program(1, 0xfee01000, 0x4041, true);
    EXPECT_EQ(r.read_table32(16), 0xfee01000u);
    EXPECT_EQ(r.read_table32(20), 0u);
    EXPECT_EQ(r.read_table32(24), 0x4041u);
    r.table32(28, 0xfffffffe);
    EXPECT_EQ(r.read_table32(28), 0u) << "reserved control bits read 0";
    uint8_t q[8] = {};
    r.msix->table_read(16, q);
    EXPECT_EQ(q[3], 0xfe) << "aligned qword reads work";
}

TEST(PciMsix, DeliversOnlyWhenEnabledAndUnmasked) {
    Rig r;
    r.program(0, 0xfee00000, 0x30, false);
    r.msix->trigger(0);
    EXPECT_EQ(r.irqs.logs[0].triggers, 0) << "MSI-X disabled: nothing";
    EXPECT_EQ(r.pba(), 0u) << "and nothing pending";
    r.control(kMsixControlEnable);
    EXPECT_TRUE(r.msix->enabled());
    EXPECT_EQ(r.irqs.logs[0].updates, 1) << "the route is programmed when the entry becomes live";
    EXPECT_EQ(r.irqs.logs[0].address, 0xfee00000u);
    EXPECT_EQ(r.irqs.logs[0].data, 0x30u);
    r.msix->trigger(0);
    r.msix->trigger(0);
    EXPECT_EQ(r.irqs.logs[0].triggers, 2);
    EXPECT_EQ(r.irqs.logs[0].updates, 1) << "no route update per trigger";
    r.msix->trigger(7);  // out of range: ignored
}

TEST(PciMsix, MaskedVectorGoesPendingAndFiresOnUnmask) {
    Rig r;
    r.control(kMsixControlEnable);
    r.program(1, 0xfee00000, 0x41, true);
    EXPECT_EQ(r.irqs.logs[1].updates, 0) << "masked entries are not routed yet";
    r.msix->trigger(1);
    r.msix->trigger(1);
    EXPECT_EQ(r.irqs.logs[1].triggers, 0);
    EXPECT_EQ(r.pba(), 0x2u);
    r.table32(16 + 12, 0);  // unmask
    EXPECT_EQ(r.irqs.logs[1].updates, 1);
    EXPECT_EQ(r.irqs.logs[1].triggers, 1) << "one message for the pending bit";
    EXPECT_EQ(r.pba(), 0u);
    // Rewriting data while unmasked reprograms the route.
    r.table32(16 + 8, 0x42);
    EXPECT_EQ(r.irqs.logs[1].updates, 2);
    EXPECT_EQ(r.irqs.logs[1].data, 0x42u);
}

TEST(PciMsix, FunctionMaskHoldsEveryVector) {
    Rig r;
    r.program(0, 0xfee00000, 0x30, false);
    r.program(2, 0xfee00000, 0x32, false);
    r.control(kMsixControlEnable | kMsixControlFunctionMask);
    r.msix->trigger(0);
    r.msix->trigger(2);
    EXPECT_EQ(r.irqs.logs[0].triggers + r.irqs.logs[2].triggers, 0);
    EXPECT_EQ(r.pba(), 0x5u);
    r.control(kMsixControlEnable);
    EXPECT_EQ(r.irqs.logs[0].triggers, 1);
    EXPECT_EQ(r.irqs.logs[2].triggers, 1);
    EXPECT_EQ(r.pba(), 0u);
}

TEST(PciMsix, HostileTableAccessesAreIgnored) {
    Rig r;
    r.control(kMsixControlEnable);
    uint8_t b[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    r.msix->table_write(12, std::span<const uint8_t>(b, 1));  // byte write: ignored
    r.msix->table_write(13, std::span<const uint8_t>(b, 4));  // misaligned
    r.msix->table_write(14, std::span<const uint8_t>(b, 2));
    r.msix->table_write(48, std::span<const uint8_t>(b, 4));  // past the table
    r.msix->table_write(~0ull - 3, std::span<const uint8_t>(b, 4));
    EXPECT_EQ(r.read_table32(12), 1u) << "still masked";
    uint8_t out[4] = {1, 1, 1, 1};
    r.msix->table_read(2, std::span<uint8_t>(out, 2));
    EXPECT_EQ(out[0], 0);
    r.msix->pba_read(8, out);
    EXPECT_EQ(out[0], 0);
}

TEST(PciMsix, RefusesBadLayouts) {
    FakeIrqs irqs;
    EXPECT_FALSE(Msix::create(irqs, 0, 0, 0, 0x1000).ok());
    EXPECT_FALSE(Msix::create(irqs, 2049, 0, 0, 0x10000).ok());
    EXPECT_FALSE(Msix::create(irqs, 4, 6, 0, 0x1000).ok());
    EXPECT_FALSE(Msix::create(irqs, 4, 0, 0, 0x20).ok()) << "PBA inside the table";
    EXPECT_FALSE(Msix::create(irqs, 4, 0, 4, 0x1000).ok()) << "misaligned table";
    irqs.fail_after = 1;
    auto r = Msix::create(irqs, 4, 0, 0, 0x1000);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("vector 1"), std::string::npos) << r.error().message;
}

}  // namespace
}  // namespace popek::devices::pci
