// The ACPI Generic Event Device (ACPI 6.3, section 5.6.9) of a hardware-
// reduced platform, with one event: the power button.
//
// One 32-bit register at offset 0 holds the pending events; a read returns
// them and clears the bits it returned. The interrupt line is high while any
// event is pending: a level-triggered interrupt (the DSDT's _EVT reads the
// register, which lowers the line), so an event raised before the guest has
// unmasked the interrupt is delivered when it does.
#pragma once

#include <cstdint>
#include <mutex>
#include <span>

#include "devices/bus.hpp"
#include "devices/guest_exit.hpp"

namespace popek::devices {

class Ged final : public BusDevice {
public:
    static constexpr uint32_t kEventPowerButton = 1u << 0;
    static constexpr uint64_t kRegisterBytes = 4;

    struct State {
        uint32_t pending = 0;  // events raised and not yet read by the guest
    };

    // `irq` may be null (no interrupt: the guest can only poll). A restored
    // State with events pending raises the line again. (Two constructors
    // rather than `State state = {}`: GCC cannot use State's member
    // initializers in a default argument inside the class that nests it.)
    explicit Ged(IrqLine* irq);
    Ged(IrqLine* irq, State state);

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;  // read-only: ignored

    // The host pressed the power button. Thread-safe: any thread.
    void press_power_button();
    [[nodiscard]] State save() const;

private:
    void update_irq();  // with mu_ held

    mutable std::mutex mu_;
    IrqLine* irq_;
    uint32_t pending_;
    bool irq_level_ = false;
};

}  // namespace popek::devices
