// An lspci-like listing of bus 0, one line per function:
//   00:01.0 Mass storage controller [0100]: Red Hat, Inc. Virtio 1.0 block device [1af4:1042]
//   BAR0 mem at 0xc0000000 [size 64K] MSI-X 2 vectors
// (one line; wrapped here). Everything is read through configuration space,
// as a guest would see it; BAR sizes come from the devices' requests.
#pragma once

#include <string>

#include "devices/pci/pci_bus.hpp"

namespace popek::devices::pci {

std::string describe_pci(const PciBus& bus);

// "Mass storage controller" for class code 0x01xxxx, with a few subclasses
// lspci names ("Host bridge", "Ethernet controller").
std::string pci_class_name(uint32_t class_code);

}  // namespace popek::devices::pci
