#include "devices/pci/config_access.hpp"

#include "base/bytes.hpp"

namespace popek::devices::pci {

namespace {

constexpr uint64_t kDataPort = 4;  // 0xcfc - 0xcf8
constexpr uint32_t kEnable = 1u << 31;
// Writable CONFIG_ADDRESS bits: enable, bus, device, function, dword register.
constexpr uint32_t kAddressMask = kEnable | 0x00fffffc;
constexpr uint64_t kEcamBusShift = 20;

void all_ones(std::span<uint8_t> data) {
    for (auto& b : data) b = 0xff;
}

bool naturally_aligned(uint64_t offset, size_t size) {
    return (size == 1 || size == 2 || size == 4) && offset % size == 0;
}

struct Target {
    uint8_t bus, device, function;
    uint16_t reg;
};

}  // namespace

void PciConfigIo::read(uint64_t offset, std::span<uint8_t> data) {
    if (offset == 0 && data.size() == 4) {
        base::store_le(data, address_.load());
        return;
    }
    const uint32_t addr = address_.load();
    if (offset < kDataPort || (addr & kEnable) == 0 || !naturally_aligned(offset - kDataPort, data.size()) ||
        offset - kDataPort + data.size() > 4) {
        all_ones(data);
        return;
    }
    bus_.config_read(static_cast<uint8_t>(addr >> 16), static_cast<uint8_t>((addr >> 11) & 0x1f),
                     static_cast<uint8_t>((addr >> 8) & 0x7), static_cast<uint16_t>((addr & 0xfc) + offset - kDataPort),
                     data);
}

void PciConfigIo::write(uint64_t offset, std::span<const uint8_t> data) {
    if (offset == 0 && data.size() == 4) {
        address_.store(static_cast<uint32_t>(base::load_le(data)) & kAddressMask);
        return;
    }
    const uint32_t addr = address_.load();
    if (offset < kDataPort || (addr & kEnable) == 0 || !naturally_aligned(offset - kDataPort, data.size()) ||
        offset - kDataPort + data.size() > 4)
        return;
    bus_.config_write(static_cast<uint8_t>(addr >> 16), static_cast<uint8_t>((addr >> 11) & 0x1f),
                      static_cast<uint8_t>((addr >> 8) & 0x7),
                      static_cast<uint16_t>((addr & 0xfc) + offset - kDataPort), data);
}

namespace {

Target ecam_target(uint64_t offset) {
    return Target{static_cast<uint8_t>(offset >> kEcamBusShift), static_cast<uint8_t>((offset >> 15) & 0x1f),
                  static_cast<uint8_t>((offset >> 12) & 0x7), static_cast<uint16_t>(offset & 0xfff)};
}

}  // namespace

void PciEcam::read(uint64_t offset, std::span<uint8_t> data) {
    if (!naturally_aligned(offset, data.size()) || (offset >> kEcamBusShift) > 0xff) {
        all_ones(data);
        return;
    }
    Target t = ecam_target(offset);
    bus_.config_read(t.bus, t.device, t.function, t.reg, data);
}

void PciEcam::write(uint64_t offset, std::span<const uint8_t> data) {
    if (!naturally_aligned(offset, data.size()) || (offset >> kEcamBusShift) > 0xff) return;
    Target t = ecam_target(offset);
    bus_.config_write(t.bus, t.device, t.function, t.reg, data);
}

}  // namespace popek::devices::pci
