// A 16550A-compatible UART (the 8250 family Linux's 8250 driver expects),
// output to a file descriptor, input fed by the VMM's event loop.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <span>
#include <vector>

#include "devices/bus.hpp"
#include "devices/guest_exit.hpp"

namespace popek::devices {

class Serial final : public BusDevice {
public:
    // Everything a snapshot needs to recreate the UART.
    struct State {
        uint8_t ier = 0, lcr = 0x03, mcr = 0, scr = 0, dll = 0x0c, dlm = 0, fcr = 0;
        bool thr_empty_pending = false;  // THRE interrupt raised and not yet acknowledged
        std::vector<uint8_t> rx;
    };

    // `out_fd` receives what the guest transmits (not owned); `irq` may be null.
    Serial(int out_fd, IrqLine* irq);
    Serial(int out_fd, IrqLine* irq, State state);

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // Queues bytes for the guest to receive (from the input thread).
    void receive(std::span<const uint8_t> bytes);
    [[nodiscard]] State save() const;

    static constexpr size_t kRxFifoMax = 4096;

private:
    uint8_t read_reg(uint64_t offset);
    void write_reg(uint64_t offset, uint8_t value);
    void transmit(uint8_t byte);
    void update_irq();
    [[nodiscard]] uint8_t iir() const;
    [[nodiscard]] uint8_t msr() const;
    [[nodiscard]] bool loopback() const { return (mcr_ & 0x10) != 0; }

    mutable std::mutex mu_;
    int out_fd_;
    IrqLine* irq_;
    uint8_t ier_, lcr_, mcr_, scr_, dll_, dlm_, fcr_;
    bool thr_empty_pending_;
    bool irq_level_ = false;
    std::deque<uint8_t> rx_;
};

}  // namespace popek::devices
