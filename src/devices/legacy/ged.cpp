#include "devices/legacy/ged.hpp"

namespace popek::devices {

Ged::Ged(IrqLine* irq) : Ged(irq, State{}) {}

Ged::Ged(IrqLine* irq, State state) : irq_(irq), pending_(state.pending) {
    std::lock_guard lock(mu_);
    update_irq();
}

void Ged::read(uint64_t offset, std::span<uint8_t> data) {
    std::lock_guard lock(mu_);
    uint32_t returned = 0;  // the bits this access covers: only those are cleared
    for (size_t i = 0; i < data.size(); ++i) {
        data[i] = 0;
        if (offset >= kRegisterBytes || i >= kRegisterBytes - offset) continue;
        const uint64_t shift = 8 * (offset + i);
        data[i] = static_cast<uint8_t>(pending_ >> shift);
        returned |= uint32_t{0xff} << shift;
    }
    pending_ &= ~returned;
    update_irq();
}

void Ged::write(uint64_t, std::span<const uint8_t>) {}

void Ged::press_power_button() {
    std::lock_guard lock(mu_);
    pending_ |= kEventPowerButton;
    update_irq();
}

Ged::State Ged::save() const {
    std::lock_guard lock(mu_);
    return State{pending_};
}

void Ged::update_irq() {
    // Under the lock, so the line's changes reach the interrupt controller
    // in the order the register changed.
    const bool level = pending_ != 0;
    if (level != irq_level_ && irq_ != nullptr) irq_->set_level(level);
    irq_level_ = level;
}

}  // namespace popek::devices
