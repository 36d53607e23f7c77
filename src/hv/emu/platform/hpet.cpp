// Stub bodies: the interface is final, the implementation follows.
#include "hv/emu/platform/hpet.hpp"

namespace popek::hv::emu::platform {

Hpet::Hpet() = default;
uint64_t Hpet::read(uint32_t, unsigned, uint64_t) { return 0; }
void Hpet::write(uint32_t, uint64_t, unsigned, uint64_t) {}
void Hpet::tick(uint64_t) {}
uint64_t Hpet::next_event_ns() const { return UINT64_MAX; }
std::vector<uint8_t> Hpet::save() const { return {}; }
bool Hpet::restore(std::span<const uint8_t>) { return false; }

}  // namespace popek::hv::emu::platform
