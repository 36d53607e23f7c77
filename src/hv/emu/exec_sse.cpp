// SSE/SSE2 data movement: 128-bit moves, MOVD/MOVQ, scalar MOVSS/MOVSD,
// half moves, and the MOVSD/CMPSD mnemonics shared with string instructions.
#include "hv/emu/sse.hpp"

namespace popek::hv::emu {

Flow exec_cmpsd_sse(Engine& e, const Insn& i);  // exec_sse_fp.cpp
void register_sse_int(HandlerTable& t);
void register_sse_fp(HandlerTable& t);
void register_fpu(HandlerTable& t);

namespace {

using sse::available;

template <bool aligned>
Flow mov128(Engine& e, const Insn& i) {
    if (!available(e)) return Flow::Fault;
    Xmm v;
    if (!sse::read(e, i, i.op[1], v, aligned)) return Flow::Fault;
    return sse::write(e, i, i.op[0], v, aligned) ? Flow::Next : Flow::Fault;
}

// MOVD/MOVQ: the low 32/64 bits between XMM, GPR and memory; into XMM the rest is cleared.
template <unsigned bytes>
Flow mov_low(Engine& e, const Insn& i) {
    if (!available(e)) return Flow::Fault;
    const Operand& d = i.op[0];
    if (d.kind == OpKind::Mmx || i.op[1].kind == OpKind::Mmx) {
        e.note_unimplemented(i.mnemonic);
        return e.raise(kVecUD);
    }
    Xmm v;
    if (!sse::read(e, i, i.op[1], v)) return Flow::Fault;
    const uint64_t lo = bytes == 8 ? v.lo : v.lo & 0xffffffffULL;
    if (d.kind == OpKind::Xmm) {
        e.s.xmm[d.reg] = Xmm{lo, 0};
        return Flow::Next;
    }
    return sse::write(e, i, d, Xmm{lo, 0}) ? Flow::Next : Flow::Fault;
}

// MOVSS/MOVSD: from memory the rest is cleared, between registers it is kept.
template <unsigned bytes>
Flow mov_scalar(Engine& e, const Insn& i) {
    if (!available(e)) return Flow::Fault;
    const Operand& d = i.op[0];
    const Operand& s = i.op[1];
    const uint64_t m = bytes == 8 ? ~0ULL : 0xffffffffULL;
    Xmm v;
    if (!sse::read(e, i, s, v)) return Flow::Fault;
    if (d.kind == OpKind::Xmm && s.kind == OpKind::Xmm) {
        Xmm& x = e.s.xmm[d.reg];
        x.lo = (x.lo & ~m) | (v.lo & m);
        return Flow::Next;
    }
    if (d.kind == OpKind::Xmm) {
        e.s.xmm[d.reg] = Xmm{v.lo & m, 0};
        return Flow::Next;
    }
    return sse::write(e, i, d, v) ? Flow::Next : Flow::Fault;
}

Flow exec_movsd(Engine& e, const Insn& i) {
    if (i.opcode == 0xa5) return exec_string_movsd(e, i);
    return mov_scalar<8>(e, i);
}

Flow exec_cmpsd(Engine& e, const Insn& i) {
    if (i.opcode == 0xa7) return exec_string_cmpsd(e, i);
    return exec_cmpsd_sse(e, i);
}

// MOVHPS/MOVHPD (high) and MOVLPS/MOVLPD (low): one 64-bit half to or from memory.
template <bool high>
Flow mov_half(Engine& e, const Insn& i) {
    if (!available(e)) return Flow::Fault;
    const Operand& d = i.op[0];
    Xmm v;
    if (!sse::read(e, i, i.op[1], v)) return Flow::Fault;
    if (d.kind == OpKind::Xmm) {
        (high ? e.s.xmm[d.reg].hi : e.s.xmm[d.reg].lo) = v.lo;
        return Flow::Next;
    }
    return sse::write(e, i, d, Xmm{high ? v.hi : v.lo, 0}) ? Flow::Next : Flow::Fault;
}

Flow exec_movhlps(Engine& e, const Insn& i) {
    if (!available(e)) return Flow::Fault;
    e.s.xmm[i.op[0].reg].lo = e.s.xmm[i.op[1].reg].hi;
    return Flow::Next;
}

Flow exec_movlhps(Engine& e, const Insn& i) {
    if (!available(e)) return Flow::Fault;
    e.s.xmm[i.op[0].reg].hi = e.s.xmm[i.op[1].reg].lo;
    return Flow::Next;
}

}  // namespace

void register_sse(HandlerTable& t) {
    for (ZydisMnemonic m : {ZYDIS_MNEMONIC_MOVDQA, ZYDIS_MNEMONIC_MOVAPS, ZYDIS_MNEMONIC_MOVAPD,
                            ZYDIS_MNEMONIC_MOVNTDQ, ZYDIS_MNEMONIC_MOVNTPS, ZYDIS_MNEMONIC_MOVNTPD}) {
        t.set(m, mov128<true>);
    }
    for (ZydisMnemonic m : {ZYDIS_MNEMONIC_MOVDQU, ZYDIS_MNEMONIC_MOVUPS, ZYDIS_MNEMONIC_MOVUPD}) t.set(m, mov128<false>);
    t.set(ZYDIS_MNEMONIC_MOVD, mov_low<4>);
    t.set(ZYDIS_MNEMONIC_MOVQ, mov_low<8>);
    t.set(ZYDIS_MNEMONIC_MOVSS, mov_scalar<4>);
    t.set(ZYDIS_MNEMONIC_MOVSD, exec_movsd);
    t.set(ZYDIS_MNEMONIC_CMPSD, exec_cmpsd);
    t.set(ZYDIS_MNEMONIC_MOVHPS, mov_half<true>);
    t.set(ZYDIS_MNEMONIC_MOVHPD, mov_half<true>);
    t.set(ZYDIS_MNEMONIC_MOVLPS, mov_half<false>);
    t.set(ZYDIS_MNEMONIC_MOVLPD, mov_half<false>);
    t.set(ZYDIS_MNEMONIC_MOVHLPS, exec_movhlps);
    t.set(ZYDIS_MNEMONIC_MOVLHPS, exec_movlhps);
    register_sse_int(t);
    register_sse_fp(t);
    register_fpu(t);
}

}  // namespace popek::hv::emu
