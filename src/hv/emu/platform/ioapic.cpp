// Stub bodies: the interface is final, the implementation follows.
#include "hv/emu/platform/ioapic.hpp"

namespace popek::hv::emu::platform {

IoApic::IoApic(std::function<void(const InterruptMessage&)> deliver) : deliver_(std::move(deliver)) {}
uint32_t IoApic::read(uint32_t) { return 0; }
void IoApic::write(uint32_t, uint32_t) {}
void IoApic::set_irq(unsigned, bool) {}
void IoApic::eoi(uint8_t) {}
uint64_t IoApic::redirection(unsigned) const { return 0; }
std::vector<uint8_t> IoApic::save() const { return {}; }
bool IoApic::restore(std::span<const uint8_t>) { return false; }

}  // namespace popek::hv::emu::platform
