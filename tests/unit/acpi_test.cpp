// The guest's ACPI tables: structure and checksums checked by walking them
// from the RSDP like a guest would, and the result disassembled by iasl.
#include "arch/x86/acpi.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "arch/x86/layout.hpp"
#include "base/bytes.hpp"

namespace x86 = popek::arch::x86;
using popek::base::load;

namespace {

constexpr const char* kIasl = "/usr/bin/iasl";
constexpr const char* kAcpiexec = "/usr/bin/acpiexec";  // ACPICA, the interpreter Linux uses

// The tables as a guest finds them: RSDP -> XSDT -> tables, FADT -> DSDT.
struct Walk {
    x86::AcpiTables t;
    uint64_t xsdt = 0;
    std::vector<uint64_t> listed;           // XSDT entries
    std::map<std::string, uint64_t> by_sig;  // every table, DSDT included

    std::span<const uint8_t> at(uint64_t gpa, size_t len) const {
        bool inside = gpa >= t.blob_addr && gpa - t.blob_addr <= t.blob.size() &&
                      t.blob.size() - (gpa - t.blob_addr) >= len;
        EXPECT_TRUE(inside) << "table at 0x" << std::hex << gpa << " outside the blob";
        if (!inside) return {};
        return std::span<const uint8_t>(t.blob).subspan(gpa - t.blob_addr, len);
    }
    uint32_t length(uint64_t gpa) const { return load<uint32_t>(at(gpa, 8), 4); }
    std::span<const uint8_t> table(uint64_t gpa) const { return at(gpa, length(gpa)); }
    std::span<const uint8_t> table(const std::string& sig) const { return table(by_sig.at(sig)); }
};

Walk walk(uint32_t cpus) {
    auto r = x86::build_acpi_tables(x86::AcpiConfig{cpus});
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    Walk w{r.ok() ? std::move(r).value() : x86::AcpiTables{}, 0, {}, {}};
    if (!r.ok()) return w;
    auto rsdp = w.at(w.t.rsdp_addr, 36);
    w.xsdt = load<uint64_t>(rsdp, 24);
    w.by_sig["XSDT"] = w.xsdt;
    auto xsdt = w.table(w.xsdt);
    for (size_t off = 36; off + 8 <= xsdt.size(); off += 8) {
        uint64_t addr = load<uint64_t>(xsdt, off);
        w.listed.push_back(addr);
        w.by_sig[std::string(reinterpret_cast<const char*>(w.at(addr, 4).data()), 4)] = addr;
    }
    if (w.by_sig.count("FACP")) w.by_sig["DSDT"] = load<uint64_t>(w.table("FACP"), 140);
    return w;
}

unsigned byte_sum(std::span<const uint8_t> bytes) {
    unsigned sum = 0;
    for (uint8_t b : bytes) sum += b;
    return sum & 0xff;
}

// Enabled local APIC entries (xAPIC type 0 and x2APIC type 9) in a MADT.
size_t enabled_lapics(std::span<const uint8_t> madt) {
    size_t n = 0;
    for (size_t off = 44; off + 2 <= madt.size(); off += madt[off + 1]) {
        if (madt[off + 1] == 0) return 0;  // malformed: would loop forever
        if (madt[off] == 0 && (load<uint32_t>(madt, off + 4) & 1)) ++n;
        if (madt[off] == 9 && (load<uint32_t>(madt, off + 8) & 1)) ++n;
    }
    return n;
}

}  // namespace

TEST(Acpi, RsdpIsValid) {
    Walk w = walk(2);
    EXPECT_EQ(w.t.rsdp_addr, x86::kAcpiStart);
    EXPECT_EQ(w.t.rsdp_addr % 16, 0u);
    auto rsdp = w.at(w.t.rsdp_addr, 36);
    EXPECT_EQ(std::memcmp(rsdp.data(), "RSD PTR ", 8), 0);
    EXPECT_EQ(std::memcmp(rsdp.data() + 9, "POPEK ", 6), 0);
    EXPECT_EQ(rsdp[15], 2);                          // revision
    EXPECT_EQ(load<uint32_t>(rsdp, 20), 36u);        // length
    EXPECT_EQ(byte_sum(rsdp.first(20)), 0u);         // ACPI 1.0 checksum
    EXPECT_EQ(byte_sum(rsdp), 0u);                   // extended checksum
    EXPECT_EQ(w.xsdt % 8, 0u);
}

