// The two cascaded 8259A PICs of a PC: master at 0x20/0x21, slave at
// 0xA0/0xA1 on the master's IR2, edge/level control (ELCR) at 0x4D0/0x4D1.
// ICW1-ICW4, OCW1 (mask), OCW2 (non-specific/specific EOI, rotations, set
// priority), OCW3 (IRR/ISR read select, poll, special mask mode), auto-EOI,
// special fully nested mode, and spurious IRQ7/IRQ15 on acknowledge as the
// hardware gives them.
//
// Thread-safe; on_output runs after the mutex is released and reports the
// INTR line's current value each time it changes (never out of order).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <vector>

namespace popek::hv::emu::platform {

class PicPair {
public:
    PicPair();

    // Ports 0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1; others read 0xff.
    uint8_t read(uint16_t port);
    void write(uint16_t port, uint8_t value);
    // IRQ line 0..15 (ISA numbering); edge mode latches a rising edge,
    // level mode (ELCR) follows the line.
    void set_irq(unsigned irq, bool level);

    // The master's INTR output (to the BSP's LINT0).
    [[nodiscard]] bool output() const;
    // INTA cycle: returns the vector and updates IRR/ISR; with nothing
    // pending (the request went away), the spurious IRQ7 (or IRQ15 through
    // the cascade) vector with no ISR bit set.
    uint8_t acknowledge();

    [[nodiscard]] std::vector<uint8_t> save() const;
    [[nodiscard]] bool restore(std::span<const uint8_t> blob);

    std::function<void(bool)> on_output;

private:
    struct Chip {
        uint8_t irr = 0;
        uint8_t isr = 0;
        uint8_t imr = 0;
        uint8_t line = 0;  // input line levels (edge detection)
        uint8_t elcr = 0;
        uint8_t elcr_mask = 0;
        uint8_t vector_base = 0;
        uint8_t lowest_priority = 7;  // IR with the lowest priority
        uint8_t init_step = 0;        // 0 ready, 1 expect ICW2, 2 ICW3, 3 ICW4
        bool icw4_needed = false;
        bool single = false;
        bool auto_eoi = false;
        bool rotate_on_aeoi = false;
        bool special_mask = false;
        bool special_fully_nested = false;
        bool read_isr = false;
        bool poll = false;
    };

    static int priority(const Chip& c, uint8_t mask_bits);
    int pending_irq(const Chip& c, bool is_master) const;
    void set_line(Chip& c, unsigned pin, bool level);
    void update_cascade();
    void write_chip(Chip& c, bool is_master, unsigned a0, uint8_t value);
    uint8_t read_chip(Chip& c, bool is_master, unsigned a0);
    uint8_t ack_chip(Chip& c, int irq);
    uint8_t poll_chip(Chip& c, bool is_master);
    void eoi_chip(Chip& c, int irq, bool rotate);
    void notify();

    mutable std::mutex mu_;
    std::recursive_mutex notify_mu_;  // serializes on_output calls
    Chip chips_[2];          // [0] master, [1] slave
    bool notified_output_ = false;
};

}  // namespace popek::hv::emu::platform
