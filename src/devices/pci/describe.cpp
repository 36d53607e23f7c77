#include "devices/pci/describe.hpp"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "base/bytes.hpp"

namespace popek::devices::pci {

namespace {

uint32_t read_config(const PciBus& bus, uint8_t slot, uint16_t reg, unsigned size) {
    uint8_t buf[4] = {};
    bus.config_read(0, slot, 0, reg, std::span<uint8_t>(buf, size));
    return static_cast<uint32_t>(base::load_le(std::span<const uint8_t>(buf, size)));
}

std::string human_size(uint64_t size) {
    const char* units[] = {"", "K", "M", "G", "T"};
    size_t unit = 0;
    while (unit + 1 < std::size(units) && size >= 1024 && size % 1024 == 0) {
        size /= 1024;
        ++unit;
    }
    return std::to_string(size) + units[unit];
}

// Number of MSI-X vectors, 0 without the capability. The walk is bounded:
// a looping list cannot hang the listing.
unsigned msix_vectors(const PciBus& bus, uint8_t slot) {
    if ((read_config(bus, slot, kRegStatus, 2) & kStatusCapList) == 0) return 0;
    uint16_t cap = static_cast<uint16_t>(read_config(bus, slot, kRegCapPointer, 1) & 0xfc);
    for (int hops = 0; cap >= 0x40 && hops < 48; ++hops) {
        if (read_config(bus, slot, cap, 1) == kCapIdMsix)
            return (read_config(bus, slot, static_cast<uint16_t>(cap + 2), 2) & 0x7ff) + 1;
        cap = static_cast<uint16_t>(read_config(bus, slot, static_cast<uint16_t>(cap + 1), 1) & 0xfc);
    }
    return 0;
}

}  // namespace

std::string pci_class_name(uint32_t class_code) {
    switch (class_code >> 8) {
        case 0x0600: return "Host bridge";
        case 0x0200: return "Ethernet controller";
        case 0x0780: return "Communication controller";
        case 0x00ff: return "Unclassified device";
        default: break;
    }
    // pci.ids' base class names.
    static const char* const kBase[] = {
        "Unclassified device",  "Mass storage controller",  "Network controller",
        "Display controller",   "Multimedia controller",    "Memory controller",
        "Bridge",               "Communication controller", "Generic system peripheral",
        "Input device controller", "Docking station",       "Processor",
        "Serial bus controller", "Wireless controller",     "Intelligent controller",
        "Satellite communications controller", "Encryption controller", "Signal processing controller",
        "Processing accelerators", "Non-Essential Instrumentation"};
    const uint32_t base_class = class_code >> 16;
    return base_class < std::size(kBase) ? kBase[base_class] : "Device";
}

std::string describe_pci(const PciBus& bus) {
    std::string out;
    for (uint8_t slot = 0; slot < kNumSlots; ++slot) {
        PciDevice* dev = bus.device(slot);
        if (dev == nullptr) continue;
        const uint32_t vendor = read_config(bus, slot, kRegVendorId, 2);
        const uint32_t device = read_config(bus, slot, kRegDeviceId, 2);
        const uint32_t class_code = read_config(bus, slot, kRegRevision, 4) >> 8;
        char head[64];
        std::snprintf(head, sizeof head, " [%04x]: ", class_code >> 8);
        out += pci_address(slot) + " " + pci_class_name(class_code) + head + dev->description();
        std::snprintf(head, sizeof head, " [%04x:%04x]", vendor, device);
        out += head;
        std::vector<BarRequest> bars = dev->bars();
        std::sort(bars.begin(), bars.end(), [](const BarRequest& a, const BarRequest& b) { return a.index < b.index; });
        for (const BarRequest& bar : bars) {
            const uint16_t reg = static_cast<uint16_t>(kRegBar0 + 4 * bar.index);
            uint64_t addr = read_config(bus, slot, reg, 4) & ~0xfull;
            if (bar.is_64bit) addr |= uint64_t{read_config(bus, slot, static_cast<uint16_t>(reg + 4), 4)} << 32;
            std::snprintf(head, sizeof head, " BAR%u mem%s at %#llx", static_cast<unsigned>(bar.index),
                          bar.is_64bit ? "64" : "", static_cast<unsigned long long>(addr));
            out += head;
            out += std::string(" [") + (bar.prefetchable ? "prefetchable, " : "") + "size " + human_size(bar.size) + "]";
        }
        if (unsigned n = msix_vectors(bus, slot); n != 0) out += " MSI-X " + std::to_string(n) + " vectors";
        out += "\n";
    }
    return out;
}

}  // namespace popek::devices::pci
