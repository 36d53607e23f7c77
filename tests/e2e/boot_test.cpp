// Boots the probe guest on popek and checks what it prints and how it ends.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <regex>
#include <sstream>

#include "process.hpp"

namespace popek::test {
namespace {

using namespace std::chrono_literals;

ProcessResult popek_run(const std::string& cmdline, uint32_t cpus = 1,
                        std::vector<std::string> extra = {}) {
    std::vector<std::string> argv{POPEK_BIN, "run", "--kernel", POPEK_PROBE, "--cmdline", cmdline,
                                  "--cpus", std::to_string(cpus), "--memory", "128M"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return run_process(argv, 120s);
}

class ProbeSmp : public ::testing::TestWithParam<uint32_t> {};

TEST_P(ProbeSmp, AllCpusCheckIn) {
    uint32_t n = GetParam();
    auto r = popek_run("smp", n);
    ASSERT_FALSE(r.timed_out) << r.out << r.err;
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    auto out_lines = lines(r.out);
    auto ready = std::find(out_lines.begin(), out_lines.end(), "PROBE-READY");
    ASSERT_NE(ready, out_lines.end()) << r.out;
    EXPECT_EQ(line_starting(r.out, "PROBE-DONE"), "PROBE-DONE smp cpus=" + std::to_string(n)) << r.out;
    // Every CPU reports its own APIC id once.
    for (uint32_t id = 0; id < n; id++)
        EXPECT_EQ(std::count(out_lines.begin(), out_lines.end(), "PROBE-CPU " + std::to_string(id)), 1)
            << "cpu " << id << "\n" << r.out;
}

INSTANTIATE_TEST_SUITE_P(Boot, ProbeSmp, ::testing::Values(1u, 2u, 4u, 32u),
                         [](const auto& p) { return std::to_string(p.param) + "cpus"; });

TEST(Boot, ExitsWorkloadCountsItsExits) {
    auto r = popek_run("exits 20000", 2);
    ASSERT_FALSE(r.timed_out);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("PROBE-READY"), std::string::npos);
    EXPECT_EQ(line_starting(r.out, "PROBE-DONE"), "PROBE-DONE exits 20000") << r.out;
}

TEST(Boot, ComputeIsDeterministicAcrossCpuCounts) {
    auto a = popek_run("compute 200", 1);
    auto b = popek_run("compute 200", 4);
    EXPECT_EQ(a.exit_code, 0) << a.err;
    EXPECT_EQ(b.exit_code, 0) << b.err;
    std::string ca = checksum_of(a.out), cb = checksum_of(b.out);
    ASSERT_FALSE(ca.empty()) << a.out;
    EXPECT_EQ(ca, cb);
    // A different amount of work gives a different answer: the checksum is computed.
    auto c = popek_run("compute 201", 1);
    EXPECT_NE(checksum_of(c.out), ca) << c.out;
}

// The same probe on QEMU's software CPU (TCG) computes the same checksum:
// popek's guest sees the architecture a reference implementation sees.
TEST(Boot, ComputeMatchesQemuTcg) {
    const std::string qemu = "/usr/bin/qemu-system-x86_64";
    if (::access(qemu.c_str(), X_OK) != 0) GTEST_SKIP() << qemu << " missing (make deps installs qemu-system-x86)";
    auto q = run_process({qemu, "-M", "microvm", "-accel", "tcg", "-m", "128M", "-nodefaults", "-no-user-config",
                          "-nographic", "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
                          "-kernel", POPEK_PROBE, "-append", "compute 300"},
                         120s);
    ASSERT_FALSE(q.timed_out);
    EXPECT_EQ(q.exit_code, 1) << "QEMU's isa-debug-exit reports (0 << 1) | 1\n" << q.err;
    std::string expected = checksum_of(q.out);
    ASSERT_FALSE(expected.empty()) << q.out << q.err;
    auto r = popek_run("compute 300", 2);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(checksum_of(r.out), expected) << r.out;
}

TEST(Boot, FaultIsReportedByTheGuestHandler) {
    auto r = popek_run("fault");
    ASSERT_FALSE(r.timed_out);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    std::string fault = line_starting(r.out, "PROBE-FAULT");
    ASSERT_FALSE(fault.empty()) << r.out;
    EXPECT_NE(fault.find("vector=14"), std::string::npos) << fault;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(fault, m, std::regex("cr2=(0x)?([0-9a-f]+)"))) << fault;
    std::string done = line_starting(r.out, "PROBE-DONE fault");
    ASSERT_FALSE(done.empty()) << r.out;
    EXPECT_NE(done.find(m[2].str()), std::string::npos) << done << " vs " << fault;
}

TEST(Boot, UnknownWorkloadFailsWithGuestStatus) {
    auto r = popek_run("no-such-workload");
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_FALSE(line_starting(r.out, "PROBE-ERROR").empty()) << r.out;
    EXPECT_NE(r.err.find("debug-exit"), std::string::npos) << r.err;
}

TEST(Boot, SerialToFile) {
    std::string path = std::string(::testing::TempDir()) + "popek-serial.txt";
    auto r = popek_run("compute 10", 1, {"--serial", "file:" + path});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out.find("PROBE-"), std::string::npos) << "console went to stdout: " << r.out;
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    EXPECT_NE(ss.str().find("PROBE-READY"), std::string::npos) << ss.str();
    EXPECT_FALSE(checksum_of(ss.str()).empty()) << ss.str();
}

}  // namespace
}  // namespace popek::test

namespace popek::test {
namespace {

TEST(GuestEnd, AcpiPowerOffExitsZero) {
    auto r = popek_run("poweroff");
    ASSERT_FALSE(r.timed_out);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(line_starting(r.out, "PROBE-POWEROFF"), "PROBE-POWEROFF port=0x600") << r.out;
    EXPECT_TRUE(line_starting(r.out, "PROBE-ERROR").empty()) << r.out;
    EXPECT_TRUE(r.err.empty()) << r.err;
}

TEST(GuestEnd, I8042ResetExitsThree) {
    auto r = popek_run("reset");
    ASSERT_FALSE(r.timed_out);
    EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
    EXPECT_NE(r.err.find("guest reset"), std::string::npos) << r.err;
    EXPECT_TRUE(line_starting(r.out, "PROBE-ERROR").empty()) << r.out;
}

TEST(GuestEnd, TripleFaultIsACrashWithRegisters) {
    auto r = popek_run("crash", 2);
    ASSERT_FALSE(r.timed_out);
    EXPECT_EQ(r.exit_code, 4) << r.out << r.err;
    EXPECT_NE(r.err.find("guest crashed: vCPU 0: triple fault"), std::string::npos) << r.err;
    for (const char* reg : {"rip=", "rsp=", "cr3=", "efer="})
        EXPECT_NE(r.err.find(reg), std::string::npos) << reg << " missing in\n" << r.err;
    EXPECT_TRUE(line_starting(r.out, "PROBE-ERROR").empty()) << r.out;
}

TEST(GuestEnd, PortReadsRoundTripThroughTheDeviceModel) {
    auto r = popek_run("pio-read 2000");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(line_starting(r.out, "PROBE-DONE"), "PROBE-DONE pio-read 2000") << r.out;
}

}  // namespace
}  // namespace popek::test
