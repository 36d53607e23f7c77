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

// The power button of a hardware-reduced platform: a control-method button
// (ACPI 6.3, 4.8.2.2.1.2) that the GED's _EVT notifies.
aml::Term power_button() {
    return aml::device("PWRB", {
        aml::name("_HID", aml::eisa_id("PNP0C0C")),
        aml::name("_UID", aml::zero()),
    });
}

// The Generic Event Device (ACPI 6.3, 5.6.9): its interrupt makes the OS run
// _EVT, which reads the pending events (the read clears them and lowers the
// level-triggered line) and notifies the devices they are for. Notify value
// 0x80 on a button: pressed.
aml::Term generic_event_device() {
    constexpr uint8_t kButtonPressed = 0x80;
    constexpr uint8_t kEventRegisterBytes = 4;
    return aml::device("GED0", {
        aml::name("_HID", aml::string("ACPI0013")),
        aml::name("_UID", aml::zero()),
        // Only the interrupt: Linux's acpi-ged takes every _CRS entry for an
        // interrupt and refuses the device on anything else. The register
        // page is reached through the operation region below.
        aml::name("_CRS", aml::resource_template({
            aml::interrupt({.consumer = true, .level = true, .active_low = false, .shared = false}, kGsiGed),
        })),
        aml::operation_region("GDST", aml::RegionSpace::SystemMemory, kGedStart, kEventRegisterBytes),
        aml::field("GDST", aml::FieldAccess::DWord, false, aml::FieldUpdate::Preserve, {{"GDAT", 32}}),
        // Arg0 is the GSI; GED0 has only one. "PWRB" without a path is found
        // by the namespace search from \_SB.GED0 upward (as iasl writes it).
        aml::method("_EVT", 1, false, {
            aml::store(aml::name_string("GDAT"), aml::local(0)),
            aml::if_then(aml::bit_and(aml::local(0), aml::integer(kGedEventPowerButton)), {
                aml::notify("PWRB", aml::integer(kButtonPressed)),
            }),
        }),
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
    std::vector<aml::Term> sb{com1(), i8042(), pci_root_bridge(), ecam_reservation(), power_button(),
                              generic_event_device()};
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
