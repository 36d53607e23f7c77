// PCI bus 0 of popek's single host bridge: 32 slots of one function each,
// the host bridge itself at 00.0, BARs placed at build time in the 32-bit
// MMIO window and registered on the MMIO bus, INTx lines shared per GSI.
//
// Addressing: configuration space is reached through PciConfigIo (ports
// 0xcf8-0xcff) and PciEcam (MMIO), both in config_access.hpp; they call
// config_read/config_write here. Only bus 0, function 0 exists: everything
// else reads all-ones.
//
// INTx: every device gets pin INTA, wired to GSI arch::x86::pci_intx_gsi(slot)
// = 16 + slot % 8 (the DSDT's _PRT says the same). Devices sharing a GSI are
// ORed together here, so one lowering its line does not drop another's.
// IrqLine levels mean asserted/deasserted: _PRT entries that name a GSI are
// level-triggered active-low by ACPI's rules, and KVM's IOAPIC takes
// "asserted" whatever the polarity the guest programs.
//
// Build the whole bus before vCPUs start: add() inserts into the MMIO bus,
// which is immutable afterwards. Lookups then take no lock.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "base/result.hpp"
#include "devices/bus.hpp"
#include "devices/interrupts.hpp"
#include "devices/pci/pci_device.hpp"

namespace popek::devices::pci {

constexpr uint8_t kNumSlots = 32;

// "00:01.0"
std::string pci_address(uint8_t slot);

class PciBus {
public:
    struct BarPlacement {
        uint8_t slot;
        BarRequest bar;
        uint64_t address;
    };

    // BARs go in [mmio_start, mmio_start + mmio_size) and onto `mmio`;
    // INTx lines come from `irqs`. Both must outlive the bus.
    PciBus(Bus& mmio, InterruptManager& irqs, uint64_t mmio_start, uint64_t mmio_size);
    ~PciBus();
    PciBus(const PciBus&) = delete;
    PciBus& operator=(const PciBus&) = delete;

    // Puts `dev` in the lowest free slot, places and registers its BARs and
    // wires its INTA. Returns the slot. On error nothing guest-visible changed,
    // except when the MMIO bus refused a BAR already checked for overlaps
    // (then the device stays, half-registered, and the VM must not start).
    base::Result<uint8_t> add(std::unique_ptr<PciDevice> dev);

    // Configuration access to bus/device/function, `reg` < 4096, 1/2/4 bytes,
    // naturally aligned (else all-ones / ignored). Absent functions read all-ones.
    void config_read(uint8_t bus, uint8_t device, uint8_t function, uint16_t reg, std::span<uint8_t> data) const;
    void config_write(uint8_t bus, uint8_t device, uint8_t function, uint16_t reg,
                      std::span<const uint8_t> data) const;

    [[nodiscard]] PciDevice* device(uint8_t slot) const;
    [[nodiscard]] const std::vector<BarPlacement>& bar_placements() const { return placements_; }

private:
    class BarRegion;
    class SharedIntx;
    class IntxInput;

    Bus& mmio_;
    InterruptManager& irqs_;
    uint64_t window_start_, window_end_, next_free_;
    std::array<std::unique_ptr<PciDevice>, kNumSlots> slots_;
    std::vector<std::unique_ptr<BarRegion>> regions_;
    std::array<std::unique_ptr<SharedIntx>, 8> intx_;
    std::vector<std::unique_ptr<IntxInput>> intx_inputs_;
    std::vector<BarPlacement> placements_;
};

}  // namespace popek::devices::pci
