// FXSAVE/FXRSTOR, LDMXCSR/STMXCSR and the x87 control instructions
// (FNINIT, FLDCW, FNSTCW, FNSTSW, FNCLEX, FWAIT). x87 arithmetic and the
// environment instructions are in exec_x87.cpp.
#include "hv/emu/sse.hpp"

namespace popek::hv::emu {

namespace {

constexpr uint32_t kMxcsrMask = 0xffbf;  // DAZ not supported

// x87 instructions: #NM with CR0.EM or CR0.TS.
bool x87_available(Engine& e) {
    if ((e.s.cr0 & (cr0::EM | cr0::TS)) != 0) {
        e.raise(kVecNM);
        return false;
    }
    return true;
}

template <bool wide>
Flow exec_fxsave(Engine& e, const Insn& i) {
    if (!sse::available(e)) return Flow::Fault;
    const Operand& m = i.op[0];
    const uint64_t off = e.ea(i, m);
    if ((off & 15) != 0) return e.raise(kVecGP, 0);
    const X87& f = e.s.x87;
    uint8_t area[512] = {};
    const auto put = [&area](size_t at, const void* p, size_t n) { std::memcpy(area + at, p, n); };
    put(0, &f.fcw, 2);
    put(2, &f.fsw, 2);
    put(4, &f.ftw, 1);
    put(6, &f.fop, 2);
    if (wide) {
        put(8, &f.fip, 8);
        put(16, &f.fdp, 8);
    } else {
        put(8, &f.fip, 4);
        put(16, &f.fdp, 4);
    }
    put(24, &e.s.mxcsr, 4);
    put(28, &kMxcsrMask, 4);
    for (size_t k = 0; k < 8; ++k) put(32 + k * 16, f.st[k].data(), 10);
    const size_t regs = in_64bit_code(e.s) ? 16 : 8;
    for (size_t k = 0; k < regs; ++k) put(160 + k * 16, &e.s.xmm[k], 16);
    return e.write_bytes(m.seg, off, area, sizeof area) ? Flow::Next : Flow::Fault;
}

template <bool wide>
Flow exec_fxrstor(Engine& e, const Insn& i) {
    if (!sse::available(e)) return Flow::Fault;
    const Operand& m = i.op[0];
    const uint64_t off = e.ea(i, m);
    if ((off & 15) != 0) return e.raise(kVecGP, 0);
    uint8_t area[512];
    if (!e.read_bytes(m.seg, off, area, sizeof area)) return Flow::Fault;
    uint32_t mxcsr = 0;
    std::memcpy(&mxcsr, area + 24, 4);
    if ((mxcsr & ~kMxcsrMask) != 0) return e.raise(kVecGP, 0);
    X87& f = e.s.x87;
    const auto get = [&area](size_t at, void* p, size_t n) { std::memcpy(p, area + at, n); };
    get(0, &f.fcw, 2);
    get(2, &f.fsw, 2);
    get(4, &f.ftw, 1);
    get(6, &f.fop, 2);
    f.fip = f.fdp = 0;
    get(8, &f.fip, wide ? 8 : 4);
    get(16, &f.fdp, wide ? 8 : 4);
    e.s.mxcsr = mxcsr;
    for (size_t k = 0; k < 8; ++k) get(32 + k * 16, f.st[k].data(), 10);
    const size_t regs = in_64bit_code(e.s) ? 16 : 8;
    for (size_t k = 0; k < regs; ++k) get(160 + k * 16, &e.s.xmm[k], 16);
    return Flow::Next;
}

Flow exec_ldmxcsr(Engine& e, const Insn& i) {
    if (!sse::available(e)) return Flow::Fault;
    uint64_t v = 0;
    if (!e.read_op(i, i.op[0], v)) return Flow::Fault;
    if ((v & ~uint64_t{kMxcsrMask}) != 0) return e.raise(kVecGP, 0);
    e.s.mxcsr = static_cast<uint32_t>(v);
    return Flow::Next;
}

Flow exec_stmxcsr(Engine& e, const Insn& i) {
    if (!sse::available(e)) return Flow::Fault;
    return e.write_op(i, i.op[0], e.s.mxcsr) ? Flow::Next : Flow::Fault;
}

Flow exec_fninit(Engine& e, const Insn&) {
    if (!x87_available(e)) return Flow::Fault;
    X87& f = e.s.x87;
    x87_set_top(f, 0);
    f.fcw = 0x37f;
    f.fsw = 0;
    f.ftw = 0;
    f.fop = 0;
    f.fip = f.fdp = 0;
    return Flow::Next;
}

Flow exec_fnstcw(Engine& e, const Insn& i) {
    if (!x87_available(e)) return Flow::Fault;
    return e.write_op(i, i.op[0], e.s.x87.fcw) ? Flow::Next : Flow::Fault;
}

Flow exec_fldcw(Engine& e, const Insn& i) {
    if (!x87_available(e)) return Flow::Fault;
    uint64_t v = 0;
    if (!e.read_op(i, i.op[0], v)) return Flow::Fault;
    e.s.x87.fcw = static_cast<uint16_t>(v);
    return Flow::Next;
}

Flow exec_fnstsw(Engine& e, const Insn& i) {
    if (!x87_available(e)) return Flow::Fault;
    return e.write_op(i, i.op[0], e.s.x87.fsw) ? Flow::Next : Flow::Fault;
}

Flow exec_fnclex(Engine& e, const Insn&) {
    if (!x87_available(e)) return Flow::Fault;
    e.s.x87.fsw &= 0x7f00;  // exception flags, ES and B cleared
    return Flow::Next;
}

Flow exec_fwait(Engine& e, const Insn&) {
    if ((e.s.cr0 & (cr0::MP | cr0::TS)) == (cr0::MP | cr0::TS)) return e.raise(kVecNM);
    // A pending unmasked x87 exception (ES, or a flag the control word unmasks) is reported here.
    const X87& f = e.s.x87;
    if ((f.fsw & 0x80) != 0 || (f.fsw & ~f.fcw & 0x3f) != 0) return e.raise(kVecMF);
    return Flow::Next;
}

}  // namespace

void register_fpu(HandlerTable& t) {
    t.set(ZYDIS_MNEMONIC_FXSAVE, exec_fxsave<false>);
    t.set(ZYDIS_MNEMONIC_FXSAVE64, exec_fxsave<true>);
    t.set(ZYDIS_MNEMONIC_FXRSTOR, exec_fxrstor<false>);
    t.set(ZYDIS_MNEMONIC_FXRSTOR64, exec_fxrstor<true>);
    t.set(ZYDIS_MNEMONIC_LDMXCSR, exec_ldmxcsr);
    t.set(ZYDIS_MNEMONIC_STMXCSR, exec_stmxcsr);
    t.set(ZYDIS_MNEMONIC_FNINIT, exec_fninit);
    t.set(ZYDIS_MNEMONIC_FNSTCW, exec_fnstcw);
    t.set(ZYDIS_MNEMONIC_FLDCW, exec_fldcw);
    t.set(ZYDIS_MNEMONIC_FNSTSW, exec_fnstsw);
    t.set(ZYDIS_MNEMONIC_FNCLEX, exec_fnclex);
    t.set(ZYDIS_MNEMONIC_FWAIT, exec_fwait);
}

}  // namespace popek::hv::emu
