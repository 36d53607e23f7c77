#include "devices/serial/serial.hpp"

#include <unistd.h>

#include <cerrno>

namespace popek::devices {

namespace {
// Register offsets.
constexpr uint64_t kData = 0, kIer = 1, kIir = 2, kLcr = 3, kMcr = 4, kLsr = 5, kMsr = 6, kScr = 7;
constexpr uint8_t kLcrDlab = 0x80;
constexpr uint8_t kIerRx = 0x01, kIerThre = 0x02;
constexpr uint8_t kIirNone = 0x01, kIirThre = 0x02, kIirRx = 0x04, kIirFifo = 0xc0;
constexpr uint8_t kLsrDr = 0x01, kLsrThre = 0x20, kLsrTemt = 0x40;
constexpr uint8_t kMcrDtr = 0x01, kMcrRts = 0x02, kMcrOut1 = 0x04, kMcrOut2 = 0x08;
constexpr uint8_t kMsrCts = 0x10, kMsrDsr = 0x20, kMsrRi = 0x40, kMsrDcd = 0x80;
}  // namespace

Serial::Serial(int out_fd, IrqLine* irq) : Serial(out_fd, irq, State{}) {}

Serial::Serial(int out_fd, IrqLine* irq, State s)
    : out_fd_(out_fd), irq_(irq), ier_(s.ier), lcr_(s.lcr), mcr_(s.mcr), scr_(s.scr), dll_(s.dll),
      dlm_(s.dlm), fcr_(s.fcr), thr_empty_pending_(s.thr_empty_pending), rx_(s.rx.begin(), s.rx.end()) {
    update_irq();  // a restored UART with an interrupt pending raises its line again
}

Serial::State Serial::save() const {
    std::lock_guard lock(mu_);
    return State{ier_, lcr_, mcr_, scr_, dll_, dlm_, fcr_, thr_empty_pending_,
                 std::vector<uint8_t>(rx_.begin(), rx_.end())};
}

void Serial::read(uint64_t offset, std::span<uint8_t> data) {
    if (data.empty()) return;
    std::lock_guard lock(mu_);
    // Wider accesses read the byte register and zero the rest, as ISA hardware does.
    for (auto& b : data) b = 0;
    data[0] = read_reg(offset);
    update_irq();
}

void Serial::write(uint64_t offset, std::span<const uint8_t> data) {
    if (data.empty()) return;
    std::lock_guard lock(mu_);
    write_reg(offset, data[0]);
    update_irq();
}

void Serial::receive(std::span<const uint8_t> bytes) {
    std::lock_guard lock(mu_);
    for (uint8_t b : bytes) {
        if (rx_.size() >= kRxFifoMax) break;  // a real UART would flag an overrun
        rx_.push_back(b);
    }
    update_irq();
}

uint8_t Serial::read_reg(uint64_t offset) {
    switch (offset) {
        case kData:
            if (lcr_ & kLcrDlab) return dll_;
            if (rx_.empty()) return 0;
            {
                uint8_t b = rx_.front();
                rx_.pop_front();
                return b;
            }
        case kIer: return (lcr_ & kLcrDlab) ? dlm_ : ier_;
        case kIir: {
            uint8_t v = iir();
            // Reading IIR acknowledges a THRE interrupt it reports.
            if ((v & 0x0f) == kIirThre) thr_empty_pending_ = false;
            return static_cast<uint8_t>(v | ((fcr_ & 0x01) ? kIirFifo : 0));
        }
        case kLcr: return lcr_;
        case kMcr: return mcr_;
        case kLsr: return static_cast<uint8_t>(kLsrThre | kLsrTemt | (rx_.empty() ? 0 : kLsrDr));
        case kMsr: return msr();
        case kScr: return scr_;
        default: return 0;
    }
}

void Serial::write_reg(uint64_t offset, uint8_t v) {
    switch (offset) {
        case kData:
            if (lcr_ & kLcrDlab) {
                dll_ = v;
                return;
            }
            if (loopback()) {
                if (rx_.size() < kRxFifoMax) rx_.push_back(v);
            } else {
                transmit(v);
            }
            thr_empty_pending_ = true;  // the byte left at once; THR is empty again
            return;
        case kIer:
            if (lcr_ & kLcrDlab) {
                dlm_ = v;
                return;
            }
            // Enabling THRE interrupts while THR is empty raises one at once.
            if ((v & kIerThre) && !(ier_ & kIerThre)) thr_empty_pending_ = true;
            ier_ = v & 0x0f;
            return;
        case kIir:  // FCR
            fcr_ = v;
            if (v & 0x02) rx_.clear();  // reset RX FIFO
            return;
        case kLcr: lcr_ = v; return;
        case kMcr: mcr_ = v & 0x1f; return;
        case kScr: scr_ = v; return;
        default: return;  // LSR and MSR are read-only
    }
}

uint8_t Serial::iir() const {
    if ((ier_ & kIerRx) && !rx_.empty()) return kIirRx;
    if ((ier_ & kIerThre) && thr_empty_pending_) return kIirThre;
    return kIirNone;
}

uint8_t Serial::msr() const {
    if (loopback()) {
        uint8_t v = 0;
        if (mcr_ & kMcrDtr) v |= kMsrDsr;
        if (mcr_ & kMcrRts) v |= kMsrCts;
        if (mcr_ & kMcrOut1) v |= kMsrRi;
        if (mcr_ & kMcrOut2) v |= kMsrDcd;
        return v;
    }
    return kMsrDcd | kMsrDsr | kMsrCts;  // a cable is always attached
}

void Serial::transmit(uint8_t byte) {
    // A full or broken sink drops output rather than stalling the vCPU forever.
    for (int tries = 0; tries < 100; tries++) {
        ssize_t n = ::write(out_fd_, &byte, 1);
        if (n == 1) return;
        if (n < 0 && errno != EINTR && errno != EAGAIN) return;
    }
}

void Serial::update_irq() {
    // OUT2 gates the interrupt line on PC-compatible UARTs.
    bool level = (iir() & kIirNone) == 0 && (mcr_ & kMcrOut2) != 0;
    if (level != irq_level_ && irq_ != nullptr) irq_->set_level(level);
    irq_level_ = level;
}

}  // namespace popek::devices
