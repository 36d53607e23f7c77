// A function on popek's PCI bus, as the bus sees it: configuration space,
// the memory BARs it wants, accesses to them, and its INTx line.
//
// Threading: config and BAR accesses come from vCPU threads (any of them,
// concurrently); a device guards its own state.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "devices/guest_exit.hpp"

namespace popek::devices::pci {

constexpr uint16_t kConfigSpaceSize = 4096;  // PCIe extended configuration space
constexpr uint16_t kLegacyConfigSize = 256;
constexpr uint8_t kNumBars = 6;

// Type-0 header registers (PCI Local Bus 3.0, section 6.1).
constexpr uint16_t kRegVendorId = 0x00;
constexpr uint16_t kRegDeviceId = 0x02;
constexpr uint16_t kRegCommand = 0x04;
constexpr uint16_t kRegStatus = 0x06;
constexpr uint16_t kRegRevision = 0x08;
constexpr uint16_t kRegClassCode = 0x09;  // 3 bytes: prog-if, subclass, base class
constexpr uint16_t kRegCacheLineSize = 0x0c;
constexpr uint16_t kRegHeaderType = 0x0e;
constexpr uint16_t kRegBar0 = 0x10;
constexpr uint16_t kRegSubsystemVendorId = 0x2c;
constexpr uint16_t kRegSubsystemId = 0x2e;
constexpr uint16_t kRegRomBar = 0x30;
constexpr uint16_t kRegCapPointer = 0x34;
constexpr uint16_t kRegInterruptLine = 0x3c;
constexpr uint16_t kRegInterruptPin = 0x3d;

constexpr uint16_t kCommandMemory = 1u << 1;
constexpr uint16_t kCommandBusMaster = 1u << 2;
constexpr uint16_t kCommandIntxDisable = 1u << 10;
constexpr uint16_t kStatusIntx = 1u << 3;
constexpr uint16_t kStatusCapList = 1u << 4;

constexpr uint8_t kCapIdMsix = 0x11;
constexpr uint8_t kCapIdVendor = 0x09;

constexpr uint32_t kBarMem64 = 0x4;          // BAR type bits 2:1 = 10b
constexpr uint32_t kBarPrefetchable = 0x8;

// A memory BAR a device asks for. `size` is a power of two of at least 16
// bytes; a 64-bit BAR also occupies register index+1.
struct BarRequest {
    uint8_t index = 0;
    uint64_t size = 0;
    bool is_64bit = false;
    bool prefetchable = false;
};

class PciDevice {
public:
    virtual ~PciDevice() = default;

    // Configuration space at `offset` (< kConfigSpaceSize); data.size() is
    // 1, 2 or 4. The bus only passes naturally aligned accesses, but an
    // implementation must stay safe for any offset and width.
    virtual void config_read(uint16_t offset, std::span<uint8_t> data) = 0;
    virtual void config_write(uint16_t offset, std::span<const uint8_t> data) = 0;

    // The BARs this device needs (fixed at construction).
    [[nodiscard]] virtual std::vector<BarRequest> bars() const = 0;
    // Where the bus placed BAR `index` (build time, once per BAR).
    virtual void set_bar_address(uint8_t index, uint64_t address) = 0;
    // Guest accesses `offset` bytes into BAR `index` (1, 2, 4 or 8 bytes; the
    // access may run past the BAR's end: check).
    virtual void bar_read(uint8_t index, uint64_t offset, std::span<uint8_t> data) = 0;
    virtual void bar_write(uint8_t index, uint64_t offset, std::span<const uint8_t> data) = 0;

    // The INTA line the bus wired this function to (build time). `line` is
    // owned by the bus; `irq` goes into the Interrupt Line register. Devices
    // without INTx ignore it.
    virtual void connect_intx(IrqLine* line, uint8_t irq) {
        (void)line;
        (void)irq;
    }

    // "Red Hat, Inc. Virtio 1.0 block device": vendor and device, for listings.
    [[nodiscard]] virtual std::string description() const = 0;
};

}  // namespace popek::devices::pci
