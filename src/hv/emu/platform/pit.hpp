// Intel 8254 PIT at 0x40-0x43 (1.193182 MHz) plus the PC's port 0x61
// (bit 0: channel 2 gate, bit 1: speaker data, bit 4: refresh toggle,
// bit 5: channel 2 output). Modes 0-5, binary counting (BCD is stored and
// reported but counts in binary), counter latch, read-back, lobyte/hibyte/
// lohi access with the read/write flip-flops. Channel 0 drives IRQ0; channel
// 2's output is visible in port 0x61 (Linux's PIT TSC calibration polls it).
//
// Thread-safe. on_irq0 runs after the mutex is released: each channel-0
// interrupt is a pulse, on_irq0(true) then on_irq0(false) (the line rests
// low, like KVM's in-kernel PIT), so an edge-triggered PIC or IOAPIC pin
// sees one rising edge per interrupt.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <vector>

namespace popek::hv::emu::platform {

class Pit {
public:
    static constexpr uint64_t kHz = 1193182;

    Pit();

    // Ports 0x40-0x43 and 0x61; others read 0xff.
    uint8_t read(uint16_t port, uint64_t now_ns);
    void write(uint16_t port, uint8_t value, uint64_t now_ns);

    // Raises the channel-0 interrupt(s) due by now_ns.
    void tick(uint64_t now_ns);
    // Guest-clock time of channel 0's next interrupt, UINT64_MAX if none.
    [[nodiscard]] uint64_t next_event_ns() const;

    [[nodiscard]] std::vector<uint8_t> save() const;
    [[nodiscard]] bool restore(std::span<const uint8_t> blob);

    std::function<void(bool level)> on_irq0;

private:
    struct Channel {
        uint8_t mode = 0;
        uint8_t access = 3;  // 1 lobyte, 2 hibyte, 3 lohi
        bool bcd = false;
        uint32_t reload = 0x10000;  // programmed count, 0 means 0x10000
        bool loaded = false;        // a count was written since the control word
        bool counting = false;      // loaded and (modes 1/5) triggered by the gate
        uint64_t start_ns = 0;      // when counting (re)started
        uint64_t frozen_ticks = 0;  // ticks counted before the gate went low
        bool gate = true;
        bool write_hi_next = false;  // lohi write flip-flop
        bool read_hi_next = false;   // lohi read flip-flop (live reads)
        uint8_t write_lo = 0;
        bool null_count = true;
        bool latched = false;
        uint16_t latch_value = 0;
        bool latch_hi_next = false;
        bool status_latched = false;
        uint8_t status = 0;
        uint64_t next_irq_ns = UINT64_MAX;  // channel 0 only
    };

    uint64_t elapsed_ticks(const Channel& c, uint64_t now_ns) const;
    uint16_t count_at(const Channel& c, uint64_t now_ns) const;
    bool output_at(const Channel& c, uint64_t now_ns) const;
    void load_count(unsigned ch, uint32_t value, uint64_t now_ns);
    void schedule_irq(uint64_t now_ns);
    bool tick_locked(uint64_t now_ns);
    void set_gate(Channel& c, bool gate, uint64_t now_ns);
    uint8_t read_counter(Channel& c, uint64_t now_ns);
    void write_control(uint8_t value, uint64_t now_ns);
    uint8_t status_byte(const Channel& c, uint64_t now_ns) const;

    mutable std::mutex mu_;
    std::recursive_mutex notify_mu_;  // keeps on_irq0 pulses in order
    std::array<Channel, 3> ch_{};
    uint8_t port61_ = 0;  // bits 0-3 as written
};

}  // namespace popek::hv::emu::platform
