#include "hv/emu/platform/interrupt.hpp"

namespace popek::hv::emu::platform {

InterruptMessage decode_msi(uint64_t address, uint32_t data) {
    InterruptMessage m;
    m.dest = static_cast<uint32_t>((address >> 12) & 0xff);
    m.logical = (address >> 2) & 1;
    m.vector = static_cast<uint8_t>(data & 0xff);
    m.delivery_mode = static_cast<uint8_t>((data >> 8) & 7);
    m.level = (data >> 15) & 1;
    // Edge-triggered messages always assert; the level bit only matters
    // for level-triggered ones (SDM 11.11.2).
    m.assert = !m.level || ((data >> 14) & 1);
    return m;
}

}  // namespace popek::hv::emu::platform