TEST(Acpi, ChecksumsValid) {
    for (uint32_t cpus : {1u, 2u, 4u, 32u, 300u, x86::kAcpiMaxCpus}) {
        Walk w = walk(cpus);
        ASSERT_EQ(w.by_sig.size(), 5u) << cpus;  // XSDT FACP APIC MCFG DSDT
        for (const auto& [sig, addr] : w.by_sig) {
            auto t = w.table(addr);
            EXPECT_EQ(byte_sum(t), 0u) << sig << " with " << cpus << " CPUs";
            EXPECT_EQ(std::string(reinterpret_cast<const char*>(t.data()), 4), sig);
            EXPECT_EQ(std::memcmp(t.data() + 10, "POPEK ", 6), 0) << sig;
        }
    }
}

TEST(Acpi, TablesAreAlignedAndDisjoint) {
    Walk w = walk(32);
    std::map<uint64_t, uint64_t> ranges;  // start -> end
    ranges[w.t.rsdp_addr] = w.t.rsdp_addr + 36;
    for (const auto& [sig, addr] : w.by_sig) {
        EXPECT_EQ(addr % 8, 0u) << sig;
        ranges[addr] = addr + w.length(addr);
    }
    uint64_t prev_end = 0;
    for (const auto& [start, end] : ranges) {
        EXPECT_GE(start, prev_end);
        prev_end = end;
    }
    EXPECT_EQ(prev_end, w.t.blob_addr + w.t.blob.size());
    EXPECT_LE(prev_end, x86::kAcpiEnd);
}

TEST(Acpi, XsdtListsFadtMadtAndMcfg) {
    Walk w = walk(4);
    auto xsdt = w.table(w.xsdt);
    EXPECT_EQ(xsdt[8], 1);  // revision
    ASSERT_EQ(w.listed.size(), 3u);
    EXPECT_EQ(w.listed[0], w.by_sig.at("FACP"));
    EXPECT_EQ(w.listed[1], w.by_sig.at("APIC"));
    EXPECT_EQ(w.listed[2], w.by_sig.at("MCFG"));
    EXPECT_EQ(xsdt.size(), 36u + 8 * w.listed.size());
}

// PCI Firmware 3.2, 4.1.2: header, 8 reserved bytes, then one 16-byte
// allocation per ECAM range.
TEST(Acpi, McfgDescribesEcamForBusZero) {
    Walk w = walk(1);
    auto mcfg = w.table("MCFG");
    ASSERT_EQ(mcfg.size(), 36u + 8 + 16);
    EXPECT_EQ(mcfg[8], 1);                                    // revision
    EXPECT_EQ(load<uint64_t>(mcfg, 36), 0u);                  // reserved
    EXPECT_EQ(load<uint64_t>(mcfg, 44), x86::kPciEcamStart);  // base address
    EXPECT_EQ(load<uint16_t>(mcfg, 52), 0u);                  // segment
    EXPECT_EQ(mcfg[54], 0);                                   // start bus
    EXPECT_EQ(mcfg[55], 0);                                   // end bus
    EXPECT_EQ(x86::kPciEcamSize, 1u << 20) << "one bus of ECAM is 1 MiB";
}

