#include "devices/serial/serial.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "base/unique_fd.hpp"

namespace popek::devices {
namespace {

// Register offsets and bits, spelled out here so the tests do not share the
// implementation's constants.
constexpr uint64_t kRbr = 0, kThr = 0, kDll = 0, kIer = 1, kDlm = 1, kIir = 2, kFcr = 2, kLcr = 3,
                   kMcr = 4, kLsr = 5, kMsr = 6, kScr = 7;
constexpr uint8_t kLsrDr = 0x01, kLsrThre = 0x20, kLsrTemt = 0x40;
constexpr uint8_t kIirNoInt = 0x01, kIirThri = 0x02, kIirRdi = 0x04;
constexpr uint8_t kIerRdi = 0x01, kIerThri = 0x02;
constexpr uint8_t kMcrDtr = 0x01, kMcrRts = 0x02, kMcrOut1 = 0x04, kMcrOut2 = 0x08, kMcrLoop = 0x10;
constexpr uint8_t kMsrCts = 0x10, kMsrDsr = 0x20, kMsrRi = 0x40, kMsrDcd = 0x80;

// Records every level the UART drives onto its interrupt line.
class FakeIrq final : public IrqLine {
public:
    void set_level(bool level) override { levels.push_back(level); }
    [[nodiscard]] bool level() const { return !levels.empty() && levels.back(); }
    std::vector<bool> levels;
};

// A non-blocking pipe standing in for the console.
struct Pipe {
    Pipe() {
        int fds[2];
        EXPECT_EQ(::pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
        rd.reset(fds[0]);
        wr.reset(fds[1]);
    }
    std::string drain() const {
        std::string out;
        char buf[256];
        for (;;) {
            ssize_t n = ::read(rd.get(), buf, sizeof buf);
            if (n <= 0) break;
            out.append(buf, static_cast<size_t>(n));
        }
        return out;
    }
    base::UniqueFd rd, wr;
};

uint8_t rd(Serial& s, uint64_t off) {
    uint8_t b = 0x5a;  // not a value any register below defaults to
    s.read(off, std::span<uint8_t>(&b, 1));
    return b;
}

void wr(Serial& s, uint64_t off, uint8_t v) { s.write(off, std::span<const uint8_t>(&v, 1)); }

void feed(Serial& s, const std::string& text) {
    s.receive(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

TEST(Serial, ThrWritesReachOutputFd) {
    Pipe p;
    Serial s(p.wr.get(), nullptr);
    for (char c : std::string("hello\r\n")) wr(s, kThr, static_cast<uint8_t>(c));
    EXPECT_EQ(p.drain(), "hello\r\n");
}

TEST(Serial, WideReadReturnsRegisterInLowByteAndZeroesTheRest) {
    Pipe p;
    Serial s(p.wr.get(), nullptr);
    uint8_t buf[4] = {0xee, 0xee, 0xee, 0xee};
    s.read(kLsr, buf);
    EXPECT_EQ(buf[0], kLsrThre | kLsrTemt);
    EXPECT_EQ(buf[1], 0);
    EXPECT_EQ(buf[2], 0);
    EXPECT_EQ(buf[3], 0);
}

TEST(Serial, LsrReportsTransmitterEmptyAndDataReady) {
    Pipe p;
    Serial s(p.wr.get(), nullptr);
    EXPECT_EQ(rd(s, kLsr), kLsrThre | kLsrTemt);  // idle: THR and shifter empty, nothing received
    wr(s, kThr, 'a');
    EXPECT_EQ(rd(s, kLsr), kLsrThre | kLsrTemt);  // the byte left at once

    feed(s, "xy");
    EXPECT_EQ(rd(s, kLsr), kLsrThre | kLsrTemt | kLsrDr);
    EXPECT_EQ(rd(s, kRbr), 'x');
    EXPECT_EQ(rd(s, kLsr) & kLsrDr, kLsrDr);  // one byte left
    EXPECT_EQ(rd(s, kRbr), 'y');
    EXPECT_EQ(rd(s, kLsr), kLsrThre | kLsrTemt);
    EXPECT_EQ(rd(s, kRbr), 0);  // reading an empty RBR yields 0 and changes nothing
    EXPECT_EQ(rd(s, kLsr), kLsrThre | kLsrTemt);
}

TEST(Serial, DlabSwitchesDivisorLatchAndDataRegisters) {
    Pipe p;
    Serial s(p.wr.get(), nullptr);
    wr(s, kIer, kIerRdi);
    feed(s, "r");

    wr(s, kLcr, 0x83);  // DLAB on, 8N1
    EXPECT_EQ(rd(s, kLcr), 0x83);
    EXPECT_EQ(rd(s, kDll), 0x0c);  // 9600 baud until the guest programs it
    EXPECT_EQ(rd(s, kDlm), 0x00);
    wr(s, kDll, 0x01);
    wr(s, kDlm, 0x02);
    EXPECT_EQ(rd(s, kDll), 0x01);
    EXPECT_EQ(rd(s, kDlm), 0x02);
    EXPECT_EQ(p.drain(), "");                   // a DLL write is not a transmitted byte
    EXPECT_EQ(rd(s, kLsr) & kLsrDr, kLsrDr);  // and a DLL read consumed nothing

    wr(s, kLcr, 0x03);  // DLAB off
    EXPECT_EQ(rd(s, kIer), kIerRdi);  // IER was untouched by the DLM write
    EXPECT_EQ(rd(s, kRbr), 'r');
    wr(s, kThr, 'z');
    EXPECT_EQ(p.drain(), "z");

    wr(s, kLcr, 0x83);  // the divisor survives a DLAB round trip
    EXPECT_EQ(rd(s, kDll), 0x01);
    EXPECT_EQ(rd(s, kDlm), 0x02);
}

TEST(Serial, IerKeepsOnlyItsFourDefinedBits) {
    Pipe p;
    Serial s(p.wr.get(), nullptr);
    wr(s, kIer, 0xff);
    EXPECT_EQ(rd(s, kIer), 0x0f);
}

TEST(Serial, ScratchRegisterHoldsWhatWasWritten) {
    Pipe p;
    Serial s(p.wr.get(), nullptr);
    EXPECT_EQ(rd(s, kScr), 0);
    wr(s, kScr, 0xa5);
    EXPECT_EQ(rd(s, kScr), 0xa5);
    wr(s, kScr, 0x5a);
    EXPECT_EQ(rd(s, kScr), 0x5a);
}

TEST(Serial, LsrAndMsrIgnoreWrites) {
    Pipe p;
    Serial s(p.wr.get(), nullptr);
    wr(s, kLsr, 0x00);
    wr(s, kMsr, 0x00);
    EXPECT_EQ(rd(s, kLsr), kLsrThre | kLsrTemt);
    EXPECT_EQ(rd(s, kMsr), kMsrDcd | kMsrDsr | kMsrCts);
}

TEST(Serial, LoopbackReturnsThrBytesOnRbrAndTransmitsNothing) {
    Pipe p;
    Serial s(p.wr.get(), nullptr);
    wr(s, kMcr, kMcrLoop);
    EXPECT_EQ(rd(s, kMcr), kMcrLoop);
    wr(s, kThr, 0x42);
    wr(s, kThr, 0x43);
    EXPECT_EQ(p.drain(), "");
    EXPECT_EQ(rd(s, kLsr) & kLsrDr, kLsrDr);
    EXPECT_EQ(rd(s, kRbr), 0x42);
    EXPECT_EQ(rd(s, kRbr), 0x43);
    EXPECT_EQ(rd(s, kLsr) & kLsrDr, 0);

    wr(s, kMcr, 0);  // out of loopback, bytes go to the wire again
    wr(s, kThr, 'k');
    EXPECT_EQ(p.drain(), "k");
    EXPECT_EQ(rd(s, kLsr) & kLsrDr, 0);
}

TEST(Serial, MsrMirrorsMcrInLoopbackAndShowsACableOtherwise) {
    Pipe p;
    Serial s(p.wr.get(), nullptr);
    // Outside loopback: carrier, data-set-ready and clear-to-send, no ring.
    EXPECT_EQ(rd(s, kMsr), kMsrDcd | kMsrDsr | kMsrCts);

    // In loopback a 16550 wires DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
    wr(s, kMcr, kMcrLoop);
    EXPECT_EQ(rd(s, kMsr), 0);
    wr(s, kMcr, kMcrLoop | kMcrDtr);
    EXPECT_EQ(rd(s, kMsr), kMsrDsr);
    wr(s, kMcr, kMcrLoop | kMcrRts);
    EXPECT_EQ(rd(s, kMsr), kMsrCts);
    wr(s, kMcr, kMcrLoop | kMcrOut1);
    EXPECT_EQ(rd(s, kMsr), kMsrRi);
    wr(s, kMcr, kMcrLoop | kMcrOut2);
    EXPECT_EQ(rd(s, kMsr), kMsrDcd);
    wr(s, kMcr, kMcrLoop | kMcrDtr | kMcrRts | kMcrOut1 | kMcrOut2);
    EXPECT_EQ(rd(s, kMsr), kMsrCts | kMsrDsr | kMsrRi | kMsrDcd);
}

TEST(Serial, McrKeepsOnlyItsFiveDefinedBits) {
    Pipe p;
    Serial s(p.wr.get(), nullptr);
    wr(s, kMcr, 0xff);
    EXPECT_EQ(rd(s, kMcr), 0x1f);
}

TEST(Serial, IirReportsNoInterruptWhenIdle) {
    Pipe p;
    Serial s(p.wr.get(), nullptr);
    EXPECT_EQ(rd(s, kIir), kIirNoInt);
    feed(s, "a");  // data, but the RX interrupt is not enabled
    wr(s, kThr, 'b');
    EXPECT_EQ(rd(s, kIir), kIirNoInt);
}

TEST(Serial, IirPrioritizesReceivedDataOverThre) {
    Pipe p;
    Serial s(p.wr.get(), nullptr);
    wr(s, kIer, kIerRdi | kIerThri);  // enabling THRI makes THRE pending at once
    feed(s, "ab");
    EXPECT_EQ(rd(s, kIir), kIirRdi);
    // Reading IIR while it reports RX data must not acknowledge the THRE
    // interrupt hidden behind it.
    EXPECT_EQ(rd(s, kIir), kIirRdi);
    EXPECT_EQ(rd(s, kRbr), 'a');
    EXPECT_EQ(rd(s, kIir), kIirRdi);  // still one byte
    EXPECT_EQ(rd(s, kRbr), 'b');
    EXPECT_EQ(rd(s, kIir), kIirThri);  // now the THRE interrupt shows, and this read acknowledges it
    EXPECT_EQ(rd(s, kIir), kIirNoInt);
}

TEST(Serial, IirReadAcknowledgesThreAndThrWriteRearmsIt) {
    Pipe p;
    Serial s(p.wr.get(), nullptr);
    wr(s, kIer, kIerThri);
    EXPECT_EQ(rd(s, kIir), kIirThri);
    EXPECT_EQ(rd(s, kIir), kIirNoInt);
    wr(s, kThr, 'x');  // the byte leaves at once: THR empty again
    EXPECT_EQ(rd(s, kIir), kIirThri);
    EXPECT_EQ(rd(s, kIir), kIirNoInt);
    // Writing IER with THRI already enabled is not a new 0->1 edge.
    wr(s, kIer, kIerThri);
    EXPECT_EQ(rd(s, kIir), kIirNoInt);
    // Disabling and re-enabling it is.
    wr(s, kIer, 0);
    wr(s, kIer, kIerThri);
    EXPECT_EQ(rd(s, kIir), kIirThri);
}

TEST(Serial, IirShowsFifoBitsWhenFifosAreEnabled) {
    Pipe p;
    Serial s(p.wr.get(), nullptr);
    wr(s, kFcr, 0x01);
    EXPECT_EQ(rd(s, kIir), 0xc0 | kIirNoInt);
    wr(s, kIer, kIerThri);
    EXPECT_EQ(rd(s, kIir), 0xc0 | kIirThri);  // the acknowledgment still applies with the FIFO bits set
    EXPECT_EQ(rd(s, kIir), 0xc0 | kIirNoInt);
    wr(s, kFcr, 0x00);
    EXPECT_EQ(rd(s, kIir), kIirNoInt);
}

TEST(Serial, EnablingThreInterruptRaisesTheLineAtOnce) {
    Pipe p;
    FakeIrq irq;
    Serial s(p.wr.get(), &irq);
    wr(s, kMcr, kMcrOut2);
    EXPECT_TRUE(irq.levels.empty());
    wr(s, kIer, kIerThri);
    ASSERT_EQ(irq.levels, std::vector<bool>({true}));
    EXPECT_EQ(rd(s, kIir), kIirThri);  // the acknowledging read drops the line
    EXPECT_EQ(irq.levels, std::vector<bool>({true, false}));
}

TEST(Serial, IrqLineChangesOnlyOnTransitionsAndIsGatedByOut2) {
    Pipe p;
    FakeIrq irq;
    Serial s(p.wr.get(), &irq);
    wr(s, kIer, kIerRdi);
    feed(s, "abc");
    EXPECT_TRUE(irq.levels.empty()) << "OUT2 clear: the line must stay low";
    EXPECT_EQ(rd(s, kIir), kIirRdi);  // the interrupt is pending inside the UART nonetheless

    wr(s, kMcr, kMcrOut2);
    EXPECT_EQ(irq.levels, std::vector<bool>({true}));
    // Accesses that leave the interrupt pending do not touch the line again.
    (void)rd(s, kLsr);
    (void)rd(s, kIir);
    wr(s, kScr, 1);
    feed(s, "d");
    EXPECT_EQ(rd(s, kRbr), 'a');
    EXPECT_EQ(irq.levels, std::vector<bool>({true}));

    wr(s, kMcr, 0);  // OUT2 off gates the pending interrupt
    EXPECT_EQ(irq.levels, std::vector<bool>({true, false}));
    wr(s, kMcr, kMcrOut2 | kMcrDtr | kMcrRts);
    EXPECT_EQ(irq.levels, std::vector<bool>({true, false, true}));

    EXPECT_EQ(rd(s, kRbr), 'b');
    EXPECT_EQ(rd(s, kRbr), 'c');
    EXPECT_EQ(irq.levels, std::vector<bool>({true, false, true}));
    EXPECT_EQ(rd(s, kRbr), 'd');  // FIFO empty: the RX interrupt ends
    EXPECT_EQ(irq.levels, std::vector<bool>({true, false, true, false}));

    feed(s, "e");  // input from the host raises it again
    EXPECT_EQ(irq.levels, std::vector<bool>({true, false, true, false, true}));
    wr(s, kIer, 0);  // and masking it in IER lowers it
    EXPECT_EQ(irq.levels, std::vector<bool>({true, false, true, false, true, false}));
}

TEST(Serial, ReceiveQueuesBytesInOrderAndDropsBeyondFifoMax) {
    Pipe p;
    Serial s(p.wr.get(), nullptr);
    std::vector<uint8_t> in(Serial::kRxFifoMax + 100);
    for (size_t i = 0; i < in.size(); i++) in[i] = static_cast<uint8_t>(i * 7);
    s.receive(std::span<const uint8_t>(in.data(), 10));  // in two pieces: the limit is on the queue
    s.receive(std::span<const uint8_t>(in).subspan(10));
    uint8_t extra = 0xee;
    s.receive(std::span<const uint8_t>(&extra, 1));  // a full FIFO takes nothing more
    for (size_t i = 0; i < Serial::kRxFifoMax; i++) {
        ASSERT_EQ(rd(s, kLsr) & kLsrDr, kLsrDr) << "byte " << i;
        ASSERT_EQ(rd(s, kRbr), in[i]) << "byte " << i;
    }
    EXPECT_EQ(rd(s, kLsr) & kLsrDr, 0);
    // Room again: new input is accepted.
    s.receive(std::span<const uint8_t>(&extra, 1));
    EXPECT_EQ(rd(s, kRbr), 0xee);
}

TEST(Serial, LoopbackAlsoStopsAtFifoMax) {
    Pipe p;
    Serial s(p.wr.get(), nullptr);
    wr(s, kMcr, kMcrLoop);
    for (size_t i = 0; i < Serial::kRxFifoMax + 5; i++) wr(s, kThr, static_cast<uint8_t>(i));
    EXPECT_EQ(s.save().rx.size(), Serial::kRxFifoMax);
    EXPECT_EQ(p.drain(), "");
}

TEST(Serial, FcrRxResetEmptiesTheFifoAndDropsTheInterrupt) {
    Pipe p;
    FakeIrq irq;
    Serial s(p.wr.get(), &irq);
    wr(s, kMcr, kMcrOut2);
    wr(s, kIer, kIerRdi);
    feed(s, "abc");
    ASSERT_TRUE(irq.level());
    wr(s, kFcr, 0x01);  // FIFO enable alone keeps the data
    EXPECT_EQ(rd(s, kLsr) & kLsrDr, kLsrDr);
    wr(s, kFcr, 0x03);  // enable + RX reset
    EXPECT_EQ(rd(s, kLsr) & kLsrDr, 0);
    EXPECT_EQ(rd(s, kRbr), 0);
    EXPECT_FALSE(irq.level());
    EXPECT_EQ(rd(s, kIir), 0xc0 | kIirNoInt);
}

// Puts a UART into a state with every register off its default.
void program(Serial& s) {
    wr(s, kLcr, 0x80);
    wr(s, kDll, 0x01);
    wr(s, kDlm, 0x02);
    wr(s, kLcr, 0x1b);  // 8E1, DLAB off
    wr(s, kIer, kIerRdi | kIerThri);  // THRE pending, not acknowledged
    wr(s, kMcr, kMcrOut2 | kMcrDtr | kMcrRts);
    wr(s, kScr, 0x77);
    wr(s, kFcr, 0x01);
    feed(s, "pending");
}

TEST(Serial, SaveCapturesEveryRegister) {
    Pipe p;
    Serial s(p.wr.get(), nullptr);
    Serial::State fresh = s.save();
    EXPECT_EQ(fresh.ier, 0);
    EXPECT_EQ(fresh.lcr, 0x03);
    EXPECT_EQ(fresh.mcr, 0);
    EXPECT_EQ(fresh.scr, 0);
    EXPECT_EQ(fresh.dll, 0x0c);
    EXPECT_EQ(fresh.dlm, 0);
    EXPECT_FALSE(fresh.thr_empty_pending);
    EXPECT_TRUE(fresh.rx.empty());

    program(s);
    Serial::State st = s.save();
    EXPECT_EQ(st.ier, kIerRdi | kIerThri);
    EXPECT_EQ(st.lcr, 0x1b);
    EXPECT_EQ(st.mcr, kMcrOut2 | kMcrDtr | kMcrRts);
    EXPECT_EQ(st.scr, 0x77);
    EXPECT_EQ(st.dll, 0x01);
    EXPECT_EQ(st.dlm, 0x02);
    EXPECT_EQ(st.fcr, 0x01);
    EXPECT_TRUE(st.thr_empty_pending);
    EXPECT_EQ(st.rx, std::vector<uint8_t>({'p', 'e', 'n', 'd', 'i', 'n', 'g'}));
}

TEST(Serial, RestoredUartBehavesLikeTheOriginal) {
    Pipe p1, p2;
    Serial a(p1.wr.get(), nullptr);
    program(a);
    Serial b(p2.wr.get(), nullptr, a.save());

    // Read-only and plain registers first (these reads have no side effects).
    for (uint64_t off : {kIer, kLcr, kMcr, kLsr, kMsr, kScr})
        EXPECT_EQ(rd(b, off), rd(a, off)) << "register " << off;
    // Divisor latch.
    wr(a, kLcr, 0x9b);
    wr(b, kLcr, 0x9b);
    EXPECT_EQ(rd(b, kDll), rd(a, kDll));
    EXPECT_EQ(rd(b, kDlm), rd(a, kDlm));
    wr(a, kLcr, 0x1b);
    wr(b, kLcr, 0x1b);
    // The pending RX bytes, in order, then the THRE interrupt that waited behind them.
    for (int i = 0; i < 7; i++) {
        SCOPED_TRACE(i);
        EXPECT_EQ(rd(b, kIir), rd(a, kIir));
        EXPECT_EQ(rd(b, kLsr), rd(a, kLsr));
        EXPECT_EQ(rd(b, kRbr), rd(a, kRbr));
    }
    EXPECT_EQ(rd(b, kIir), 0xc0 | kIirThri);
    EXPECT_EQ(rd(a, kIir), 0xc0 | kIirThri);
    EXPECT_EQ(rd(b, kIir), 0xc0 | kIirNoInt);
    EXPECT_EQ(rd(a, kIir), 0xc0 | kIirNoInt);
    // And it transmits to its own fd.
    wr(b, kThr, 'q');
    EXPECT_EQ(p2.drain(), "q");
    EXPECT_EQ(p1.drain(), "");
}

// Regression: the restoring constructor once left irq_level_ false whatever
// the state said and never drove the line, so a UART restored with an
// interrupt pending neither asserted its line nor, once the guest drained
// the FIFO, lowered a line the interrupt controller had restored as high.
TEST(Serial, RestoredUartDrivesItsInterruptLineFromTheState) {
    Pipe p1, p2;
    FakeIrq irq_a, irq_b;
    Serial a(p1.wr.get(), &irq_a);
    wr(a, kMcr, kMcrOut2);
    wr(a, kIer, kIerRdi);
    feed(a, "z");
    ASSERT_TRUE(irq_a.level());

    Serial b(p2.wr.get(), &irq_b, a.save());
    EXPECT_TRUE(irq_b.level()) << "restored with RX data pending, the line must be asserted";
    EXPECT_EQ(rd(b, kRbr), 'z');
    EXPECT_EQ(rd(a, kRbr), 'z');
    EXPECT_FALSE(irq_a.level());
    ASSERT_FALSE(irq_b.levels.empty()) << "draining the FIFO must lower the line";
    EXPECT_FALSE(irq_b.levels.back());
}

}  // namespace
}  // namespace popek::devices
