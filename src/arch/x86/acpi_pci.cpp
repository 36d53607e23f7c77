#include "arch/x86/acpi_pci.hpp"

#include "arch/x86/acpi_sdt.hpp"
#include "arch/x86/layout.hpp"

namespace popek::arch::x86::acpi {

namespace {

constexpr uint8_t kMcfgRevision = 1;
constexpr uint32_t kPciSlots = 32;
constexpr uint16_t kPciIoWindowLowEnd = kPortPciConfig - 1;  // 0x0cf7
constexpr uint16_t kPciIoWindowHighStart = 0x0d00;
constexpr uint64_t kPrtAllFunctions = 0xffff;  // _PRT address: (slot << 16) | any function

static_assert(kPciMmio32Start + kPciMmio32Size <= 0x100000000, "the BAR window is 32-bit");
static_assert(kPciMmio32Start + kPciMmio32Size <= kPciEcamStart || kPciEcamStart + kPciEcamSize <= kPciMmio32Start,
              "ECAM must not overlap the BAR window");
static_assert(kPciEcamSize == 1 * MiB, "MCFG describes bus 0 only: 32 devices x 8 functions x 4 KiB");

}  // namespace

std::vector<uint8_t> build_mcfg() {
    std::vector<uint8_t> t = sdt_header("MCFG", kMcfgRevision);
    put(t, 0, 8);  // reserved
    put(t, kPciEcamStart, 8);
    put(t, 0, 2);  // PCI segment group
    put(t, 0, 1);  // start bus
    put(t, 0, 1);  // end bus
    put(t, 0, 4);  // reserved
    seal(t);
    return t;
}

aml::Term pci_root_bridge() {
    std::vector<aml::Term> prt;
    for (uint32_t slot = 0; slot < kPciSlots; ++slot) {
        prt.push_back(aml::package({
            aml::integer((uint64_t{slot} << 16) | kPrtAllFunctions),
            aml::zero(),                      // pin: INTA
            aml::zero(),                      // source: none, the index is a GSI
            aml::integer(pci_intx_gsi(slot)),
        }));
    }
    return aml::device("PCI0", {
        aml::name("_HID", aml::eisa_id("PNP0A08")),
        aml::name("_CID", aml::eisa_id("PNP0A03")),
        aml::name("_SEG", aml::zero()),
        aml::name("_BBN", aml::zero()),
        aml::name("_UID", aml::zero()),
        aml::name("_CRS", aml::resource_template({
            aml::word_bus_number(0, 0),
            aml::io(kPortPciConfig, kPortPciConfig, 1, static_cast<uint8_t>(kPortPciConfigLen)),
            aml::word_io(0, kPciIoWindowLowEnd),
            aml::word_io(kPciIoWindowHighStart, 0xffff),
            aml::dword_memory(false, true, static_cast<uint32_t>(kPciMmio32Start),
                              static_cast<uint32_t>(kPciMmio32Start + kPciMmio32Size - 1)),
        })),
        aml::name("_PRT", aml::package(prt)),
    });
}

aml::Term ecam_reservation() {
    return aml::device("MBRD", {
        aml::name("_HID", aml::eisa_id("PNP0C02")),
        aml::name("_UID", aml::zero()),
        aml::name("_CRS", aml::resource_template({
            aml::memory32_fixed(true, static_cast<uint32_t>(kPciEcamStart), static_cast<uint32_t>(kPciEcamSize)),
        })),
    });
}

}  // namespace popek::arch::x86::acpi
