// A hostile guest and interrupts end to end: the probe's blk-hostile
// workload feeds popek's virtio-blk malformed descriptor chains (popek must
// flag DEVICE_NEEDS_RESET, survive, and work again after a reset), and
// blk-msix proves that completions arrive as MSI-X interrupts, with the
// table entry's mask and the pending bit honoured. The guest waits for its
// interrupt counter, never for the used ring, so a broken irqfd/MSI route
// makes it time out (PROBE-ERROR, exit status 1) and these tests fail.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "process.hpp"

namespace popek::test {
namespace {

using namespace std::chrono_literals;

ProcessResult probe(const std::string& cmdline, const std::string& disk) {
    return run_process({POPEK_BIN, "run", "--kernel", POPEK_PROBE, "--cmdline", cmdline, "--memory", "128M",
                        "--disk", disk},
                       120s);
}

bool has_line(const std::string& text, const std::string& line) {
    for (const auto& l : lines(text))
        if (l == line) return true;
    return false;
}

// What ASan, UBSan and LSan print; the e2e tests also run against the
// sanitizer build.
bool sanitizer_report(const std::string& err) {
    for (const char* marker : {"Sanitizer", "runtime error:", "SUMMARY:"})
        if (err.find(marker) != std::string::npos) return true;
    return false;
}


// The probe's test pattern: byte i (0-511) of sector s (guest/probe/virtio_blk.h).
uint8_t pattern(uint64_t sector, uint64_t i) {
    return static_cast<uint8_t>((sector * 131 + (sector >> 8) * 17 + i * 7 + (i >> 8) * 3) & 0xff);
}

// The disk holds the pattern in [first, end) and zeros everywhere else.
void expect_pattern_only(const std::string& disk, uint64_t first, uint64_t end) {
    std::string want(disk.size(), '\0');
    for (uint64_t off = first; off < end && off < want.size(); off++)
        want[off] = static_cast<char>(pattern(off / 512, off % 512));
    if (disk == want) return;
    uint64_t off = 0;
    while (off < disk.size() && disk[off] == want[off]) off++;
    ADD_FAILURE() << "disk byte " << off << " is " << int{static_cast<uint8_t>(disk[off])} << ", expected "
                  << int{static_cast<uint8_t>(want[off])} << (off >= first && off < end ? "" : " (a stray write)");
}

// In the order the guest runs them (guest/probe/virtio_blk_hostile.c).
const std::vector<std::string> kHostileCases = {
    "loop",     "addr-high", "addr-beyond-ram", "addr-straddle",
    "zero-len", "head-oob",  "avail-jump",      "nested-indirect",
};

TEST(VirtioHostile, DeviceSurvivesMalformedChains) {
    TempImage img(16 << 20, "hostile.img");
    auto r = probe("blk-hostile", img.path());
    ASSERT_FALSE(r.timed_out) << r.out << r.err;
    EXPECT_FALSE(sanitizer_report(r.err)) << r.err;
    // popek says why it gave up on the device, naming it and the fault.
    EXPECT_NE(r.err.find("popek: virtio disk0: the guest broke the device"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("a loop"), std::string::npos) << r.err;
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    for (const auto& c : kHostileCases) {
        EXPECT_TRUE(has_line(r.out, "PROBE-HOSTILE " + c + " needs_reset=1"))
            << c << ": popek did not set DEVICE_NEEDS_RESET\n" << r.out;
        EXPECT_TRUE(has_line(r.out, "PROBE-HOSTILE " + c + " recovered=1"))
            << c << ": the device did not work again after a reset\n" << r.out;
    }
    EXPECT_TRUE(has_line(r.out, "PROBE-DONE blk-hostile cases=8 recovered=8")) << r.out;

    // Only the valid round trips reached the disk: 4 KiB at sector 8 * k
    // for case k = 1..8, i.e. file offsets 4 KiB to 36 KiB. Every hostile
    // request would have written 0xee bytes at 1 MiB.
    std::string disk = img.contents();
    ASSERT_EQ(disk.size(), 16u << 20);
    expect_pattern_only(disk, 4096, 9 * 4096);
}

TEST(VirtioHostile, EachCaseAloneLeavesTheDeviceUsable) {
    // One case per VM: a failure that only shows on a fresh device (no
    // earlier reset) is caught too.
    for (const auto& c : kHostileCases) {
        TempImage img(2 << 20, "case.img");  // the hostile sector is at 1 MiB
        auto r = probe("blk-hostile " + c, img.path());
        ASSERT_FALSE(r.timed_out) << c << "\n" << r.out << r.err;
        EXPECT_FALSE(sanitizer_report(r.err)) << c << "\n" << r.err;
        EXPECT_EQ(r.exit_code, 0) << c << "\n" << r.out << r.err;
        EXPECT_TRUE(has_line(r.out, "PROBE-HOSTILE " + c + " needs_reset=1")) << r.out;
        EXPECT_TRUE(has_line(r.out, "PROBE-DONE blk-hostile cases=1 recovered=1")) << r.out;
    }
}

// blk-msix 64: 32 writes, each read back, one interrupt per completion,
// then one more write while the vector is masked.
TEST(VirtioMsix, CompletionsRaiseInterrupts) {
    TempImage img(16 << 20, "msix.img");
    auto r = probe("blk-msix 64", img.path());
    ASSERT_FALSE(r.timed_out) << r.out << r.err;
    EXPECT_FALSE(sanitizer_report(r.err)) << r.err;
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    // No EVENT_IDX and NO_INTERRUPT clear: exactly one interrupt each.
    EXPECT_TRUE(has_line(r.out, "PROBE-DONE blk-msix requests=64 interrupts=64")) << r.out;
    // The writes went to 4 KiB blocks 0-31.
    std::string disk = img.contents();
    ASSERT_EQ(disk.size(), 16u << 20);
    expect_pattern_only(disk, 0, 32 * 4096);
}

TEST(VirtioMsix, MaskedVectorIsPendingAndDeliveredOnUnmask) {
    TempImage img(1 << 20, "msix-mask.img");
    auto r = probe("blk-msix 2", img.path());
    ASSERT_FALSE(r.timed_out) << r.out << r.err;
    EXPECT_FALSE(sanitizer_report(r.err)) << r.err;
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    // masked_pending: completion in the used ring, PBA bit 0 set, no
    // interrupt; delivered_on_unmask: exactly one interrupt after clearing
    // the entry's mask bit, and the PBA bit clear again.
    EXPECT_TRUE(has_line(r.out, "PROBE-MSIX masked_pending=1 delivered_on_unmask=1")) << r.out;
    EXPECT_TRUE(has_line(r.out, "PROBE-DONE blk-msix requests=2 interrupts=2")) << r.out;
}

}  // namespace
}  // namespace popek::test
