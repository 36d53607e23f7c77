// Live migration end to end over loopback: a source `popek run --api-sock`,
// a destination `popek run --incoming`, and `popek migrate` between them, as
// a user would run them.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "migration/stream.hpp"
#include "process.hpp"

namespace popek::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr const char* kCompute = "compute 60000";  // ~3 s here

std::string sock_path(const std::string& name) {
    return "/tmp/popek-mig-" + std::to_string(::getpid()) + "-" + name + ".sock";
}

std::vector<std::string> source_argv(const std::string& cmdline, const std::string& sock, const char* memory = "256M") {
    return {POPEK_BIN, "run", "--kernel", POPEK_PROBE, "--cmdline", cmdline, "--memory", memory, "--api-sock", sock};
}

ProcessResult migrate(const std::string& sock, uint16_t port, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv{POPEK_BIN, "migrate", "--api-sock", sock, "--to",
                                  "tcp:127.0.0.1:" + std::to_string(port)};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return run_process(argv, 120s);
}

const std::string& reference_checksum() {
    static const std::string sum = [] {
        auto r = run_process({POPEK_BIN, "run", "--kernel", POPEK_PROBE, "--cmdline", kCompute, "--memory", "64M"}, 120s);
        return checksum_of(r.out);
    }();
    return sum;
}

// Fidelity under each codec: compute migrated mid-run finishes on the
// destination with the uninterrupted checksum, its clock never went back,
// and the digest of every guest page matched at the switch.
class MigrateCompute : public ::testing::TestWithParam<const char*> {};

TEST_P(MigrateCompute, FinishesOnTheDestinationWithTheSameChecksum) {
    const std::string expected = reference_checksum();
    ASSERT_FALSE(expected.empty());
    const uint16_t port = free_port();
    const std::string sock = sock_path(std::string("c-") + GetParam());
    Child dest({POPEK_BIN, "run", "--incoming", "tcp:127.0.0.1:" + std::to_string(port)});
    wait_listening(port);
    Child source(source_argv(kCompute, sock));
    ASSERT_TRUE(source.wait_for_line("PROBE-READY", 30s)) << source.err();
    std::this_thread::sleep_for(500ms);
    auto m = migrate(sock, port, {"--compress", GetParam()});
    ASSERT_EQ(m.exit_code, 0) << m.out << m.err;
    const json report = report_of(m);
    EXPECT_EQ(report.value("digest_match", false), true) << m.out;
    EXPECT_EQ(report.value("digest_source", 0ull), report.value("digest_destination", 1ull));
    EXPECT_EQ(report.value("codec", std::string()), GetParam());
    // zstd and auto compress whole frames in each lane's zstd stream
    // (compute's own data is pseudo-random: only a little below raw).
    const bool framed = std::string(GetParam()) == "zstd" || std::string(GetParam()) == "auto";
    EXPECT_EQ(report.value("frame_compression", std::string()), framed ? "zstd" : "none");
    if (framed) {
        EXPECT_LT(report.value("compression_ratio", 1.0), 1.0) << m.out;
    }
    auto src = source.finish(60s);
    EXPECT_EQ(src.exit_code, 0) << src.err;
    EXPECT_EQ(line_starting(src.out, "PROBE-DONE"), "") << "the source must not finish what it handed over";
    EXPECT_NE(src.err.find("popek: migration: commitment"), std::string::npos) << src.err;
    auto dst = dest.finish(120s);
    ASSERT_EQ(dst.exit_code, 0) << dst.err;
    EXPECT_EQ(checksum_of(dst.out), expected) << dst.out;
    EXPECT_NE(line_starting(dst.out, "PROBE-CLOCK backwards=0 "), "") << dst.out;
    EXPECT_NE(dst.err.find("popek: migration: validation digest"), std::string::npos) << dst.err;
    std::printf("compress=%s total_ms=%.1f downtime_ms=%.1f bytes=%llu ratio=%.3f\n", GetParam(),
                report.value("total_ms", 0.0), report.value("downtime_ms", 0.0),
                static_cast<unsigned long long>(report.value("bytes_sent", 0ull)), report.value("compression_ratio", 0.0));
}

INSTANTIATE_TEST_SUITE_P(EachCodec, MigrateCompute,
                         ::testing::Values("none", "zero", "wkdm", "xbzrle", "zstd", "lz4", "sparse", "auto"));

