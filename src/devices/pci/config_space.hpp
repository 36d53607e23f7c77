// A type-0 configuration space: the header registers with their write
// masks, the BAR sizing protocol, a capability list and the INTx pin.
//
// BARs: popek places every BAR at build time (PciBus) and registers it on
// the MMIO bus, which is immutable once vCPUs run. The guest may size a BAR
// (write all-ones, read back the size mask) and write the address back, but
// any other address it writes is not honored: the BAR keeps decoding where
// popek put it and reads back that address. Linux uses the assignment it
// finds, as it does for firmware-assigned BARs. Sizing takes a dword write
// of all-ones (as every OS does it). BARs decode whatever Command.Memory
// says: the address never moves, so there is nothing to protect.
//
// Not thread-safe: the owning device locks around it.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "base/result.hpp"
#include "devices/guest_exit.hpp"
#include "devices/pci/pci_device.hpp"

namespace popek::devices::pci {

struct PciIds {
    uint16_t vendor = 0;
    uint16_t device = 0;
    uint16_t subsystem_vendor = 0;
    uint16_t subsystem = 0;
    uint8_t revision = 0;
    uint32_t class_code = 0;  // base class << 16 | subclass << 8 | prog-if
};

class PciConfigSpace {
public:
    explicit PciConfigSpace(const PciIds& ids);

    // Declares a BAR (build time). Refuses bad sizes and overlapping indices.
    base::Result<void> add_bar(const BarRequest& bar);
    [[nodiscard]] const std::vector<BarRequest>& bars() const { return bar_list_; }
    void set_bar_address(uint8_t index, uint64_t address);
    [[nodiscard]] uint64_t bar_address(uint8_t index) const;

    // Appends a capability: `body` is what follows the ID and next-pointer
    // bytes; `writable` (empty, or as long as `body`) holds the bits the guest
    // may change. Returns the capability's offset.
    base::Result<uint16_t> add_capability(uint8_t id, std::span<const uint8_t> body,
                                          std::span<const uint8_t> writable = {});

    // INTx: pin A wired to `line` (null: no INTx, pin 0). The device sets its
    // interrupt level; the line follows it unless Command.INTx-disable is set.
    void connect_intx(IrqLine* line, uint8_t irq);
    void set_intx_level(bool level);
    [[nodiscard]] bool intx_level() const { return intx_level_; }

    // Guest accesses: 1, 2 or 4 bytes inside the 4 KiB space (anything else
    // reads all-ones and writes nothing).
    void read(uint16_t offset, std::span<uint8_t> data) const;
    void write(uint16_t offset, std::span<const uint8_t> data);

    // The device's own view: raw little-endian load/store (no masks), for
    // registers it maintains itself. Out-of-range bytes read 0 / are dropped.
    [[nodiscard]] uint32_t load(uint16_t offset, unsigned size) const;
    void store(uint16_t offset, uint32_t value, unsigned size);
    [[nodiscard]] uint16_t command() const { return static_cast<uint16_t>(load(kRegCommand, 2)); }

private:
    [[nodiscard]] uint32_t bar_register(unsigned reg) const;
    void write_bar_register(unsigned reg, uint32_t value);
    [[nodiscard]] uint32_t bar_size_mask(unsigned reg) const;
    void update_intx();

    std::array<uint8_t, kConfigSpaceSize> bytes_{};
    std::array<uint8_t, kConfigSpaceSize> writable_{};  // bits the guest may set or clear
    std::array<uint8_t, kConfigSpaceSize> w1c_{};       // bits the guest clears by writing 1

    // Per BAR register: which BAR it belongs to (-1: none) and whether it is
    // the upper half of a 64-bit BAR.
    struct BarReg {
        int bar = -1;
        bool upper = false;
        bool sizing = false;  // the guest wrote all-ones and reads the size mask
    };
    std::array<BarReg, kNumBars> regs_{};
    std::array<uint64_t, kNumBars> addresses_{};
    std::array<uint64_t, kNumBars> sizes_{};
    std::vector<BarRequest> bar_list_;

    uint16_t last_cap_ = 0;
    uint16_t next_cap_ = 0x40;

    IrqLine* intx_ = nullptr;
    bool intx_level_ = false;
    bool intx_out_ = false;
};

}  // namespace popek::devices::pci
