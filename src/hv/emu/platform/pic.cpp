// Stub bodies: the interface is final, the implementation follows.
#include "hv/emu/platform/pic.hpp"

namespace popek::hv::emu::platform {

PicPair::PicPair() = default;
uint8_t PicPair::read(uint16_t) { return 0xff; }
void PicPair::write(uint16_t, uint8_t) {}
void PicPair::set_irq(unsigned, bool) {}
bool PicPair::output() const { return false; }
uint8_t PicPair::acknowledge() { return 0; }
std::vector<uint8_t> PicPair::save() const { return {}; }
bool PicPair::restore(std::span<const uint8_t>) { return false; }

}  // namespace popek::hv::emu::platform
