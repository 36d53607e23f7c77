// The one place that lists which instruction groups the engine implements.
#include "hv/emu/handlers.hpp"

namespace popek::hv::emu {

void register_handlers(HandlerTable& t) {
    register_alu(t);
    register_move(t);
    register_bits(t);
    register_flow(t);
    register_string(t);
    register_system(t);
    register_segment(t);
    register_interrupts(t);
    register_sse(t);
    register_x87(t);
}

}  // namespace popek::hv::emu
