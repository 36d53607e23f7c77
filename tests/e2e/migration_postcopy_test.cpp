// Post-copy live migration end to end over loopback: the destination runs
// the VM while its pages still arrive (userfaultfd), as a mode and as the
// automatic switch when pre-copy cannot converge, and what each side does
// when the other dies.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
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

std::vector<std::string> source_argv(const std::string& cmdline, const std::string& sock, const char* memory = "256M") {
    return {POPEK_BIN, "run", "--kernel", POPEK_PROBE, "--cmdline", cmdline, "--memory", memory, "--api-sock", sock};
}

ProcessResult migrate(const std::string& sock, uint16_t port, const std::vector<std::string>& extra) {
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

uint64_t max_gap_cycles(const std::string& text, const char* key) {
    std::smatch m;
    uint64_t best = 0;
    const std::regex re(std::string(key) + "=([0-9]+)");
    for (const auto& line : lines(text))
        if (std::regex_search(line, m, re)) best = std::max<uint64_t>(best, std::stoull(m[1].str()));
    return best;
}

void print_figures(const char* what, const json& r, uint64_t guest_gap_cycles) {
    const json pc = r.value("postcopy", json::object());
    std::printf("%s: total_ms=%.1f downtime_ms=%.1f needed=%llu requested=%llu on_demand=%llu pushed=%llu "
                "complete_ms=%.1f (destination %.1f) bytes=%llu guest max_gap_cycles=%llu\n",
                what, r.value("total_ms", 0.0), r.value("downtime_ms", 0.0),
                static_cast<unsigned long long>(pc.value("needed_pages", 0ull)),
                static_cast<unsigned long long>(pc.value("pages_requested", 0ull)),
                static_cast<unsigned long long>(pc.value("pages_on_demand", 0ull)),
                static_cast<unsigned long long>(pc.value("pages_pushed", 0ull)), pc.value("complete_ms", 0.0),
                pc.value("destination", json::object()).value("complete_ms", 0.0),
                static_cast<unsigned long long>(r.value("bytes_sent", 0ull)),
                static_cast<unsigned long long>(guest_gap_cycles));
}

// compute moved in post-copy (pure: nothing before the switch; or after
// the full pass) finishes on the destination with the uninterrupted
// checksum, and the digest of every page matches.
class PostcopyCompute : public ::testing::TestWithParam<const char*> {};

TEST_P(PostcopyCompute, FinishesOnTheDestinationWithTheSameChecksum) {
    const std::string expected = reference_checksum();
    ASSERT_FALSE(expected.empty());
    const uint16_t port = free_port();
    const std::string sock = "/tmp/popek-pc-" + std::to_string(::getpid()) + "-c" + GetParam() + ".sock";
    Child dest({POPEK_BIN, "run", "--incoming", "tcp:127.0.0.1:" + std::to_string(port)});
    wait_listening(port);
    Child source(source_argv(kCompute, sock));
    ASSERT_TRUE(source.wait_for_line("PROBE-READY", 30s)) << source.err();
    std::this_thread::sleep_for(300ms);
    auto m = migrate(sock, port, {"--postcopy", "--postcopy-after-rounds", GetParam()});
    ASSERT_EQ(m.exit_code, 0) << m.out << m.err;
    const json report = report_of(m);
    ASSERT_TRUE(report.contains("postcopy")) << m.out;
    EXPECT_TRUE(report.value("digest_match", false)) << m.out;
    const json pc = report["postcopy"];
    if (std::string(GetParam()) == "0") {
        EXPECT_GT(pc.value("needed_pages", 0), 0) << m.out;
    }
    EXPECT_EQ(pc["destination"].value("pages_received", 0ull), pc.value("needed_pages", 1ull)) << m.out;
    auto src = source.finish(60s);
    EXPECT_EQ(src.exit_code, 0) << src.err;
    EXPECT_EQ(line_starting(src.out, "PROBE-DONE"), "") << "the source must not finish what it handed over";
    auto dst = dest.finish(120s);
    ASSERT_EQ(dst.exit_code, 0) << dst.err;
    EXPECT_EQ(checksum_of(dst.out), expected) << dst.out;
    EXPECT_NE(line_starting(dst.out, "PROBE-CLOCK backwards=0 "), "") << dst.out;
    EXPECT_NE(dst.err.find("matches the source's"), std::string::npos) << dst.err;
    print_figures((std::string("compute, after rounds ") + GetParam()).c_str(), report,
                  max_gap_cycles(dst.out, "max_gap_cycles"));
}

INSTANTIATE_TEST_SUITE_P(AfterRounds, PostcopyCompute, ::testing::Values("0", "1"));

struct DirtyPair {
    TempDir dir;
    uint16_t port = free_port();
    std::string sock = dir.path("api.sock");
    std::string src_out = dir.path("src.out"), dst_out = dir.path("dst.out");
    std::unique_ptr<Child> dest, source;

    std::string dst_err = dir.path("dst.err");

    // The consoles go to files: an unread pipe would block the guest's
    // serial writes. So does the destination's log, to be watched while it runs.
    void start(const char* memory = "256M") {
        dest = std::make_unique<Child>(std::vector<std::string>{
            "/bin/sh", "-c",
            std::string("exec ") + POPEK_BIN + " run --incoming tcp:127.0.0.1:" + std::to_string(port) +
                " --serial file:" + dst_out + " 2>" + dst_err});
        wait_listening(port);
        auto argv = source_argv("dirty 64", sock, memory);
        argv.insert(argv.end(), {"--serial", "file:" + src_out});
        source = std::make_unique<Child>(argv);
    }
};

// A guest rewriting 64 MiB without end, moved in pure post-copy: all its
// pages come after it runs on the destination, where it goes on dirtying.
TEST(Postcopy, DirtyGuestRunsOnWhilePagesArrive) {
    DirtyPair p;
    p.start();
    ASSERT_TRUE(file_has(p.src_out, "PROBE-DIRTY pass 2 ", 30s)) << p.source->err();
    auto m = migrate(p.sock, p.port, {"--postcopy", "--postcopy-after-rounds", "0"});
    ASSERT_EQ(m.exit_code, 0) << m.out << m.err;
    const json report = report_of(m);
    EXPECT_TRUE(report.value("digest_match", false)) << m.out;
    const json pc = report.value("postcopy", json::object());
    EXPECT_GE(pc.value("needed_pages", 0ull), 16384ull) << m.out;  // the 64 MiB at least
    EXPECT_EQ(pc.value("pages_pushed", 0ull) + pc.value("pages_on_demand", 0ull), pc.value("needed_pages", 1ull));
    EXPECT_EQ(p.source->finish(60s).exit_code, 0);
    const size_t before = read_text(p.dst_out).size();
    EXPECT_TRUE(file_has(p.dst_out, "PROBE-DIRTY pass", 30s)) << read_text(p.dst_err);
    EXPECT_NE(read_text(p.dst_err).find("matches the source's"), std::string::npos) << read_text(p.dst_err);
    // Still dirtying after every page arrived.
    auto deadline = std::chrono::steady_clock::now() + 20s;
    while (read_text(p.dst_out).size() <= before + 200 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(50ms);
    EXPECT_GT(read_text(p.dst_out).size(), before + 200);
    print_figures("dirty 64 (256 MiB), pure post-copy", report, max_gap_cycles(read_text(p.dst_out), "maxgap_tsc"));
}

// Pre-copy that cannot converge (a 1 ms downtime limit against a guest
// rewriting 64 MiB) switches to post-copy by itself.
TEST(Postcopy, AutomaticSwitchWhenPrecopyCannotConverge) {
    DirtyPair p;
    p.start();
    ASSERT_TRUE(file_has(p.src_out, "PROBE-DIRTY pass 2 ", 30s)) << p.source->err();
    auto m = migrate(p.sock, p.port, {"--auto-postcopy", "--downtime-ms", "1", "--max-rounds", "4"});
    ASSERT_EQ(m.exit_code, 0) << m.out << m.err;
    const json report = report_of(m);
    EXPECT_TRUE(report.value("digest_match", false)) << m.out;
    ASSERT_TRUE(report.contains("postcopy")) << m.out;
    EXPECT_NE(report["postcopy"].value("reason", std::string()).find("converg"), std::string::npos) << m.out;
    EXPECT_GE(report.value("rounds", 0), 1) << m.out;
    EXPECT_EQ(p.source->finish(60s).exit_code, 0);
    EXPECT_TRUE(file_has(p.dst_out, "PROBE-DIRTY pass", 30s)) << read_text(p.dst_err);
    print_figures("dirty 64 (256 MiB), automatic switch", report, max_gap_cycles(read_text(p.dst_out), "maxgap_tsc"));
}

// The source dies while the destination runs on half its pages: the
// destination waits out its recovery window for the source to come back,
// then stops with one clear error instead of waiting forever.
TEST(Postcopy, SourceKilledDuringPostcopyStopsTheDestination) {
    ScopedEnv slow("POPEK_TEST_POSTCOPY_PUSH_DELAY_US", "20000");  // ~6 MiB/s of pushed pages
    DirtyPair p;
    p.start();
    ASSERT_TRUE(file_has(p.src_out, "PROBE-DIRTY pass 2 ", 30s)) << p.source->err();
    std::thread mig([&] {
        (void)migrate(p.sock, p.port, {"--postcopy", "--postcopy-after-rounds", "0", "--postcopy-recover-ms", "1000"});
    });
    const bool runs = file_has(p.dst_err, "pages are missing", 30s);
    ::kill(p.source->pid(), SIGKILL);
    mig.join();
    ASSERT_TRUE(runs) << read_text(p.dst_err);
    auto d = p.dest->finish(20s);
    const std::string err = read_text(p.dst_err);
    EXPECT_FALSE(d.timed_out) << err;
    EXPECT_EQ(d.exit_code, 1) << err;
    EXPECT_EQ(err.find("postcopy complete"), std::string::npos) << "killed too late to test anything:\n" << err;
    EXPECT_NE(err.find("post-copy failed: lost the source"), std::string::npos) << err;
    EXPECT_NE(err.find("the source did not reconnect within 1000 ms"), std::string::npos) << err;
    std::printf("destination: %s\n", line_starting(err, "popek: migration: post-copy failed").c_str());
}

// The destination dies after the switch: the source tries to reconnect for
// its recovery window, cannot resume (the destination ran) and ends its VM
// with a clear error.
TEST(Postcopy, DestinationKilledDuringPostcopyEndsTheSource) {
    ScopedEnv slow("POPEK_TEST_POSTCOPY_PUSH_DELAY_US", "20000");
    DirtyPair p;
    p.start();
    ASSERT_TRUE(file_has(p.src_out, "PROBE-DIRTY pass 2 ", 30s)) << p.source->err();
    ProcessResult m;
    std::thread mig([&] {
        m = migrate(p.sock, p.port, {"--postcopy", "--postcopy-after-rounds", "0", "--postcopy-recover-ms", "1000"});
    });
    const bool runs = file_has(p.dst_err, "pages are missing", 30s);
    ::kill(p.dest->pid(), SIGKILL);
    mig.join();
    ASSERT_TRUE(runs) << read_text(p.dst_err);
    EXPECT_EQ(m.exit_code, 1) << m.out << m.err;
    auto s = p.source->finish(20s);
    EXPECT_FALSE(s.timed_out) << s.err;
    EXPECT_NE(s.exit_code, 0) << s.err;
    EXPECT_NE(s.err.find("cannot resume here"), std::string::npos) << s.err;
    EXPECT_NE(s.err.find("could not take the migration back within 1000 ms"), std::string::npos) << s.err;
    std::printf("source (exit %d): %s\n", s.exit_code, line_starting(s.err, "popek: migration: post-copy failed").c_str());
}

// The destination dies before the switch: the source runs on and finishes
// its work correctly.
TEST(Postcopy, DestinationDyingBeforeTheSwitchLeavesTheSourceRunning) {
    const uint16_t port = free_port();
    auto lfd = migration::tcp_listen({"127.0.0.1", port});
    ASSERT_TRUE(lfd.ok());
    const std::string sock = "/tmp/popek-pc-" + std::to_string(::getpid()) + "-dying.sock";
    Child source(source_argv(kCompute, sock));
    ASSERT_TRUE(source.wait_for_line("PROBE-READY", 30s)) << source.err();
    std::thread fake([fd = *lfd] {  // takes the hello and one frame of pages, then is gone
        auto conn = migration::tcp_accept(fd);
        if (!conn) return;
        if (!conn->receive(10000).ok()) return;
        (void)conn->send_json(migration::FrameType::Reply, json{{"ok", true}});
        (void)conn->receive(10000);
    });
    auto m = migrate(sock, port, {"--postcopy", "--postcopy-after-rounds", "3"});
    fake.join();
    ::close(*lfd);
    EXPECT_EQ(m.exit_code, 1) << m.out << m.err;
    auto status = run_process({POPEK_BIN, "ctl", "--api-sock", sock, "info"}, 30s);
    EXPECT_NE(status.out.find("\"running\""), std::string::npos) << status.out;
    auto src = source.finish(120s);
    ASSERT_EQ(src.exit_code, 0) << src.err;
    EXPECT_EQ(checksum_of(src.out), reference_checksum()) << src.out;
    EXPECT_NE(src.err.find("popek: migration: failed"), std::string::npos) << src.err;
}

}  // namespace
}  // namespace popek::test
