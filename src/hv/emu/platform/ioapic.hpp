// IOAPIC (82093AA, version 0x11, 24 pins) at 0xFEC00000: IOREGSEL at 0x00,
// IOWIN at 0x10; registers ID, version, arbitration and the redirection
// table. Edge pins deliver on a rising edge while unmasked; level pins
// deliver while asserted and set Remote-IRR until the LAPIC's EOI comes back
// through eoi(vector), which re-delivers if the line is still asserted.
// set_irq() takes the logical (asserted) state: polarity is the wiring's
// business, as with KVM's in-kernel IOAPIC.
//
// Thread-safe; the deliver callback runs after the mutex is released.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <vector>

#include "hv/emu/platform/interrupt.hpp"

namespace popek::hv::emu::platform {

class IoApic {
public:
    static constexpr uint64_t kDefaultBase = 0xfec00000;
    static constexpr unsigned kPins = 24;
    static constexpr uint32_t kVersion = 0x11;
    static constexpr uint32_t kRegSel = 0x00;
    static constexpr uint32_t kWindow = 0x10;

    explicit IoApic(std::function<void(const InterruptMessage&)> deliver);

    // 32-bit accesses at offset 0x00 (IOREGSEL) and 0x10 (IOWIN); other
    // offsets read 0 and ignore writes.
    uint32_t read(uint32_t offset);
    void write(uint32_t offset, uint32_t value);

    void set_irq(unsigned pin, bool level);  // pin >= 24 is ignored
    void eoi(uint8_t vector);

    // For tests and debugging: the 64-bit redirection entry of a pin.
    [[nodiscard]] uint64_t redirection(unsigned pin) const;

    [[nodiscard]] std::vector<uint8_t> save() const;
    [[nodiscard]] bool restore(std::span<const uint8_t> blob);

private:
    bool should_deliver(unsigned pin) const;
    InterruptMessage message(unsigned pin) const;
    void write_register(uint32_t index, uint32_t value, std::vector<InterruptMessage>& out);
    void service(unsigned pin, std::vector<InterruptMessage>& out);
    void run(const std::vector<InterruptMessage>& out);

    mutable std::mutex mu_;
    std::function<void(const InterruptMessage&)> deliver_;
    uint32_t id_ = 0;
    uint32_t regsel_ = 0;
    std::array<uint64_t, kPins> redir_{};
    uint32_t line_ = 0;  // asserted input lines, bit per pin
};

}  // namespace popek::hv::emu::platform