// A VM on the emulation engine moves to a host without KVM (its KVM device
// path names nothing there): the hello says which backend runs it, the
// destination checks for KVM only when it is needed, and the VM comes back to
// the engine that saved it and finishes with KVM's checksum.
TEST(Migration, AnEmulatedVmMovesToAHostWithoutKvm) {
    const char* compute = "compute 3000";  // ~2 s on the engine
    const auto reference =
        run_process({POPEK_BIN, "run", "--kernel", POPEK_PROBE, "--cmdline", compute, "--memory", "64M"}, 60s);
    const std::string expected = checksum_of(reference.out);
    ASSERT_FALSE(expected.empty()) << reference.out << reference.err;
    const uint16_t port = free_port();
    const std::string sock = sock_path("emu");
    Child dest({POPEK_BIN, "run", "--incoming", "tcp:127.0.0.1:" + std::to_string(port)});
    wait_listening(port);
    std::vector<std::string> argv = source_argv(compute, sock, "64M");
    argv.insert(argv.end(), {"--engine", "emu", "--kvm-device", "/nonexistent/kvm"});
    Child source(argv);
    ASSERT_TRUE(source.wait_for_line("PROBE-READY", 30s)) << source.err();
    auto m = migrate(sock, port);
    ASSERT_EQ(m.exit_code, 0) << m.out << m.err;
    EXPECT_TRUE(report_of(m).value("digest_match", false)) << m.out;
    auto src = source.finish(60s);
    EXPECT_EQ(line_starting(src.out, "PROBE-DONE"), "") << "the source must not finish what it handed over";
    auto dst = dest.finish(120s);
    ASSERT_EQ(dst.exit_code, 0) << dst.err;
    EXPECT_EQ(checksum_of(dst.out), expected) << dst.out;
}

// A guest that wrote one word into each page of 48 MiB (idle's fill): mostly
// empty pages, which Sparse records and zstd frames carry in a few bytes each.
class MigrateSparse : public ::testing::TestWithParam<const char*> {};

TEST_P(MigrateSparse, MostlyEmptyPagesGoInAFewBytes) {
    const uint16_t port = free_port();
    const std::string sock = sock_path(std::string("s-") + GetParam());
    Child dest({POPEK_BIN, "run", "--incoming", "tcp:127.0.0.1:" + std::to_string(port)});
    wait_listening(port);
    Child source(source_argv("idle 48", sock, "96M"));
    ASSERT_TRUE(source.wait_for_line("PROBE-IDLE", 30s)) << source.err();
    auto m = migrate(sock, port, {"--compress", GetParam()});
    ASSERT_EQ(m.exit_code, 0) << m.out << m.err;
    const json report = report_of(m);
    EXPECT_TRUE(report.value("digest_match", false)) << m.out;
    EXPECT_GE(report.value("pages_sent", 0ull), 48ull * 256) << m.out;
    EXPECT_LT(report.value("compression_ratio", 1.0), 0.02) << m.out;
    std::printf("compress=%s bytes=%llu ratio=%.4f\n", GetParam(),
                static_cast<unsigned long long>(report.value("bytes_sent", 0ull)), report.value("compression_ratio", 0.0));
    EXPECT_EQ(source.finish(60s).exit_code, 0);
}

INSTANTIATE_TEST_SUITE_P(EachCodec, MigrateSparse, ::testing::Values("sparse", "zstd", "auto"));

// A guest rewriting 64 MiB without end: pre-copy converges or hits the
// round cap, and the guest goes on dirtying on the destination.
TEST(Migration, DirtyGuestKeepsRunningOnTheDestination) {
    // The consoles go to files: ~230 lines/s into an unread pipe would block
    // the guest's serial writes, and a vCPU blocked there cannot pause.
    const uint16_t port = free_port();
    const std::string sock = sock_path("dirty");
    const std::string src_out = sock_path("dirty-src") + ".out", dst_out = sock_path("dirty-dst") + ".out";
    Child dest({POPEK_BIN, "run", "--incoming", "tcp:127.0.0.1:" + std::to_string(port), "--serial", "file:" + dst_out});
    wait_listening(port);
    std::vector<std::string> argv = source_argv("dirty 64", sock);
    argv.insert(argv.end(), {"--serial", "file:" + src_out});
    Child source(argv);
    ASSERT_TRUE(file_has(src_out, "PROBE-DIRTY pass 2 ", 30s)) << source.err();
    auto m = migrate(sock, port, {"--max-rounds", "8", "--compress", "auto"});
    ASSERT_EQ(m.exit_code, 0) << m.out << m.err;
    const json report = report_of(m);
    EXPECT_TRUE(report.value("digest_match", false)) << m.out;
    EXPECT_GE(report.value("rounds", 0), 1) << m.out;
    EXPECT_EQ(source.finish(60s).exit_code, 0);
    EXPECT_TRUE(file_has(dst_out, "PROBE-DIRTY pass", 30s)) << dest.err();
    ::unlink(src_out.c_str());
    ::unlink(dst_out.c_str());
    std::printf("dirty 64 (256 MiB): total_ms=%.1f downtime_ms=%.1f bytes=%llu rounds=%d\n",
                report.value("total_ms", 0.0), report.value("downtime_ms", 0.0),
                static_cast<unsigned long long>(report.value("bytes_sent", 0ull)), report.value("rounds", 0));
}

