// popek's Linux boot protocol end to end: the probe built as a bzImage
// (guest/probe/bzimage.S) boots through the 64-bit entry with boot_params,
// and behaves exactly like the PVH ELF. Also the initrd, on both formats.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <ostream>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "process.hpp"

namespace popek::test {
namespace {

using namespace std::chrono_literals;

const std::string kPvh = POPEK_PROBE;
const std::string kBzImage = std::string(POPEK_BUILD_DIR) + "/guest/probe.bzImage";

ProcessResult boot(const std::string& kernel, const std::string& cmdline, uint32_t cpus = 1,
                   const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv{POPEK_BIN, "run",   "--kernel", kernel, "--cmdline", cmdline,
                                  "--cpus",  std::to_string(cpus), "--memory", "128M"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return run_process(argv, 120s);
}

std::vector<uint8_t> read_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

template <typename T>
T load(const std::vector<uint8_t>& b, size_t off) {
    T v{};
    if (off + sizeof(T) <= b.size()) std::memcpy(&v, b.data() + off, sizeof(T));
    return v;
}

// A scratch file in the test's temp dir, named after the running test (the
// e2e tests may run in parallel processes).
std::string temp_path(const std::string& suffix) {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string(info->test_suite_name()) + "-" + info->name();
    std::replace(name.begin(), name.end(), '/', '-');
    return std::string(::testing::TempDir()) + "popek-" + name + "-" + suffix;
}

// ---- the image itself ------------------------------------------------------

// What popek (and any Linux loader) keys on: the setup header of a 64-bit
// capable bzImage whose protected-mode part is the same probe as the ELF.
TEST(LinuxBoot, ImageHasASetupHeaderFor64BitEntry) {
    const std::vector<uint8_t> img = read_bytes(kBzImage);
    ASSERT_GT(img.size(), 0x1000u) << kBzImage;
    EXPECT_EQ(load<uint16_t>(img, 0x1fe), 0xaa55);
    EXPECT_EQ(load<uint32_t>(img, 0x202), 0x53726448u);  // "HdrS"
    EXPECT_GE(load<uint16_t>(img, 0x206), 0x020c);
    EXPECT_EQ(load<uint8_t>(img, 0x211) & 0x01, 0x01);    // LOADED_HIGH
    EXPECT_EQ(load<uint16_t>(img, 0x236) & 0x01, 0x01);   // XLF_KERNEL_64
    EXPECT_EQ(load<uint8_t>(img, 0x234), 0);              // not relocatable
    EXPECT_EQ(load<uint64_t>(img, 0x258), 0x100000u);     // pref_address
    const size_t setup = (size_t{load<uint8_t>(img, 0x1f1)} + 1) * 512;
    ASSERT_LT(setup + 0x200, img.size());
    const size_t payload = img.size() - setup;
    EXPECT_EQ(load<uint32_t>(img, 0x1f4), (payload + 15) / 16);  // syssize
    // init_size covers the image plus its .noinit/.bss (about 1.7 MiB).
    EXPECT_GT(load<uint32_t>(img, 0x260), payload + (1u << 20));
    EXPECT_EQ(load<uint32_t>(img, 0x260) % 4096, 0u);
}

// ---- booting through the 64-bit Linux entry ---------------------------------

class LinuxBootSmp : public ::testing::TestWithParam<uint32_t> {};

TEST_P(LinuxBootSmp, AllCpusCheckIn) {
    const uint32_t n = GetParam();
    auto r = boot(kBzImage, "smp", n);
    ASSERT_FALSE(r.timed_out) << r.out << r.err;
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_TRUE(r.err.empty()) << r.err;
    const auto out = lines(r.out);
    ASSERT_FALSE(out.empty()) << r.err;
    EXPECT_EQ(out.front(), "PROBE-READY") << r.out;
    EXPECT_EQ(line_starting(r.out, "PROBE-DONE"), "PROBE-DONE smp cpus=" + std::to_string(n)) << r.out;
    for (uint32_t id = 0; id < n; id++)
        EXPECT_EQ(std::count(out.begin(), out.end(), "PROBE-CPU " + std::to_string(id)), 1)
            << "cpu " << id << "\n" << r.out;
}

INSTANTIATE_TEST_SUITE_P(LinuxBoot, LinuxBootSmp, ::testing::Values(1u, 4u),
                         [](const auto& p) { return std::to_string(p.param) + "cpus"; });

TEST(LinuxBoot, ComputeMatchesThePvhProbe) {
    auto bz = boot(kBzImage, "compute 100");
    auto pvh = boot(kPvh, "compute 100");
    EXPECT_EQ(bz.exit_code, 0) << bz.out << bz.err;
    EXPECT_EQ(pvh.exit_code, 0) << pvh.out << pvh.err;
    const std::string a = checksum_of(bz.out), b = checksum_of(pvh.out);
    ASSERT_FALSE(a.empty()) << bz.out << bz.err;
    EXPECT_EQ(a, b);
    // The number is the work's, not a constant: other work, other checksum.
    auto other = boot(kBzImage, "compute 101");
    EXPECT_EQ(other.exit_code, 0) << other.err;
    EXPECT_NE(checksum_of(other.out), a) << other.out;
}

TEST(LinuxBoot, FaultIsHandledByTheGuest) {
    auto r = boot(kBzImage, "fault");
    ASSERT_FALSE(r.timed_out);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(line_starting(r.out, "PROBE-FAULT vector=14 error=0x4 cr2=0x7f0000000000 rip=").empty(), false)
        << r.out;
    EXPECT_EQ(line_starting(r.out, "PROBE-DONE"), "PROBE-DONE fault cr2=0x7f0000000000") << r.out;
}

// The guest finds the FADT through boot_params.acpi_rsdp_addr and powers off.
TEST(LinuxBoot, AcpiPowerOffExitsZero) {
    auto r = boot(kBzImage, "poweroff");
    ASSERT_FALSE(r.timed_out);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(line_starting(r.out, "PROBE-POWEROFF"), "PROBE-POWEROFF port=0x600") << r.out;
    EXPECT_TRUE(line_starting(r.out, "PROBE-ERROR").empty()) << r.out;
    EXPECT_TRUE(r.err.empty()) << r.err;
}

// The memory map arrives through boot_params.e820_table: `dirty` refuses a
// region that is not RAM in it, and accepts one that is.
TEST(LinuxBoot, MemoryMapComesFromTheZeroPage) {
    auto bad = boot(kBzImage, "dirty 4000");  // 16 MiB + 4000 MiB: beyond 128 MiB of RAM
    EXPECT_EQ(bad.exit_code, 1) << bad.out << bad.err;
    EXPECT_EQ(line_starting(bad.out, "PROBE-ERROR"), "PROBE-ERROR dirty region is not RAM") << bad.out;
    auto bad_pvh = boot(kPvh, "dirty 4000");
    EXPECT_EQ(line_starting(bad_pvh.out, "PROBE-ERROR"), "PROBE-ERROR dirty region is not RAM") << bad_pvh.out;
}

// popek takes the command-line limit from the image's setup header
// (cmdline_size = 255 for the probe), not its own 4 KiB PVH limit.
TEST(LinuxBoot, CommandLineLimitComesFromTheSetupHeader) {
    const std::string longline = "compute 1 " + std::string(290, 'x');
    auto pvh = boot(kPvh, longline);
    EXPECT_EQ(pvh.exit_code, 0) << pvh.out << pvh.err;
    EXPECT_FALSE(checksum_of(pvh.out).empty()) << pvh.out;

    auto bz = boot(kBzImage, longline);
    EXPECT_EQ(bz.exit_code, 2) << bz.out << bz.err;
    EXPECT_TRUE(bz.out.empty()) << bz.out;
    const auto err = lines(bz.err);
    ASSERT_EQ(err.size(), 1u) << bz.err;
    EXPECT_NE(err[0].find("300 bytes; at most 255"), std::string::npos) << err[0];

    auto fits = boot(kBzImage, "compute 1 " + std::string(245, 'x'));  // exactly 255
    EXPECT_EQ(fits.exit_code, 0) << fits.out << fits.err;
    EXPECT_FALSE(checksum_of(fits.out).empty()) << fits.out;
}

// ---- the initrd ---------------------------------------------------------------

uint64_t fnv1a64(const std::vector<uint8_t>& data) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint8_t b : data) {
        h ^= b;
        h *= 0x100000001b3ull;
    }
    return h;
}

std::string hex16(uint64_t v) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
    return buf;
}

