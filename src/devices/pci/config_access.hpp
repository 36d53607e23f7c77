// The guest's two ways into PCI configuration space, as bus devices:
//
//  * PciConfigIo: configuration mechanism #1 at ports 0xcf8-0xcff
//    (arch::x86::kPortPciConfig, 8 ports). CONFIG_ADDRESS (0xcf8) takes
//    dword accesses only; CONFIG_DATA (0xcfc-0xcff) takes 1/2/4-byte
//    accesses, byte n of the data port being byte n of the addressed dword.
//    Linux uses it for bus 0 registers below 256.
//  * PciEcam: the PCIe memory-mapped window (arch::x86::kPciEcamStart,
//    kPciEcamSize, bus 0 only): offset = bus << 20 | device << 15 |
//    function << 12 | register.
//
// Malformed accesses (wrong width, misaligned, crossing a dword) read
// all-ones and write nothing.
#pragma once

#include <atomic>
#include <cstdint>
#include <span>

#include "devices/bus.hpp"
#include "devices/pci/pci_bus.hpp"

namespace popek::devices::pci {

class PciConfigIo final : public BusDevice {
public:
    explicit PciConfigIo(const PciBus& bus) : bus_(bus) {}
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

private:
    const PciBus& bus_;
    // Enable bit 31, bus 23:16, device 15:11, function 10:8, register 7:2.
    // Shared by all vCPUs, as on hardware: guests serialize address+data.
    std::atomic<uint32_t> address_{0};
};

class PciEcam final : public BusDevice {
public:
    explicit PciEcam(const PciBus& bus) : bus_(bus) {}
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

private:
    const PciBus& bus_;
};

}  // namespace popek::devices::pci
