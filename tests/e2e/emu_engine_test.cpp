// The emulation engine as popek's backend (`popek run --engine emu`): the
// probe's workloads give the same results as under KVM, devices, PCI/virtio
// with MSI-X, the ACPI power button, SMP start-up and snapshots work
// unchanged. Workload sizes stay small: the suite also runs under ASan.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "process.hpp"

namespace popek::test {
namespace {

using namespace std::chrono_literals;

ProcessResult run_probe(const std::string& engine, const std::string& cmdline,
                        std::vector<std::string> extra = {}) {
    std::vector<std::string> argv{POPEK_BIN, "run", "--engine", engine, "--kernel", POPEK_PROBE,
                                  "--cmdline", cmdline, "--memory", "64M"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return run_process(argv, 60s);
}

bool kvm_usable() {
    const int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0) return false;
    ::close(fd);
    return true;
}

TEST(EmuEngine, ComputeChecksumMatchesKvm) {
    for (const char* n : {"1", "7", "20"}) {
        SCOPED_TRACE(std::string("compute ") + n);
        auto emu = run_probe("emu", std::string("compute ") + n);
        ASSERT_EQ(emu.exit_code, 0) << emu.out << emu.err;
        const std::string sum = checksum_of(emu.out);
        ASSERT_FALSE(sum.empty()) << emu.out;
        EXPECT_NE(line_starting(emu.out, "PROBE-CLOCK backwards=0 "), "") << "the guest's TSC went backwards\n"
                                                                          << emu.out;
        if (!kvm_usable()) continue;  // the checksum above is checked against KVM where KVM exists
        auto kvm = run_probe("kvm", std::string("compute ") + n);
        ASSERT_EQ(kvm.exit_code, 0) << kvm.out << kvm.err;
        EXPECT_EQ(sum, checksum_of(kvm.out)) << "emu:\n" << emu.out << "kvm:\n" << kvm.out;
    }
}

TEST(EmuEngine, PortExitsFaultsAndPowerOff) {
    auto exits = run_probe("emu", "exits 500");
    EXPECT_EQ(exits.exit_code, 0) << exits.err;
    EXPECT_EQ(line_starting(exits.out, "PROBE-DONE"), "PROBE-DONE exits 500") << exits.out;

    auto reads = run_probe("emu", "pio-read 200");
    EXPECT_EQ(line_starting(reads.out, "PROBE-DONE"), "PROBE-DONE pio-read 200") << reads.out;

    auto fault = run_probe("emu", "fault");
    EXPECT_EQ(fault.exit_code, 0) << fault.err;
    EXPECT_EQ(line_starting(fault.out, "PROBE-DONE"), "PROBE-DONE fault cr2=0x7f0000000000") << fault.out;

    auto off = run_probe("emu", "poweroff");
    EXPECT_EQ(off.exit_code, 0) << off.err;
    EXPECT_NE(line_starting(off.out, "PROBE-POWEROFF"), "") << off.out;

    auto reset = run_probe("emu", "reset");
    EXPECT_EQ(reset.exit_code, 3) << reset.err;
    EXPECT_NE(reset.err.find("guest reset"), std::string::npos) << reset.err;
}

TEST(EmuEngine, VirtioBlkWithPollingAndWithMsixInterrupts) {
    TempImage img(16 << 20);
    auto blk = run_probe("emu", "blk-test", {"--disk", img.path() + ",id=emu-disk"});
    ASSERT_EQ(blk.exit_code, 0) << blk.out << blk.err;
    EXPECT_EQ(line_starting(blk.out, "PROBE-BLK"), "PROBE-BLK capacity=32768 id=emu-disk ro=0") << blk.out;
    EXPECT_NE(line_starting(blk.out, "PROBE-DONE blk-test written=65536"), "") << blk.out;

    // One MSI-X interrupt per completion: irqfd -> MSI route -> local APIC -> the guest's handler.
    auto msix = run_probe("emu", "blk-msix 20", {"--disk", img.path()});
    ASSERT_EQ(msix.exit_code, 0) << msix.out << msix.err;
    EXPECT_EQ(line_starting(msix.out, "PROBE-DONE"), "PROBE-DONE blk-msix requests=20 interrupts=20") << msix.out;
    EXPECT_EQ(line_starting(msix.out, "PROBE-MSIX"), "PROBE-MSIX masked_pending=1 delivered_on_unmask=1") << msix.out;
}

TEST(EmuEngine, RngAndConsole) {
    auto rng = run_probe("emu", "rng-test 1024", {"--rng"});
    EXPECT_EQ(rng.exit_code, 0) << rng.err;
    EXPECT_NE(line_starting(rng.out, "PROBE-DONE rng-test bytes=1024"), "") << rng.out;
}

TEST(EmuEngine, SmpStartsEveryApWithInitSipi) {
    auto r = run_probe("emu", "smp", {"--cpus", "4"});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(line_starting(r.out, "PROBE-DONE"), "PROBE-DONE smp cpus=4") << r.out;
    for (const char* cpu : {"PROBE-CPU 0", "PROBE-CPU 1", "PROBE-CPU 2", "PROBE-CPU 3"})
        EXPECT_NE(line_starting(r.out, cpu), "") << cpu << "\n" << r.out;
}

TEST(EmuEngine, PowerButtonThroughTheApi) {
    TempDir dir;
    const std::string sock = dir.path("api.sock");
    Child vm({POPEK_BIN, "run", "--engine", "emu", "--kernel", POPEK_PROBE, "--cmdline", "wait-power-button",
              "--memory", "64M", "--api-sock", sock});
    ASSERT_TRUE(vm.wait_for_line("PROBE-WAIT power-button", 30s)) << vm.out() << vm.err();
    auto press = run_process({POPEK_BIN, "ctl", "--api-sock", sock, "shutdown"}, 30s);
    ASSERT_EQ(press.exit_code, 0) << press.err;
    auto r = vm.finish(30s);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(line_starting(r.out, "PROBE-DONE power-button"), "") << r.out;
}

// A snapshot in the middle of compute, restored on emu (the backend that
// saved it is the default), finishes with the checksum of an uninterrupted run.
TEST(EmuEngine, SnapshotAndRestoreOnEmu) {
    auto plain = run_probe("emu", "compute 300");
    ASSERT_EQ(plain.exit_code, 0) << plain.err;
    const std::string expected = checksum_of(plain.out);
    ASSERT_FALSE(expected.empty()) << plain.out;

    TempDir dir;
    const std::string sock = dir.path("api.sock");
    const std::string snap = dir.path("snap");
    {
        Child vm({POPEK_BIN, "run", "--engine", "emu", "--kernel", POPEK_PROBE, "--cmdline", "compute 300",
                  "--memory", "64M", "--api-sock", sock});
        ASSERT_TRUE(vm.wait_for_line("PROBE-READY", 30s)) << vm.err();
        auto saved = run_process({POPEK_BIN, "ctl", "--api-sock", sock, "snapshot", snap}, 30s);
        ASSERT_EQ(saved.exit_code, 0) << saved.out << saved.err;
        auto src = vm.finish(60s);
        EXPECT_EQ(checksum_of(src.out), expected) << "the source after its snapshot";
    }
    auto restored = run_process({POPEK_BIN, "restore", "--snapshot", snap}, 60s);
    ASSERT_EQ(restored.exit_code, 0) << restored.out << restored.err;
    EXPECT_EQ(checksum_of(restored.out), expected) << restored.out;

    if (!kvm_usable()) return;
    auto refused = run_process({POPEK_BIN, "restore", "--engine", "kvm", "--snapshot", snap}, 30s);
    EXPECT_NE(refused.exit_code, 0);
    EXPECT_NE(refused.err.find("'emu' backend"), std::string::npos) << refused.err;
}

// Pre-copy live migration between two emu VMs: the engines' dirty log finds
// every page compute rewrites; the destination finishes with the checksum.
TEST(EmuEngine, LiveMigrationBetweenEmuVms) {
    auto plain = run_probe("emu", "compute 300");
    const std::string expected = checksum_of(plain.out);
    ASSERT_FALSE(expected.empty()) << plain.out << plain.err;

    TempDir dir;
    const uint16_t port = free_port();
    const std::string sock = dir.path("src.sock");
    Child dest({POPEK_BIN, "run", "--incoming", "tcp:127.0.0.1:" + std::to_string(port)});
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!listening(port) && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_TRUE(listening(port)) << dest.err();
    Child src({POPEK_BIN, "run", "--engine", "emu", "--kernel", POPEK_PROBE, "--cmdline", "compute 300", "--memory",
               "64M", "--api-sock", sock});
    ASSERT_TRUE(src.wait_for_line("PROBE-READY", 30s)) << src.err();
    auto m = run_process({POPEK_BIN, "migrate", "--api-sock", sock, "--to", "tcp:127.0.0.1:" + std::to_string(port)},
                         60s);
    ASSERT_EQ(m.exit_code, 0) << m.out << m.err;
    EXPECT_NE(m.out.find("\"digest_match\": true"), std::string::npos) << m.out;
    auto d = dest.finish(60s);
    EXPECT_EQ(d.exit_code, 0) << d.err;
    EXPECT_EQ(checksum_of(d.out), expected) << d.out << d.err;
    (void)src.finish(30s);
}

TEST(EmuEngine, BadEngineIsOneClearError) {
    auto r = run_process({POPEK_BIN, "run", "--engine", "qemu", "--kernel", POPEK_PROBE}, 30s);
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("--engine qemu: expected kvm, emu or auto"), std::string::npos) << r.err;
}

TEST(EmuEngine, AutoFallsBackToEmuWithoutKvm) {
    auto r = run_process({POPEK_BIN, "run", "--engine", "auto", "--kvm-device", "/nonexistent/kvm", "--kernel",
                          POPEK_PROBE, "--cmdline", "compute 3", "--memory", "64M"},
                         60s);
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_FALSE(checksum_of(r.out).empty()) << r.out;
    auto kvm = run_process({POPEK_BIN, "run", "--engine", "kvm", "--kvm-device", "/nonexistent/kvm", "--kernel",
                            POPEK_PROBE, "--cmdline", "compute 3", "--memory", "64M"},
                           30s);
    EXPECT_NE(kvm.exit_code, 0) << "--engine kvm must not fall back";
}

}  // namespace
}  // namespace popek::test
