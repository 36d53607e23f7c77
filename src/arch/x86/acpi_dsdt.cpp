#include "arch/x86/acpi_dsdt.hpp"

#include <string>

#include "arch/x86/acpi_pci.hpp"
#include "arch/x86/acpi_sdt.hpp"
#include "arch/x86/aml.hpp"
#include "arch/x86/layout.hpp"

namespace popek::arch::x86::acpi {

namespace {

// Revision 2: AML integers are 64 bits wide.
constexpr uint8_t kDsdtRevision = 2;
constexpr uint8_t kCom1PortCount = 8;

aml::Term com1() {
    return aml::device("COM1", {
        aml::name("_HID", aml::eisa_id("PNP0501")),  // 16550A-compatible UART
        aml::name("_UID", aml::zero()),
        aml::name("_CRS", aml::resource_template({
            aml::io(kPortCom1, kPortCom1, 1, kCom1PortCount),
            aml::irq_no_flags(kIrqCom1),
        })),
    });
}

// The keyboard controller. Without it Linux's i8042 driver probes the ports
// anyway (the FADT says an 8042 exists); with it, it binds by PNP and knows
// there is no mouse port (no PNP0F13) to probe.
aml::Term i8042() {
    return aml::device("KBD_", {
        aml::name("_HID", aml::eisa_id("PNP0303")),  // IBM enhanced keyboard (101/102-key, PS/2)
        aml::name("_CRS", aml::resource_template({
            aml::io(kPortI8042Data, kPortI8042Data, 1, 1),
            aml::io(kPortI8042Cmd, kPortI8042Cmd, 1, 1),
            aml::irq_no_flags(kIrqI8042),
        })),
    });
}

// ACPI 6 describes processors as devices; _UID matches the MADT's ACPI
// processor UID, which is how the OS pairs this object with a local APIC.
aml::Term cpu(uint32_t index) {
    constexpr char kHex[] = "0123456789ABCDEF";
    std::string dev_name = "C";  // C000 .. CFFF
    for (int shift = 8; shift >= 0; shift -= 4) dev_name += kHex[(index >> shift) & 0xf];
    return aml::device(dev_name, {
        aml::name("_HID", aml::string("ACPI0007")),
        aml::name("_UID", aml::integer(index)),
    });
}

}  // namespace

base::Result<std::vector<uint8_t>> build_dsdt(const AcpiConfig& config) {
    static_assert(kAcpiMaxCpus <= 0x1000, "CPU device names have three hex digits");
    std::vector<aml::Term> sb{com1(), i8042(), pci_root_bridge(), ecam_reservation()};
    for (uint32_t i = 0; i < config.cpu_count; ++i) sb.push_back(cpu(i));

    // \_S5: {SLP_TYPa, SLP_TYPb, reserved, reserved}. Hardware-reduced
    // platforms use SLP_TYPa only: the OS writes (SLP_TYPa << 2) | SLP_EN
    // to the FADT's SLEEP_CONTROL_REG. (The DSDT's code runs in the root
    // scope, so "_S5_" is \_S5_; no '\' is how iasl encodes it too.)
    aml::Term body = aml::name("_S5_", aml::package({
        aml::integer(kAcpiS5SleepType), aml::zero(), aml::zero(), aml::zero(),
    }));
    body += aml::scope("_SB_", sb);
    POPEK_ASSIGN_OR_RETURN(std::vector<uint8_t> code, aml::finish(body));

    std::vector<uint8_t> dsdt = sdt_header("DSDT", kDsdtRevision);
    dsdt.insert(dsdt.end(), code.begin(), code.end());
    seal(dsdt);
    return dsdt;
}

}  // namespace popek::arch::x86::acpi