// Pseudo-random bytes (fixed seed), written to `path`.
std::vector<uint8_t> write_random_file(const std::string& path, size_t size, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<uint8_t> data(size);
    for (auto& b : data) b = static_cast<uint8_t>(rng() >> 56);
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
    return data;
}

struct Format {
    const char* name;
    std::string kernel;
};

void PrintTo(const Format& f, std::ostream* os) { *os << f.name << " (" << f.kernel << ")"; }

class InitrdChecksum : public ::testing::TestWithParam<Format> {};

// 300 KiB and a few bytes (not a page multiple, so a size rounded to pages
// shows): the guest's size and FNV-1a must be the test's, exactly.
TEST_P(InitrdChecksum, GuestSeesTheExactBytes) {
    const std::string path = temp_path("initrd.bin");
    const std::vector<uint8_t> data = write_random_file(path, 300 * 1024 + 123, 0x5eed);
    auto r = boot(GetParam().kernel, "initrd", 1, {"--initrd", path});
    std::filesystem::remove(path);
    ASSERT_FALSE(r.timed_out);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(line_starting(r.out, "PROBE-DONE"),
              "PROBE-DONE initrd size=" + std::to_string(data.size()) + " fnv=" + hex16(fnv1a64(data)))
        << r.out << r.err;
}

