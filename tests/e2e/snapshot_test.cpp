// Snapshots end to end: `popek ctl snapshot` on a running probe, then
// `popek restore` in a new process, as a user would.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "process.hpp"

namespace popek::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;


std::vector<std::string> run_argv(const std::string& cmdline, const std::string& sock,
                                  const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv{POPEK_BIN, "run",   "--kernel", POPEK_PROBE, "--cmdline", cmdline,
                                  "--memory", "64M", "--api-sock", sock};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
}

ProcessResult ctl(const std::string& sock, const std::vector<std::string>& args) {
    std::vector<std::string> argv{POPEK_BIN, "ctl", "--api-sock", sock};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_process(argv, 60s);
}

ProcessResult restore(const std::string& dir, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv{POPEK_BIN, "restore", "--snapshot", dir};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return run_process(argv, 120s);
}

constexpr const char* kCompute = "compute 20000";  // ~1 s here

// Fidelity: paused and saved at a random moment, restored in a new process
// (lazily or eagerly, alternately), compute finishes with the checksum of an
// uninterrupted run; the source, resumed after the snapshot, does too; the
// guest's clock never runs backwards.
TEST(Snapshot, ComputeFinishesWithTheSameChecksumAt20RandomPoints) {
    auto reference = run_process({POPEK_BIN, "run", "--kernel", POPEK_PROBE, "--cmdline", kCompute, "--memory", "64M"},
                                 120s);
    ASSERT_EQ(reference.exit_code, 0) << reference.err;
    const std::string expected = checksum_of(reference.out);
    ASSERT_FALSE(expected.empty()) << reference.out;

    const unsigned seed = static_cast<unsigned>(std::random_device{}());
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> delay_ms(0, 500);
    SCOPED_TRACE("seed " + std::to_string(seed));
    for (int i = 0; i < 20; i++) {
        TempDir dir;
        const std::string sock = dir.path("api.sock"), snap = dir.path("snap");
        const int delay = delay_ms(rng);
        SCOPED_TRACE("iteration " + std::to_string(i) + ", snapshot " + std::to_string(delay) + " ms after PROBE-READY");
        Child source(run_argv(kCompute, sock));
        ASSERT_TRUE(source.wait_for_line("PROBE-READY", 30s)) << source.out() << source.err();
        std::this_thread::sleep_for(std::chrono::milliseconds(delay));  // the random moment, not a wait
        auto saved = ctl(sock, {"snapshot", snap});
        ASSERT_EQ(saved.exit_code, 0) << saved.out << saved.err;

        auto src = source.finish(120s);
        ASSERT_EQ(src.exit_code, 0) << src.err;
        EXPECT_EQ(checksum_of(src.out), expected) << "the source after its snapshot";

        auto restored = restore(snap, i % 2 ? std::vector<std::string>{"--eager"} : std::vector<std::string>{});
        ASSERT_EQ(restored.exit_code, 0) << restored.out << restored.err;
        EXPECT_EQ(checksum_of(restored.out), expected) << restored.out;
        EXPECT_EQ(line_starting(restored.out, "PROBE-READY"), "") << "a restored guest must not boot again";
        EXPECT_NE(line_starting(restored.out, "PROBE-CLOCK backwards=0 "), "") << restored.out;
    }
}

// A lazily restored VM maps its RAM from the snapshot's memory file; saving
// it again into the same directory must not disturb that mapping, and the
// new snapshot must restore too.
TEST(Snapshot, ARestoredVmSnapshotsIntoItsOwnDirectory) {
    auto reference = run_process({POPEK_BIN, "run", "--kernel", POPEK_PROBE, "--cmdline", kCompute, "--memory", "64M"},
                                 120s);
    const std::string expected = checksum_of(reference.out);
    ASSERT_FALSE(expected.empty()) << reference.out;

    TempDir dir;
    const std::string snap = dir.path("snap");
    {
        Child source(run_argv(kCompute, dir.path("a.sock")));
        ASSERT_TRUE(source.wait_for_line("PROBE-READY", 30s)) << source.err();
        ASSERT_EQ(ctl(dir.path("a.sock"), {"snapshot", snap}).exit_code, 0);
    }  // the source is killed: only the snapshot lives on
    Child restored({POPEK_BIN, "restore", "--snapshot", snap, "--api-sock", dir.path("b.sock")});
    // Its API answers once it runs (a restored probe prints nothing until it is done).
    auto deadline = std::chrono::steady_clock::now() + 30s;
    while (ctl(dir.path("b.sock"), {"info"}).exit_code != 0) {
        ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the restored VM's API never answered";
        std::this_thread::sleep_for(5ms);
    }
    auto again = ctl(dir.path("b.sock"), {"snapshot", snap});
    ASSERT_EQ(again.exit_code, 0) << again.err;
    auto first = restored.finish(120s);
    ASSERT_EQ(first.exit_code, 0) << first.err;
    EXPECT_EQ(checksum_of(first.out), expected) << first.out;

    auto second = restore(snap);
    ASSERT_EQ(second.exit_code, 0) << second.err;
    EXPECT_EQ(checksum_of(second.out), expected) << second.out;
}

// The probe's blk-test pattern: byte i of sector s (guest/probe/virtio_blk.c).
uint8_t pattern(uint64_t sector, uint64_t i) {
    return static_cast<uint8_t>((sector * 131 + (sector >> 8) * 17 + i * 7 + (i >> 8) * 3) & 0xff);
}

