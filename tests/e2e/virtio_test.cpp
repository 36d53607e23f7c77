// virtio-pci devices end to end: the probe's ring-3 drivers against popek's
// devices, checked from the host side as well.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <sstream>

#include "process.hpp"

namespace popek::test {
namespace {

using namespace std::chrono_literals;

ProcessResult probe(const std::string& cmdline, std::vector<std::string> extra) {
    std::vector<std::string> argv{POPEK_BIN, "run", "--kernel", POPEK_PROBE, "--cmdline", cmdline, "--memory", "128M"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return run_process(argv, 120s);
}


uint64_t fnv1a(const uint8_t* p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

// The probe's blk-test pattern: byte i of sector s (guest/probe/virtio_blk.c).
uint8_t pattern(uint64_t sector, uint64_t i) {
    return static_cast<uint8_t>((sector * 131 + (sector >> 8) * 17 + i * 7 + (i >> 8) * 3) & 0xff);
}

TEST(VirtioBlk, GuestWritesExactlyThePatternToTheHostFile) {
    TempImage img(64 << 20);
    auto r = probe("blk-test", {"--disk", img.path() + ",id=probe-disk"});
    ASSERT_FALSE(r.timed_out);
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(line_starting(r.out, "PROBE-BLK"), "PROBE-BLK capacity=131072 id=probe-disk ro=0") << r.out;
    std::smatch m;
    std::string done = line_starting(r.out, "PROBE-DONE");
    ASSERT_TRUE(std::regex_search(done, m, std::regex("written=(\\d+) fnv=([0-9a-f]{16})"))) << r.out;
    const uint64_t written = std::stoull(m[1].str());
    ASSERT_EQ(written, 65536u);

    std::string disk = img.contents();
    ASSERT_EQ(disk.size(), 64u << 20);
    const auto* bytes = reinterpret_cast<const uint8_t*>(disk.data());
    const uint64_t first_sector = 8;
    for (uint64_t off = 0; off < written; off++) {
        uint64_t sector = first_sector + off / 512;
        ASSERT_EQ(bytes[first_sector * 512 + off], pattern(sector, off % 512)) << "byte " << off;
    }
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv1a(bytes + 4096, written)));
    EXPECT_EQ(m[2].str(), hex) << "the guest's checksum of what it wrote differs from the host file's";
    // Nothing else on the disk changed.
    for (uint64_t i = 0; i < disk.size(); i++) {
        if (i >= 4096 && i < 4096 + written) continue;
        ASSERT_EQ(bytes[i], 0) << "stray write at byte " << i;
    }
}

TEST(VirtioBlk, ReadOnlyDiskRefusesWritesAndStaysUnchanged) {
    TempImage img(16 << 20);
    {
        std::fstream f(img.path(), std::ios::in | std::ios::out | std::ios::binary);
        for (int i = 0; i < 4096; i++) f.put(static_cast<char>(i * 13));
    }
    std::string before = img.contents();
    auto r = probe("blk-test", {"--disk", img.path() + ",readonly=on"});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(line_starting(r.out, "PROBE-BLK capacity"), "PROBE-BLK capacity=32768 id=disk0 ro=1");
    EXPECT_EQ(line_starting(r.out, "PROBE-DONE"), "PROBE-DONE blk-test ro-refused status=1") << r.out;
    // The guest read sectors 0-7 and its checksum matches the file.
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx",
                  static_cast<unsigned long long>(fnv1a(reinterpret_cast<const uint8_t*>(before.data()), 4096)));
    EXPECT_EQ(line_starting(r.out, "PROBE-BLK read"), std::string("PROBE-BLK read sectors=8 fnv=") + hex);
    EXPECT_EQ(img.contents(), before);
}

TEST(VirtioBlk, BothIoEnginesServeTheGuest) {
    for (const char* engine : {"sync", "io_uring"}) {
        TempImage img(8 << 20, std::string("engine-") + engine);
        auto r = probe("blk-test", {"--disk", img.path() + ",engine=" + engine});
        EXPECT_EQ(r.exit_code, 0) << engine << "\n" << r.out << r.err;
        EXPECT_FALSE(line_starting(r.out, "PROBE-DONE blk-test written=65536").empty()) << engine << r.out;
    }
}

TEST(VirtioBlk, ManyRequestsInFlight) {
    TempImage img(32 << 20);
    auto r = probe("blk-bench randread4k 2000", {"--disk", img.path()});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_FALSE(line_starting(r.out, "PROBE-DONE blk-bench randread4k n=2000").empty()) << r.out;
}

TEST(VirtioRng, ReturnsTheRequestedBytes) {
    auto r = probe("rng-test 65536", {"--rng"});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    std::smatch m;
    std::string done = line_starting(r.out, "PROBE-DONE rng-test");
    ASSERT_TRUE(std::regex_search(done, m, std::regex("bytes=(\\d+) distinct=(\\d+)"))) << r.out;
    EXPECT_EQ(m[1].str(), "65536");
    EXPECT_GE(std::stoi(m[2].str()), 250) << "64 KiB of random bytes hit nearly all 256 values";
}

TEST(VirtioConsole, TextArrivesOnStdout) {
    auto r = probe("console-test", {"--console", "virtio"});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("PROBE-VIRTIO-CONSOLE hello\n"), std::string::npos) << r.out;
}

TEST(VirtioPci, PrintDevicesListsTheBus) {
    TempImage img(1 << 20);
    auto r = probe("compute 1", {"--disk", img.path(), "--rng", "--console", "virtio", "--print-devices"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("00:00.0 Host bridge"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("00:01.0 Mass storage controller [0100]: Red Hat, Inc. Virtio 1.0 block device [1af4:1042]"),
              std::string::npos) << r.err;
    EXPECT_NE(r.err.find("[1af4:1044]"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("[1af4:1043]"), std::string::npos) << r.err;
}

TEST(VirtioBlk, BadDisksGetOneClearLine) {
    TempImage locked(1 << 20, "locked.img");
    struct Case {
        std::vector<std::string> args;
        std::string expect;
    };
    for (const auto& c : std::vector<Case>{
             {{"--disk", "/nonexistent/disk.img"}, "/nonexistent/disk.img"},
             {{"--disk", "/tmp"}, "directory"},
             {{"--disk", "/etc/hostname,readonly=maybe"}, "readonly=maybe"},
             {{"--disk", locked.path(), "--disk", locked.path() + ",id=again"}, "lock"}}) {
        auto r = probe("compute 1", c.args);
        EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
        auto errs = lines(r.err);
        ASSERT_EQ(errs.size(), 1u) << r.err;
        EXPECT_EQ(errs[0].rfind("popek: error: ", 0), 0u) << errs[0];
        EXPECT_NE(errs[0].find(c.expect), std::string::npos) << errs[0] << " lacks " << c.expect;
    }
}

}  // namespace
}  // namespace popek::test
