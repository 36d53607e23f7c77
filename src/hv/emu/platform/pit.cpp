// Stub bodies: the interface is final, the implementation follows.
#include "hv/emu/platform/pit.hpp"

namespace popek::hv::emu::platform {

Pit::Pit() = default;
uint8_t Pit::read(uint16_t, uint64_t) { return 0xff; }
void Pit::write(uint16_t, uint8_t, uint64_t) {}
void Pit::tick(uint64_t) {}
uint64_t Pit::next_event_ns() const { return UINT64_MAX; }
std::vector<uint8_t> Pit::save() const { return {}; }
bool Pit::restore(std::span<const uint8_t>) { return false; }

}  // namespace popek::hv::emu::platform
