#include "arch/x86/acpi.hpp"

#include <algorithm>
#include <string>
#include <string_view>

#include "arch/x86/acpi_dsdt.hpp"
#include "arch/x86/acpi_pci.hpp"
#include "arch/x86/acpi_sdt.hpp"
#include "arch/x86/layout.hpp"

namespace popek::arch::x86 {

using acpi::put;
using acpi::put_at;

namespace {

constexpr size_t kRsdpSize = 36;
constexpr uint64_t kTableAlign = 8;
static_assert(kAcpiStart % 16 == 0, "the RSDP must be 16-byte aligned");

// FADT (ACPI 6.3, table 5-33): revision 6 with minor version 3, 276 bytes.
constexpr size_t kFadtSize = 276;
constexpr uint8_t kFadtRevision = 6;
constexpr uint8_t kFadtMinorVersion = 3;

// FADT field offsets.
constexpr size_t kFadtPLvl2Lat = 96;
constexpr size_t kFadtPLvl3Lat = 98;
constexpr size_t kFadtIapcBootArch = 109;
constexpr size_t kFadtFlags = 112;
constexpr size_t kFadtResetReg = 116;
constexpr size_t kFadtResetValue = 128;
constexpr size_t kFadtMinorVersionOffset = 131;
constexpr size_t kFadtXDsdt = 140;
constexpr size_t kFadtSleepControlReg = 244;
constexpr size_t kFadtSleepStatusReg = 256;
constexpr size_t kFadtHypervisorVendor = 268;

// FADT flags.
constexpr uint32_t kFadtWbinvd = 1u << 0;          // WBINVD works (it does under KVM)
constexpr uint32_t kFadtProcC1 = 1u << 2;          // C1 (HLT) on every CPU
constexpr uint32_t kFadtPwrButton = 1u << 4;       // 1: no fixed-feature power button
constexpr uint32_t kFadtSlpButton = 1u << 5;       // 1: no fixed-feature sleep button
constexpr uint32_t kFadtResetRegSup = 1u << 10;    // RESET_REG is valid
constexpr uint32_t kFadtHwReducedAcpi = 1u << 20;  // no PM1/GPE blocks, no SCI, no FACS

// IA-PC boot architecture flags (offset 109).
constexpr uint16_t kBootLegacyDevices = 1u << 0;   // ISA-style devices exist: COM1
constexpr uint16_t kBoot8042 = 1u << 1;            // an 8042 keyboard controller exists
constexpr uint16_t kBootVgaNotPresent = 1u << 2;
constexpr uint16_t kBootCmosRtcNotPresent = 1u << 5;  // popek has no RTC at ports 0x70/0x71

constexpr uint8_t kI8042ResetCommand = 0xfe;  // "pulse output line 0": CPU reset
constexpr std::string_view kHypervisorVendor = "POPEK   ";

// MADT (ACPI 6.3, section 5.2.12), revision 5.
constexpr uint8_t kMadtRevision = 5;
constexpr uint32_t kMadtPcatCompat = 1u << 0;  // dual 8259s exist (KVM's irqchip emulates them)
constexpr uint8_t kMadtLocalApic = 0;
constexpr uint8_t kMadtIoApic = 1;
constexpr uint8_t kMadtIntSourceOverride = 2;
constexpr uint8_t kMadtLocalApicNmi = 4;
constexpr uint8_t kMadtLocalX2Apic = 9;
constexpr uint8_t kMadtLocalX2ApicNmi = 10;
constexpr uint32_t kLapicEnabled = 1u << 0;
constexpr uint16_t kMpsActiveHighEdge = 0x1 | (0x1 << 2);  // polarity bits 1:0, trigger bits 3:2
constexpr uint16_t kMpsActiveHighLevel = 0x1 | (0x3 << 2);
constexpr uint8_t kLint1 = 1;                               // where the NMI is wired
constexpr uint32_t kFirstX2ApicId = 255;                    // 0xff is the xAPIC broadcast id

std::vector<uint8_t> build_fadt(uint64_t dsdt_addr) {
    std::vector<uint8_t> t = acpi::sdt_header("FACP", kFadtRevision);
    t.resize(kFadtSize, 0);
    // Without C2/C3 (no P_BLK, no _CST) the latencies say "not supported".
    put_at(t, kFadtPLvl2Lat, 101, 2);   // > 100
    put_at(t, kFadtPLvl3Lat, 1001, 2);  // > 1000
    put_at(t, kFadtIapcBootArch, kBootLegacyDevices | kBoot8042 | kBootVgaNotPresent | kBootCmosRtcNotPresent, 2);
    put_at(t, kFadtFlags,
           kFadtWbinvd | kFadtProcC1 | kFadtPwrButton | kFadtSlpButton | kFadtResetRegSup | kFadtHwReducedAcpi, 4);
    put_at(t, kFadtResetReg, acpi::io_gas(kPortI8042Cmd, 8));
    put_at(t, kFadtResetValue, kI8042ResetCommand, 1);
    put_at(t, kFadtMinorVersionOffset, kFadtMinorVersion, 1);
    put_at(t, kFadtXDsdt, dsdt_addr, 8);  // the 32-bit DSDT field stays 0: only one may be set
    put_at(t, kFadtSleepControlReg, acpi::io_gas(kPortAcpiSleepControl, 8));
    put_at(t, kFadtSleepStatusReg, acpi::io_gas(kPortAcpiSleepStatus, 8));
    put_at(t, kFadtHypervisorVendor, kHypervisorVendor);
    acpi::seal(t);
    return t;
}

std::vector<uint8_t> build_madt(const AcpiConfig& config) {
    std::vector<uint8_t> t = acpi::sdt_header("APIC", kMadtRevision);
    put(t, kLapicStart, 4);
    put(t, kMadtPcatCompat, 4);
    for (uint32_t cpu = 0; cpu < config.cpu_count; ++cpu) {
        if (cpu < kFirstX2ApicId) {
            put(t, kMadtLocalApic, 1);
            put(t, 8, 1);
            put(t, cpu, 1);  // ACPI processor UID
            put(t, cpu, 1);  // APIC id
            put(t, kLapicEnabled, 4);
        } else {
            put(t, kMadtLocalX2Apic, 1);
            put(t, 16, 1);
            put(t, 0, 2);
            put(t, cpu, 4);  // x2APIC id
            put(t, kLapicEnabled, 4);
            put(t, cpu, 4);  // ACPI processor UID
        }
    }
    put(t, kMadtIoApic, 1);
    put(t, 12, 1);
    put(t, kIoapicId, 1);
    put(t, 0, 1);
    put(t, kIoapicStart, 4);
    put(t, 0, 4);  // GSI base: pins 0..23 are GSIs 0..23
    if (config.isa_irq0_on_gsi2) {
        put(t, kMadtIntSourceOverride, 1);
        put(t, 10, 1);
        put(t, 0, 1);  // bus: ISA
        put(t, 0, 1);  // IRQ 0
        put(t, 2, 4);  // GSI 2
        put(t, kMpsActiveHighEdge, 2);
    }
    // ISA IRQs are edge-triggered unless overridden; the GED's is a level
    // (the DSDT's _CRS for \_SB.GED0 says the same).
    put(t, kMadtIntSourceOverride, 1);
    put(t, 10, 1);
    put(t, 0, 1);        // bus: ISA
    put(t, kGsiGed, 1);  // IRQ
    put(t, kGsiGed, 4);  // GSI
    put(t, kMpsActiveHighLevel, 2);
    put(t, kMadtLocalApicNmi, 1);
    put(t, 6, 1);
    put(t, 0xff, 1);  // all processors
    put(t, kMpsActiveHighEdge, 2);
    put(t, kLint1, 1);
    if (config.cpu_count > kFirstX2ApicId) {  // x2APIC processors take x2APIC NMI entries
        put(t, kMadtLocalX2ApicNmi, 1);
        put(t, 12, 1);
        put(t, kMpsActiveHighEdge, 2);
        put(t, 0xffffffff, 4);  // all processors
        put(t, kLint1, 1);
        put(t, 0, 3);
    }
    acpi::seal(t);
    return t;
}

std::vector<uint8_t> build_xsdt(const std::vector<uint64_t>& table_addrs) {
    std::vector<uint8_t> t = acpi::sdt_header("XSDT", 1);
    for (uint64_t addr : table_addrs) put(t, addr, 8);
    acpi::seal(t);
    return t;
}

std::vector<uint8_t> build_rsdp(uint64_t xsdt_addr) {
    std::vector<uint8_t> r;
    put(r, "RSD PTR ");
    put(r, 0, 1);  // checksum of bytes 0..19
    put(r, acpi::kOemId);
    put(r, 2, 1);  // revision 2: ACPI 2.0+, with XSDT
    put(r, 0, 4);  // RSDT address: none, the XSDT is used
    put(r, kRsdpSize, 4);
    put(r, xsdt_addr, 8);
    put(r, 0, 4);  // extended checksum, reserved
    put_at(r, 8, acpi::checksum_byte(std::span(r).first(20)), 1);
    put_at(r, 32, acpi::checksum_byte(r), 1);
    return r;
}

}  // namespace

base::Result<AcpiTables> build_acpi_tables(const AcpiConfig& config) {
    if (config.cpu_count == 0 || config.cpu_count > kAcpiMaxCpus)
        return base::Error{"ACPI tables: " + std::to_string(config.cpu_count) +
                           " CPUs requested; choose 1 to " + std::to_string(kAcpiMaxCpus)};

    POPEK_ASSIGN_OR_RETURN(std::vector<uint8_t> dsdt, acpi::build_dsdt(config));
    // Tables the XSDT lists after the FADT; none of them holds an address.
    // A new table (HPET...) is one more line here.
    std::vector<std::vector<uint8_t>> listed;
    listed.push_back(build_madt(config));
    listed.push_back(acpi::build_mcfg());

    // RSDP, XSDT, DSDT, then the FADT and the listed tables.
    const uint64_t rsdp_addr = kAcpiStart;
    const uint64_t xsdt_addr = base::align_up(rsdp_addr + kRsdpSize, kTableAlign);
    const uint64_t xsdt_size = acpi::kSdtHeaderSize + 8 * (listed.size() + 1);
    const uint64_t dsdt_addr = base::align_up(xsdt_addr + xsdt_size, kTableAlign);
    listed.insert(listed.begin(), build_fadt(dsdt_addr));

    std::vector<uint64_t> addrs;
    uint64_t end = dsdt_addr + dsdt.size();
    for (const auto& table : listed) {
        addrs.push_back(base::align_up(end, kTableAlign));
        end = addrs.back() + table.size();
    }
    if (end > kAcpiEnd)
        return base::Error{"ACPI tables for " + std::to_string(config.cpu_count) + " CPUs need " +
                           std::to_string(end - kAcpiStart) + " bytes; only " +
                           std::to_string(kAcpiEnd - kAcpiStart) + " are reserved for them"};

    AcpiTables out;
    out.rsdp_addr = rsdp_addr;
    out.blob_addr = kAcpiStart;
    out.blob.assign(end - kAcpiStart, 0);
    auto place = [&](uint64_t gpa, const std::vector<uint8_t>& bytes) {
        std::copy(bytes.begin(), bytes.end(), out.blob.begin() + static_cast<ptrdiff_t>(gpa - kAcpiStart));
    };
    place(rsdp_addr, build_rsdp(xsdt_addr));
    place(xsdt_addr, build_xsdt(addrs));
    place(dsdt_addr, dsdt);
    for (size_t i = 0; i < listed.size(); ++i) place(addrs[i], listed[i]);
    return out;
}

base::Result<uint64_t> write_acpi_tables(const memory::GuestMemory& memory, const AcpiConfig& config) {
    POPEK_ASSIGN_OR_RETURN(AcpiTables tables, build_acpi_tables(config));
    auto written = memory.write(tables.blob_addr, tables.blob);
    if (!written.ok()) return written.error().context("writing the ACPI tables");
    return tables.rsdp_addr;
}

}  // namespace popek::arch::x86
