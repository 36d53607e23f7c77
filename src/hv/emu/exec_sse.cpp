// SSE/SSE2 moves and integer operations, MXCSR, FXSAVE/FXRSTOR and the x87
// control instructions.
#include "hv/emu/handlers.hpp"

namespace popek::hv::emu {

namespace {

Flow exec_movsd(Engine& e, const Insn& i) {
    if (i.opcode == 0xa5) return exec_string_movsd(e, i);
    e.note_unimplemented(i.mnemonic);
    return e.raise(kVecUD);
}

Flow exec_cmpsd(Engine& e, const Insn& i) {
    if (i.opcode == 0xa7) return exec_string_cmpsd(e, i);
    e.note_unimplemented(i.mnemonic);
    return e.raise(kVecUD);
}

}  // namespace

void register_sse(HandlerTable& t) {
    t.set(ZYDIS_MNEMONIC_MOVSD, exec_movsd);
    t.set(ZYDIS_MNEMONIC_CMPSD, exec_cmpsd);
}

}  // namespace popek::hv::emu