TEST(Acpi, FadtIsHardwareReducedAndPointsToDsdt) {
    Walk w = walk(1);
    auto fadt = w.table("FACP");
    ASSERT_EQ(fadt.size(), 276u);
    EXPECT_EQ(fadt[8], 6);    // revision
    EXPECT_EQ(fadt[131], 3);  // minor version: ACPI 6.3
    EXPECT_EQ(load<uint32_t>(fadt, 40), 0u);  // 32-bit DSDT unused
    uint64_t dsdt = load<uint64_t>(fadt, 140);
    EXPECT_EQ(std::memcmp(w.at(dsdt, 4).data(), "DSDT", 4), 0);
    EXPECT_EQ(w.table(dsdt)[8], 2);  // DSDT revision 2: 64-bit integers
    uint32_t flags = load<uint32_t>(fadt, 112);
    EXPECT_TRUE(flags & (1u << 20)) << "HW_REDUCED_ACPI";
    EXPECT_TRUE(flags & (1u << 10)) << "RESET_REG_SUP";
    uint16_t boot = load<uint16_t>(fadt, 109);
    EXPECT_EQ(boot & 0x3, 0x3) << "LEGACY_DEVICES and 8042";
    EXPECT_TRUE(boot & (1u << 2)) << "VGA not present";
    EXPECT_FALSE(boot & (1u << 3)) << "MSI not supported must stay clear";
    // RESET_REG: system I/O, 8 bits at the i8042 command port; value 0xFE.
    EXPECT_EQ(fadt[116], 1);
    EXPECT_EQ(fadt[117], 8);
    EXPECT_EQ(load<uint64_t>(fadt, 120), x86::kPortI8042Cmd);
    EXPECT_EQ(fadt[128], 0xfe);
    // SLEEP_CONTROL_REG and SLEEP_STATUS_REG: system I/O, 8 bits.
    EXPECT_EQ(fadt[244], 1);
    EXPECT_EQ(fadt[245], 8);
    EXPECT_EQ(load<uint64_t>(fadt, 248), x86::kPortAcpiSleepControl);
    EXPECT_EQ(fadt[256], 1);
    EXPECT_EQ(fadt[257], 8);
    EXPECT_EQ(load<uint64_t>(fadt, 260), x86::kPortAcpiSleepStatus);
    EXPECT_EQ(std::memcmp(fadt.data() + 268, "POPEK   ", 8), 0);
}

TEST(Acpi, DsdtHoldsS5MatchingThePowerDevice) {
    Walk w = walk(1);
    auto dsdt = w.table("DSDT");
    // Name (_S5_, Package (4) {kAcpiS5SleepType, 0, 0, 0})
    const uint8_t s5[] = {0x08, '_', 'S', '5', '_', 0x12, 0x07, 0x04, 0x0a, x86::kAcpiS5SleepType, 0, 0, 0};
    auto body = dsdt.subspan(36);
    EXPECT_NE(std::search(body.begin(), body.end(), std::begin(s5), std::end(s5)), body.end());
}

TEST(Acpi, MadtHasOneEnabledLapicPerCpu) {
    for (uint32_t cpus : {1u, 2u, 4u, 32u, 255u, 300u}) {
        Walk w = walk(cpus);
        auto madt = w.table("APIC");
        EXPECT_EQ(load<uint32_t>(madt, 36), x86::kLapicStart);
        EXPECT_EQ(load<uint32_t>(madt, 40) & 1, 1u) << "PCAT_COMPAT";
        EXPECT_EQ(enabled_lapics(madt), cpus);
    }
}