// Host-side dirty tracking: virtio-blk reads land in guest RAM through host
// pointers, unseen by KVM's dirty log, all through the migration; the digest
// of every page still matches at the switch and the I/O goes on there.
TEST(Migration, BlkReadsDuringMigrationArrive) {
    TempImage disk(64u << 20, "mig-disk.img");
    {
        std::vector<uint8_t> junk(1u << 20);
        for (size_t i = 0; i < junk.size(); ++i) junk[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
        std::ofstream f(disk.path(), std::ios::binary | std::ios::in | std::ios::out);
        for (int i = 0; i < 64; ++i) f.write(reinterpret_cast<const char*>(junk.data()), static_cast<long>(junk.size()));
    }
    const uint16_t port = free_port();
    const std::string sock = sock_path("blk");
    Child dest({POPEK_BIN, "run", "--incoming", "tcp:127.0.0.1:" + std::to_string(port)});
    wait_listening(port);
    std::vector<std::string> argv = source_argv("blk-bench randread4k 400000", sock, "128M");
    argv.insert(argv.end(), {"--disk", disk.path() + ",readonly=on"});
    Child source(argv);
    ASSERT_TRUE(source.wait_for_line("PROBE-READY", 30s)) << source.err();
    std::this_thread::sleep_for(300ms);
    auto m = migrate(sock, port, {"--compress", "lz4"});
    ASSERT_EQ(m.exit_code, 0) << m.out << m.err;
    EXPECT_TRUE(report_of(m).value("digest_match", false)) << m.out;
    EXPECT_EQ(source.finish(60s).exit_code, 0);
    auto dst = dest.finish(120s);
    EXPECT_EQ(dst.exit_code, 0) << dst.err;
    EXPECT_NE(line_starting(dst.out, "PROBE-DONE blk-bench randread4k n=400000"), "") << dst.out << dst.err;
}

// The source keeps running, and finishes its work correctly, when the
// migration fails before commitment; the API says why.
void expect_source_survives(Child& source, const std::string& sock, const std::string& why) {
    auto status = run_process({POPEK_BIN, "ctl", "--api-sock", sock, "info"}, 30s);
    EXPECT_EQ(status.exit_code, 0) << status.err;
    EXPECT_NE(status.out.find("\"running\""), std::string::npos) << status.out;
    auto src = source.finish(120s);
    ASSERT_EQ(src.exit_code, 0) << src.err;
    EXPECT_EQ(checksum_of(src.out), reference_checksum()) << src.out;
    EXPECT_NE(src.err.find("popek: migration: failed"), std::string::npos) << src.err;
    EXPECT_NE(src.err.find(why), std::string::npos) << src.err;
}

TEST(Migration, DestinationDyingMidTransferLeavesTheSourceRunning) {
    // A destination that accepts the VM, takes some pages and dies.
    const uint16_t port = free_port();
    auto lfd = migration::tcp_listen({"127.0.0.1", port});
    ASSERT_TRUE(lfd.ok());
    const std::string sock = sock_path("dying");
    Child source(source_argv(kCompute, sock));
    ASSERT_TRUE(source.wait_for_line("PROBE-READY", 30s)) << source.err();
    std::thread fake([fd = *lfd] {
        auto conn = migration::tcp_accept(fd);
        if (!conn) return;
        if (!conn->receive(10000).ok()) return;
        (void)conn->send_json(migration::FrameType::Reply, json{{"ok", true}});
        (void)conn->receive(10000);  // one frame of pages, then gone
    });
    auto m = migrate(sock, port);
    fake.join();
    ::close(*lfd);
    EXPECT_EQ(m.exit_code, 1) << m.out << m.err;
    EXPECT_NE(m.err.find("migration failed"), std::string::npos) << m.err;
    expect_source_survives(source, sock, "the VM");
}

TEST(Migration, RefusedReservationLeavesTheSourceRunning) {
    const uint16_t port = free_port();
    const std::string sock = sock_path("refused");
    Child dest({POPEK_BIN, "run", "--incoming", "tcp:127.0.0.1:" + std::to_string(port), "--max-memory", "64M"});
    wait_listening(port);
    Child source(source_argv(kCompute, sock));
    ASSERT_TRUE(source.wait_for_line("PROBE-READY", 30s)) << source.err();
    auto m = migrate(sock, port);
    EXPECT_EQ(m.exit_code, 1) << m.out << m.err;
    EXPECT_NE(m.err.find("--max-memory"), std::string::npos) << m.err;
    auto d = dest.finish(30s);
    EXPECT_EQ(d.exit_code, 1) << d.err;
    EXPECT_NE(d.err.find("reservation"), std::string::npos) << d.err;
    expect_source_survives(source, sock, "--max-memory");
}

TEST(Migration, NobodyListeningLeavesTheSourceRunning) {
    const std::string sock = sock_path("nobody");
    Child source(source_argv(kCompute, sock));
    ASSERT_TRUE(source.wait_for_line("PROBE-READY", 30s)) << source.err();
    auto m = migrate(sock, free_port());
    EXPECT_EQ(m.exit_code, 1) << m.out << m.err;
    EXPECT_NE(m.err.find("Connection refused"), std::string::npos) << m.err;
    expect_source_survives(source, sock, "Connection refused");
}

}  // namespace
}  // namespace popek::test