TEST_P(InitrdChecksum, NoInitrdIsAGuestError) {
    auto r = boot(GetParam().kernel, "initrd");
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_EQ(line_starting(r.out, "PROBE-ERROR"), "PROBE-ERROR no initrd") << r.out;
    EXPECT_TRUE(line_starting(r.out, "PROBE-DONE").empty()) << r.out;
}

// Does not fit between the kernel and the top of RAM, or not even in RAM:
// popek refuses before starting the guest, with one error line.
TEST_P(InitrdChecksum, TooLargeForRamIsRejected) {
    for (const uint64_t mib : {uint64_t{31}, uint64_t{64}}) {
        const std::string path = temp_path(std::to_string(mib) + "m.bin");
        {
            std::ofstream f(path, std::ios::binary | std::ios::trunc);
        }
        std::filesystem::resize_file(path, mib << 20);  // sparse: cheap to write and read
        auto r = run_process({POPEK_BIN, "run", "--kernel", GetParam().kernel, "--cmdline", "initrd",
                              "--memory", "32M", "--initrd", path},
                             60s);
        std::filesystem::remove(path);
        EXPECT_EQ(r.exit_code, 2) << mib << " MiB\n" << r.out << r.err;
        EXPECT_TRUE(r.out.empty()) << r.out;
        const auto err = lines(r.err);
        ASSERT_EQ(err.size(), 1u) << mib << " MiB\n" << r.err;
        EXPECT_EQ(err[0].rfind("popek: error: ", 0), 0u) << err[0];
        EXPECT_NE(err[0].find("initrd"), std::string::npos) << err[0];
    }
}

INSTANTIATE_TEST_SUITE_P(Initrd, InitrdChecksum,
                         ::testing::Values(Format{"Pvh", kPvh}, Format{"BzImage", kBzImage}),
                         [](const auto& p) { return std::string(p.param.name); });

}  // namespace
}  // namespace popek::test