TEST(Acpi, MadtDescribesIoapicNmiAndOptionalIrq0Override) {
    for (bool irq0 : {false, true}) {
        x86::AcpiConfig cfg{2};
        cfg.isa_irq0_on_gsi2 = irq0;
        auto r = x86::build_acpi_tables(cfg);
        ASSERT_TRUE(r.ok());
        Walk w{std::move(r).value(), 0, {}, {}};
        uint64_t rsdp_xsdt = load<uint64_t>(w.at(w.t.rsdp_addr, 36), 24);
        auto madt = w.table(load<uint64_t>(w.table(rsdp_xsdt), 44));
        bool ioapic = false, nmi = false, override0 = false, override_ged = false;
        for (size_t off = 44; off + 2 <= madt.size() && madt[off + 1] != 0; off += madt[off + 1]) {
            if (madt[off] == 1) {
                ioapic = true;
                EXPECT_EQ(madt[off + 2], x86::kIoapicId);
                EXPECT_EQ(load<uint32_t>(madt, off + 4), x86::kIoapicStart);
                EXPECT_EQ(load<uint32_t>(madt, off + 8), 0u);
            }
            if (madt[off] == 4) {
                nmi = true;
                EXPECT_EQ(madt[off + 2], 0xff);
                EXPECT_EQ(madt[off + 5], 1);  // LINT1
            }
            if (madt[off] == 2 && madt[off + 3] == 0) {
                override0 = true;
                EXPECT_EQ(load<uint32_t>(madt, off + 4), 2u);
                EXPECT_EQ(load<uint16_t>(madt, off + 8), 0x5);  // edge, active high
            }
            if (madt[off] == 2 && madt[off + 3] == x86::kGsiGed) {  // the DSDT's GED0 interrupt
                override_ged = true;
                EXPECT_EQ(madt[off + 2], 0);                            // bus: ISA
                EXPECT_EQ(load<uint32_t>(madt, off + 4), x86::kGsiGed);
                EXPECT_EQ(load<uint16_t>(madt, off + 8), 0xd);  // level, active high
            }
        }
        EXPECT_TRUE(ioapic);
        EXPECT_TRUE(nmi);
        EXPECT_EQ(override0, irq0);
        EXPECT_TRUE(override_ged);
    }
}

TEST(Acpi, FitsBelowAcpiEnd) {
    for (uint32_t cpus : {32u, x86::kAcpiMaxCpus}) {
        auto r = x86::build_acpi_tables(x86::AcpiConfig{cpus});
        ASSERT_TRUE(r.ok()) << r.error().message;
        EXPECT_EQ(r->blob_addr, x86::kAcpiStart);
        EXPECT_LE(r->blob_addr + r->blob.size(), x86::kAcpiEnd);
    }
}

TEST(Acpi, RejectsBadCpuCounts) {
    for (uint32_t cpus : {0u, x86::kAcpiMaxCpus + 1, 100000u}) {
        auto r = x86::build_acpi_tables(x86::AcpiConfig{cpus});
        ASSERT_FALSE(r.ok()) << cpus;
        EXPECT_NE(r.error().message.find("CPUs"), std::string::npos) << r.error().message;
    }
}

TEST(Acpi, WritesToGuestMemory) {
    auto ranges = x86::ram_ranges(x86::kMinRam);
    auto mem = popek::memory::GuestMemory::create(ranges);
    ASSERT_TRUE(mem.ok()) << mem.error().message;
    auto rsdp = x86::write_acpi_tables(*mem, x86::AcpiConfig{4});
    ASSERT_TRUE(rsdp.ok()) << rsdp.error().message;
    auto built = x86::build_acpi_tables(x86::AcpiConfig{4});
    ASSERT_TRUE(built.ok());
    EXPECT_EQ(*rsdp, built->rsdp_addr);
    std::vector<uint8_t> back(built->blob.size());
    ASSERT_TRUE(mem->read(built->blob_addr, back).ok());
    EXPECT_EQ(back, built->blob);
}

namespace {

class TempDir {
public:
    TempDir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "popek-acpi-XXXXXX").string();
        if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        if (!path_.empty()) std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    [[nodiscard]] const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
};