TEST(Snapshot, DiskPatternIsIntactAfterARestore) {
    TempDir dir;
    TempImage img(64 << 20);
    const std::string sock = dir.path("api.sock"), snap = dir.path("snap");
    // 3000 rounds of write / flush / read back / compare: ~1 s or more, so
    // the snapshot lands in the middle of the disk traffic.
    Child source(run_argv("blk-test 3000", sock, {"--disk", img.path() + ",id=probe-disk"}));
    ASSERT_TRUE(source.wait_for_line("PROBE-BLK", 30s)) << source.err();
    auto saved = ctl(sock, {"snapshot", snap});
    ASSERT_EQ(saved.exit_code, 0) << saved.err;
    auto src = source.finish(120s);
    ASSERT_EQ(src.exit_code, 0) << src.err;
    ASSERT_NE(line_starting(src.out, "PROBE-DONE blk-test written=65536"), "") << src.out;

    auto restored = restore(snap);
    ASSERT_EQ(restored.exit_code, 0) << restored.out << restored.err;
    ASSERT_NE(line_starting(restored.out, "PROBE-DONE blk-test written=65536"), "") << restored.out;
    std::string disk = img.contents();
    const auto* bytes = reinterpret_cast<const uint8_t*>(disk.data());
    for (uint64_t off = 0; off < 65536; off++)
        ASSERT_EQ(bytes[4096 + off], pattern(8 + off / 512, off % 512)) << "byte " << off;
}

// Requests in flight at the pause are completed before the state is saved:
// a restored guest in the middle of a write burst finishes it without errors.
TEST(Snapshot, InFlightDiskRequestsSurviveARestore) {
    TempDir dir;
    TempImage img(64 << 20);
    const std::string sock = dir.path("api.sock"), snap = dir.path("snap");
    Child source(run_argv("blk-bench seqwrite1m 3000", sock, {"--disk", img.path()}));
    ASSERT_TRUE(source.wait_for_line("PROBE-READY", 30s)) << source.err();
    std::this_thread::sleep_for(100ms);  // into the burst (it takes ~1 s)
    auto saved = ctl(sock, {"snapshot", snap});
    ASSERT_EQ(saved.exit_code, 0) << saved.err;
    auto src = source.finish(60s);
    ASSERT_EQ(src.exit_code, 0) << src.out << src.err;

    auto restored = restore(snap);
    ASSERT_EQ(restored.exit_code, 0) << restored.out << restored.err;
    EXPECT_NE(line_starting(restored.out, "PROBE-DONE blk-bench seqwrite1m n=3000"), "") << restored.out;
}

class SnapshotRefusal : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        dir_ = new TempDir();
        const std::string sock = dir_->path("api.sock");
        Child source(run_argv("compute 100000", sock));
        ASSERT_TRUE(source.wait_for_line("PROBE-READY", 30s)) << source.err();
        auto saved = ctl(sock, {"snapshot", dir_->path("good")});
        ASSERT_EQ(saved.exit_code, 0) << saved.err;
    }
    static void TearDownTestSuite() {
        delete dir_;
        dir_ = nullptr;
    }
    // A copy of the good snapshot to break.
    std::string copy() {
        const std::string to = dir_->path("bad" + std::to_string(n_++));
        fs::copy(dir_->path("good"), to, fs::copy_options::recursive);
        return to;
    }
    static void expect_refused(const std::string& snap, const std::string& why) {
        auto r = restore(snap);
        EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
        EXPECT_NE(r.err.find(why), std::string::npos) << r.err;
        EXPECT_EQ(r.out.find("PROBE"), std::string::npos) << "nothing may run: " << r.out;
        EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
    }
    static TempDir* dir_;
    static inline int n_ = 0;
};
TempDir* SnapshotRefusal::dir_ = nullptr;

void patch(const std::string& path, off_t offset, uint8_t value) {
    int fd = ::open(path.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0) << path;
    ASSERT_EQ(::pwrite(fd, &value, 1, offset), 1);
    ::close(fd);
}

TEST_F(SnapshotRefusal, CorruptedStateFile) {
    auto s = copy();
    struct stat st{};
    ASSERT_EQ(::stat((s + "/state.snap").c_str(), &st), 0);
    patch(s + "/state.snap", st.st_size / 2, 0x5a);
    expect_refused(s, "checksum mismatch");
}

TEST_F(SnapshotRefusal, TruncatedStateFile) {
    auto s = copy();
    ASSERT_EQ(::truncate((s + "/state.snap").c_str(), 100), 0);
    expect_refused(s, "truncated");
}

TEST_F(SnapshotRefusal, OtherFormatVersion) {
    auto s = copy();
    patch(s + "/state.snap", 8, 99);
    expect_refused(s, "snapshot format version 99");
}

TEST_F(SnapshotRefusal, TruncatedMemoryFile) {
    auto s = copy();
    ASSERT_EQ(::truncate((s + "/memory.bin").c_str(), 4096), 0);
    expect_refused(s, "truncated");
}

TEST_F(SnapshotRefusal, MissingStateFileAndNotADirectory) {
    auto s = copy();
    fs::remove(s + "/state.snap");
    expect_refused(s, "state.snap");
    expect_refused(dir_->path("nonexistent"), "is not a directory");
}

}  // namespace
}  // namespace popek::test
