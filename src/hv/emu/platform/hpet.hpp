// HPET (IA-PC HPET 1.0a) at 0xFED00000: a 64-bit main counter at 100 MHz and
// three comparators (timer 0 periodic-capable, all 64-bit capable, 32-bit
// mode), edge or level interrupts routed to IOAPIC pins 20-23, and the
// legacy replacement route (timer 0 -> IRQ0, timer 1 -> IRQ8) Linux uses for
// its `hpet` clockevent. No FSB (MSI) delivery.
//
// Thread-safe; on_irq runs after the mutex is released. It gets the line:
// with legacy replacement 0 (the PIT's line: PIC IRQ0, IOAPIC pin 2) and 8,
// otherwise the IOAPIC pin from Tn_INT_ROUTE_CNF. Edge interrupts are a
// pulse (true then false); level interrupts stay asserted until the guest
// clears the timer's bit in the general interrupt status register.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <vector>

namespace popek::hv::emu::platform {

class Hpet {
public:
    static constexpr uint64_t kDefaultBase = 0xfed00000;
    static constexpr uint64_t kHz = 100'000'000;
    static constexpr unsigned kTimers = 3;

    Hpet();

    // 4- or 8-byte accesses at naturally aligned offsets of the 1 KiB window
    // (others read 0 and ignore writes).
    uint64_t read(uint32_t offset, unsigned size, uint64_t now_ns);
    void write(uint32_t offset, uint64_t value, unsigned size, uint64_t now_ns);

    void tick(uint64_t now_ns);
    [[nodiscard]] uint64_t next_event_ns() const;

    [[nodiscard]] std::vector<uint8_t> save() const;
    [[nodiscard]] bool restore(std::span<const uint8_t> blob);

    std::function<void(unsigned line, bool level)> on_irq;

private:
    struct Timer {
        uint64_t config = 0;      // writable bits of Tn_CONF
        uint64_t comparator = 0;  // in counter ticks
        uint64_t period = 0;      // periodic mode
        uint64_t fire_ns = UINT64_MAX;
        bool asserted = false;    // level interrupt line
    };
    struct Effect {
        unsigned line;
        bool level;
    };

    uint64_t counter_at(uint64_t now_ns) const;
    uint64_t read64(uint32_t reg, uint64_t now_ns) const;
    void write64(uint32_t reg, uint64_t value, uint64_t mask, uint64_t now_ns, std::vector<Effect>& fx);
    void write_timer_config(unsigned n, uint64_t value, std::vector<Effect>& fx);
    void arm(unsigned n, uint64_t now_ns);
    void advance_periodic(unsigned n, uint64_t counter);
    unsigned line_of(unsigned n) const;
    void set_line(unsigned n, bool level, std::vector<Effect>& fx);
    void fire(unsigned n, std::vector<Effect>& fx);
    void deassert_all(std::vector<Effect>& fx);
    void reassert_all(std::vector<Effect>& fx);
    void run(const std::vector<Effect>& fx);

    mutable std::mutex mu_;
    std::recursive_mutex notify_mu_;  // keeps on_irq calls in order
    uint64_t config_ = 0;         // general configuration
    uint64_t isr_ = 0;            // general interrupt status
    uint64_t counter_base_ = 0;   // main counter when last started/written
    uint64_t counter_base_ns_ = 0;
    std::array<Timer, kTimers> timers_{};
};

}  // namespace popek::hv::emu::platform