// Runs an ACPICA tool in `dir`, output to iasl.log; returns its exit status
// (-1 if it did not exit normally).
int iasl(const std::filesystem::path& dir, const std::string& args, const char* tool = kIasl) {
    std::string cmd = "cd '" + dir.string() + "' && " + tool + " " + args + " >> iasl.log 2>&1";
    int status = std::system(cmd.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Whitespace runs become one space, so checks do not depend on iasl's column layout.
std::string squeeze(const std::string& text) {
    std::string out;
    for (char c : text) {
        bool space = c == ' ' || c == '\t' || c == '\n' || c == '\r';
        if (!space) out += c;
        else if (!out.empty() && out.back() != ' ') out += ' ';
    }
    return out;
}

size_t count(const std::string& text, const std::string& needle) {
    size_t n = 0;
    for (size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) ++n;
    return n;
}

void write_file(const std::filesystem::path& path, std::span<const uint8_t> bytes) {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

TEST(Acpi, IaslDisassemblesEveryTable) {
    if (!std::filesystem::exists(kIasl))
        GTEST_SKIP() << kIasl << " not found: install Debian's acpica-tools (the Makefile's deps target does)";
    for (uint32_t cpus : {2u, 300u}) {
        SCOPED_TRACE("cpus=" + std::to_string(cpus));
        Walk w = walk(cpus);
        TempDir dir;
        ASSERT_FALSE(dir.path().empty());
        std::map<std::string, std::string> dsl;
        for (const auto& [sig, addr] : w.by_sig) {
            write_file(dir.path() / (sig + ".dat"), w.table(addr));
            EXPECT_EQ(iasl(dir.path(), "-d " + sig + ".dat"), 0)
                << sig << ":\n" << read_file(dir.path() / "iasl.log");
            dsl[sig] = squeeze(read_file(dir.path() / (sig + ".dsl")));
            EXPECT_EQ(dsl[sig].find("Incorrect checksum"), std::string::npos) << sig;
        }
        const std::string& dsdt = dsl["DSDT"];
        for (const char* want : {"Name (_S5, Package (0x04)", "{ 0x05, Zero, Zero, Zero })",
                                 "Device (COM1)", "EisaId (\"PNP0501\")", "0x03F8, // Range Minimum",
                                 "IRQNoFlags () {4}", "EisaId (\"PNP0303\")", "IRQNoFlags () {1}"})
            EXPECT_NE(dsdt.find(want), std::string::npos) << "DSDT lacks: " << want;
        EXPECT_EQ(count(dsdt, "Name (_HID, \"ACPI0007\""), cpus);
        for (const char* want :
             {"Device (PCI0)", "Name (_HID, EisaId (\"PNP0A08\")", "Name (_CID, EisaId (\"PNP0A03\")",
              "Name (_SEG, Zero)", "Name (_BBN, Zero)", "Name (_UID, Zero)",
              "WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0x0000, // Granularity 0x0000, "
              "// Range Minimum 0x0000, // Range Maximum 0x0000, // Translation Offset 0x0001, // Length",
              "IO (Decode16, 0x0CF8, // Range Minimum 0x0CF8, // Range Maximum 0x01, // Alignment 0x08, // Length",
              "WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0x0000, // Granularity "
              "0x0000, // Range Minimum 0x0CF7, // Range Maximum",
              "WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0x0000, // Granularity "
              "0x0D00, // Range Minimum 0xFFFF, // Range Maximum",
              "DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite, "
              "0x00000000, // Granularity 0xC0000000, // Range Minimum 0xDFFFFFFF, // Range Maximum "
              "0x00000000, // Translation Offset 0x20000000, // Length",
              "Name (_PRT, Package (0x20)", "Package (0x04) { 0x0001FFFF, Zero, Zero, 0x11 }",
              "Package (0x04) { 0x0008FFFF, Zero, Zero, 0x10 }", "Package (0x04) { 0x001FFFFF, Zero, Zero, 0x17 }",
              "Device (MBRD)", "EisaId (\"PNP0C02\")",
              "Memory32Fixed (ReadWrite, 0xE0000000, // Address Base 0x00100000, // Address Length"})
            EXPECT_NE(dsdt.find(want), std::string::npos) << "DSDT lacks: " << want;
        // The power button and the Generic Event Device that reports it.
        for (const char* want :
             {"Device (PWRB) { Name (_HID, EisaId (\"PNP0C0C\") /* Power Button Device */) // _HID: Hardware ID "
              "Name (_UID, Zero) // _UID: Unique ID }",
              "Device (GED0) { Name (_HID, \"ACPI0013\" /* Generic Event Device */) // _HID: Hardware ID "
              "Name (_UID, Zero)",
              "Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive, ,, ) { 0x00000009, }",
              "OperationRegion (GDST, SystemMemory, 0xFEA00000, 0x04)",
              "Field (GDST, DWordAcc, NoLock, Preserve) { GDAT, 32 }",
              "Method (_EVT, 1, NotSerialized) // _EVT: Event { Local0 = GDAT /* \\_SB_.GED0.GDAT */ "
              "If ((Local0 & One)) { Notify (PWRB, 0x80) // Status Change }"})
            EXPECT_NE(dsdt.find(want), std::string::npos) << "DSDT lacks: " << want;
        // Linux's acpi-ged refuses a _CRS holding anything but interrupts.
        const size_t ged = dsdt.find("Device (GED0)");
        ASSERT_NE(ged, std::string::npos);
        const std::string ged_crs = dsdt.substr(ged, dsdt.find("OperationRegion (GDST", ged) - ged);
        EXPECT_EQ(ged_crs.find("Memory32Fixed"), std::string::npos) << ged_crs;

        const std::string& mcfg = dsl["MCFG"];
        for (const char* want : {"Signature : \"MCFG\"", "Base Address : 00000000E0000000",
                                 "Segment Group Number : 0000", "Start Bus Number : 00", "End Bus Number : 00"})
            EXPECT_NE(mcfg.find(want), std::string::npos) << "MCFG lacks: " << want;

        const std::string& fadt = dsl["FACP"];
        for (const char* want : {"Revision : 06", "Hardware Reduced (V5) : 1", "Reset Register Supported (V2) : 1",
                                 "8042 Present on ports 60/64 (V2) : 1", "Legacy Devices Supported (V2) : 1",
                                 "VGA Not Present (V4) : 1", "MSI Not Supported (V4) : 0",
                                 "Value to cause reset : FE", "FADT Minor Revision : 03",
                                 "Sleep Control Register : [Generic Address Structure]"})
            EXPECT_NE(fadt.find(want), std::string::npos) << "FADT lacks: " << want;

        const std::string& madt = dsl["APIC"];
        EXPECT_EQ(count(madt, "[Processor Local APIC]") + count(madt, "[Processor Local x2APIC]"), cpus);
        EXPECT_EQ(count(madt, "Processor Enabled : 1"), cpus);
        EXPECT_EQ(count(madt, "[I/O APIC]"), 1u);
        // ISA IRQ 9 (the GED's): level, active high.
        for (const char* want : {"[Interrupt Source Override]", "Source : 09", "Interrupt : 00000009",
                                 "Flags (decoded below) : 000D Polarity : 1 Trigger Mode : 3"})
            EXPECT_NE(madt.find(want), std::string::npos) << "MADT lacks: " << want;
        EXPECT_NE(madt.find("PC-AT Compatibility : 1"), std::string::npos);
        EXPECT_NE(madt.find("[Local APIC NMI]"), std::string::npos);
        EXPECT_EQ(madt.find("[Local x2APIC NMI]") != std::string::npos, cpus > 255);

        EXPECT_NE(dsl["XSDT"].find("ACPI Table Address 2 :"), std::string::npos);
    }
}

TEST(Acpi, IaslRecompilesTheDsdtToTheSameAml) {
    if (!std::filesystem::exists(kIasl))
        GTEST_SKIP() << kIasl << " not found: install Debian's acpica-tools (the Makefile's deps target does)";
    Walk w = walk(4);
    TempDir dir;
    ASSERT_FALSE(dir.path().empty());
    auto dsdt = w.table("DSDT");
    write_file(dir.path() / "DSDT.dat", dsdt);
    ASSERT_EQ(iasl(dir.path(), "-d DSDT.dat"), 0) << read_file(dir.path() / "iasl.log");
    ASSERT_EQ(iasl(dir.path(), "-p again DSDT.dsl"), 0) << read_file(dir.path() / "iasl.log");
    std::string again = read_file(dir.path() / "again.aml");
    ASSERT_GT(again.size(), 36u);
    // The header differs (compiler id, checksum); the AML must not.
    std::vector<uint8_t> ours(dsdt.begin() + 36, dsdt.end());
    std::vector<uint8_t> theirs(again.begin() + 36, again.end());
    EXPECT_EQ(ours, theirs);
}

TEST(Acpi, AcpicaLoadsTheTablesAndSleepsToS5) {
    if (!std::filesystem::exists(kAcpiexec))
        GTEST_SKIP() << kAcpiexec << " not found: install Debian's acpica-tools (the Makefile's deps target does)";
    Walk w = walk(4);
    TempDir dir;
    ASSERT_FALSE(dir.path().empty());
    std::string files;
    for (const auto& [sig, addr] : w.by_sig) {
        write_file(dir.path() / (sig + ".dat"), w.table(addr));
        files += " " + sig + ".dat";
    }
    // acpiexec builds the namespace from the tables as Linux's ACPICA would,
    // then enters S5 through the hardware-reduced sleep registers.
    EXPECT_EQ(iasl(dir.path(),
                   "-b \"evaluate \\_SB.COM1._CRS; evaluate \\_SB.PCI0._CRS; evaluate \\_SB.PCI0._PRT; "
                   "evaluate \\_SB.MBRD._CRS; sleep 5\"" + files,
                   kAcpiexec),
              0);
    std::string log = read_file(dir.path() / "iasl.log");
    EXPECT_NE(log.find("Sleep-A: 05"), std::string::npos) << log;
    EXPECT_NE(log.find("HwExtendedSleep"), std::string::npos) << log;  // the HW-reduced path
    EXPECT_NE(log.find("Evaluation of \\_SB.PCI0._CRS returned"), std::string::npos) << log;
    EXPECT_NE(log.find("[Package] Contains 32 Elements"), std::string::npos) << log;  // _PRT: one per slot
    EXPECT_NE(log.find("Evaluation of \\_SB.MBRD._CRS returned"), std::string::npos) << log;
    for (const char* bad : {"ACPI Error", "ACPI Warning", "ACPI Exception"})
        EXPECT_EQ(log.find(bad), std::string::npos) << log;
}

// The GED's _EVT as ACPICA runs it when its interrupt fires: it reads the
// event register and notifies the power button only if bit 0 is set.
// acpiexec backs SystemMemory regions with its own buffer, which reads 0
// unless an init file (-fi) stores a value through the field first.
TEST(Acpi, AcpicaRunsTheGedEventMethod) {
    if (!std::filesystem::exists(kAcpiexec))
        GTEST_SKIP() << kAcpiexec << " not found: install Debian's acpica-tools (the Makefile's deps target does)";
    Walk w = walk(2);
    TempDir dir;
    ASSERT_FALSE(dir.path().empty());
    std::string files;
    for (const auto& [sig, addr] : w.by_sig) {
        write_file(dir.path() / (sig + ".dat"), w.table(addr));
        files += " " + sig + ".dat";
    }
    const std::string batch = "-b \"evaluate \\_SB.GED0._CRS; evaluate \\_SB.PWRB._HID; evaluate \\_SB.GED0._EVT " +
                              std::to_string(x86::kGsiGed) + "\"";
    for (uint32_t events : {0u, x86::kGedEventPowerButton}) {
        SCOPED_TRACE("events=" + std::to_string(events));
        std::ofstream(dir.path() / "init.txt") << "\\_SB.GED0.GDAT " << events << "\n";
        std::filesystem::remove(dir.path() / "iasl.log");
        EXPECT_EQ(iasl(dir.path(), "-fi init.txt " + batch + files, kAcpiexec), 0);
        std::string log = read_file(dir.path() / "iasl.log");
        EXPECT_NE(log.find("Evaluation of \\_SB.GED0._CRS returned"), std::string::npos) << log;
        EXPECT_NE(log.find("Evaluation of \\_SB.PWRB._HID returned"), std::string::npos) << log;
        EXPECT_NE(log.find("Evaluating \\_SB.GED0._EVT"), std::string::npos) << log;
        const bool notified = log.find("Received a Device Notify on [PWRB]") != std::string::npos &&
                              log.find("Value 0x80") != std::string::npos;
        EXPECT_EQ(notified, events != 0) << log;
        for (const char* bad : {"ACPI Error", "ACPI Warning", "ACPI Exception"})
            EXPECT_EQ(log.find(bad), std::string::npos) << log;
    }
}
