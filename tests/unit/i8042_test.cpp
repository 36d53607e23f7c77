#include "devices/legacy/i8042.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace popek::devices {
namespace {

constexpr uint64_t kData = 0;    // port 0x60
constexpr uint64_t kStatus = 4;  // port 0x64 (reads: status, writes: command)
constexpr uint8_t kObf = 0x01, kSystem = 0x04, kCmdFlag = 0x08;

class RecordingExits final : public ExitHandler {
public:
    void request_exit(GuestExit exit) override { exits.push_back(std::move(exit)); }
    std::vector<GuestExit> exits;
};

uint8_t rd(I8042& k, uint64_t off) {
    uint8_t b = 0x5a;
    k.read(off, std::span<uint8_t>(&b, 1));
    return b;
}
void wr(I8042& k, uint64_t off, uint8_t v) { k.write(off, std::span<const uint8_t>(&v, 1)); }

TEST(I8042, StatusAfterPowerOnHasSystemFlagAndEmptyOutput) {
    RecordingExits exits;
    I8042 k(exits);
    EXPECT_EQ(rd(k, kStatus), kSystem | kCmdFlag);
    EXPECT_EQ(rd(k, kData), 0);  // nothing to read: 0, and the status is unchanged
    EXPECT_EQ(rd(k, kStatus) & kObf, 0);
}

TEST(I8042, WideStatusReadZeroesTheUpperBytes) {
    RecordingExits exits;
    I8042 k(exits);
    uint8_t buf[2] = {0xee, 0xee};
    k.read(kStatus, buf);
    EXPECT_EQ(buf[0], kSystem | kCmdFlag);
    EXPECT_EQ(buf[1], 0);
}

TEST(I8042, SelfTestAnswers0x55OnTheDataPort) {
    RecordingExits exits;
    I8042 k(exits);
    wr(k, kStatus, 0xaa);
    EXPECT_EQ(rd(k, kStatus) & kObf, kObf);
    EXPECT_EQ(rd(k, kData), 0x55);
    EXPECT_EQ(rd(k, kStatus) & kObf, 0);  // the read emptied the output buffer
    EXPECT_TRUE(exits.exits.empty());
}

TEST(I8042, InterfaceTestsAnswer) {
    RecordingExits exits;
    I8042 k(exits);
    wr(k, kStatus, 0xab);  // keyboard interface test: ok
    wr(k, kStatus, 0xa9);  // aux interface test: no aux port
    EXPECT_EQ(rd(k, kData), 0x00);
    EXPECT_EQ(rd(k, kStatus) & kObf, kObf);
    EXPECT_EQ(rd(k, kData), 0xff);
    EXPECT_EQ(rd(k, kStatus) & kObf, 0);
}

TEST(I8042, ReadsAndWritesTheCommandByte) {
    RecordingExits exits;
    I8042 k(exits);
    wr(k, kStatus, 0x20);
    EXPECT_EQ(rd(k, kData), 0x45);  // translation, system flag, keyboard interrupt
    wr(k, kStatus, 0x60);
    EXPECT_EQ(rd(k, kStatus) & kObf, 0);  // 0x60 answers nothing
    wr(k, kData, 0x47);
    wr(k, kStatus, 0x20);
    EXPECT_EQ(rd(k, kData), 0x47);
}

TEST(I8042, DataWriteWithoutPendingCommandLeavesCommandByte) {
    RecordingExits exits;
    I8042 k(exits);
    wr(k, kStatus, 0x60);
    wr(k, kData, 0x10);
    wr(k, kData, 0xff);  // a keyboard command, not a second command-byte value
    wr(k, kStatus, 0x20);
    EXPECT_EQ(rd(k, kData), 0x10);
}

// Regression: a command written to port 0x64 once left a pending 0x60
// armed, so a later keyboard byte on port 0x60 became the command byte.
// A real 8042 drops the pending write when a new command arrives.
TEST(I8042, NewCommandCancelsAPendingCommandByteWrite) {
    RecordingExits exits;
    I8042 k(exits);
    wr(k, kStatus, 0x60);
    wr(k, kStatus, 0xaa);
    EXPECT_EQ(rd(k, kData), 0x55);
    wr(k, kData, 0xff);
    wr(k, kStatus, 0x20);
    EXPECT_EQ(rd(k, kData), 0x45);
}

TEST(I8042, OutputBufferIsBounded) {
    RecordingExits exits;
    I8042 k(exits);
    for (int i = 0; i < 40; i++) wr(k, kStatus, 0xaa);
    int n = 0;
    while ((rd(k, kStatus) & kObf) != 0 && n < 100) {
        EXPECT_EQ(rd(k, kData), 0x55);
        n++;
    }
    EXPECT_GT(n, 0);
    EXPECT_LE(n, 16);
}

TEST(I8042, ResetCommandRequestsExactlyOneResetExit) {
    RecordingExits exits;
    I8042 k(exits);
    wr(k, kStatus, 0xfe);
    ASSERT_EQ(exits.exits.size(), 1u);
    EXPECT_EQ(exits.exits[0].kind, GuestExitKind::Reset);
    EXPECT_NE(exits.exits[0].detail.find("i8042"), std::string::npos);
    // Nothing queued for the guest by the reset pulse.
    EXPECT_EQ(rd(k, kStatus) & kObf, 0);
}

TEST(I8042, OtherWritesNeverRequestAnExit) {
    RecordingExits exits;
    I8042 k(exits);
    wr(k, kData, 0xfe);  // 0xfe to the data port is a keyboard byte, not a reset
    for (int c = 0; c < 256; c++)
        if (c != 0xfe) wr(k, kStatus, static_cast<uint8_t>(c));
    uint8_t wide[2] = {0xfe, 0x00};
    k.write(kStatus - 1, wide);  // an offset the controller does not decode
    EXPECT_TRUE(exits.exits.empty());
}

TEST(I8042, RestoredControllerBehavesLikeTheOriginal) {
    RecordingExits exits;
    I8042 a(exits);
    wr(a, kStatus, 0x60);
    wr(a, kData, 0x61);
    wr(a, kStatus, 0xaa);  // one byte waiting
    wr(a, kStatus, 0x60);  // and a command-byte write waiting for its data

    I8042::State st = a.save();
    EXPECT_EQ(st.command_byte, 0x61);
    EXPECT_EQ(st.pending_command, 0x60);
    EXPECT_EQ(st.output, std::deque<uint8_t>({0x55}));

    I8042 b(exits, st);
    EXPECT_EQ(rd(b, kStatus), rd(a, kStatus));
    EXPECT_EQ(rd(b, kData), 0x55);
    EXPECT_EQ(rd(a, kData), 0x55);
    EXPECT_EQ(rd(b, kStatus), rd(a, kStatus));
    wr(a, kData, 0x03);  // completes the pending 0x60 in both
    wr(b, kData, 0x03);
    wr(a, kStatus, 0x20);
    wr(b, kStatus, 0x20);
    EXPECT_EQ(rd(b, kData), 0x03);
    EXPECT_EQ(rd(a, kData), 0x03);
    EXPECT_TRUE(exits.exits.empty());

    // The restored controller still resets through the handler it was given.
    RecordingExits other;
    I8042 c(other, b.save());
    wr(c, kStatus, 0xfe);
    EXPECT_EQ(other.exits.size(), 1u);
    EXPECT_TRUE(exits.exits.empty());
}

}  // namespace
}  // namespace popek::devices
