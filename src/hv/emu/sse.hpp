// Shared helpers of the SSE handlers (exec_sse.cpp, exec_sse_int.cpp, exec_fpu.cpp).
#pragma once

#include <cstring>

#include "hv/emu/handlers.hpp"

namespace popek::hv::emu::sse {

// #UD without CR4.OSFXSR or with CR0.EM, #NM with CR0.TS.
inline bool available(Engine& e) {
    if ((e.s.cr4 & cr4::OSFXSR) == 0 || (e.s.cr0 & cr0::EM) != 0) {
        e.raise(kVecUD);
        return false;
    }
    if ((e.s.cr0 & cr0::TS) != 0) {
        e.raise(kVecNM);
        return false;
    }
    return true;
}

// Reads an XMM register or memory operand (o.size bytes, zero-extended to 128 bits).
// `aligned`: a 16-byte memory operand must be 16-byte aligned (#GP otherwise).
inline bool read(Engine& e, const Insn& i, const Operand& o, Xmm& v, bool aligned = true) {
    v = Xmm{};
    if (o.kind == OpKind::Xmm) {
        v = e.s.xmm[o.reg];
        return true;
    }
    if (o.kind == OpKind::Gpr) {
        v.lo = e.get_reg(o);
        return true;
    }
    if (o.kind != OpKind::Mem) {
        e.note_unimplemented(i.mnemonic);  // MMX registers
        e.raise(kVecUD);
        return false;
    }
    const uint64_t off = e.ea(i, o);
    if (aligned && o.size == 16 && (off & 15) != 0) {
        e.raise(kVecGP, 0);
        return false;
    }
    uint8_t buf[16] = {};
    if (!e.read_bytes(o.seg, off, buf, o.size)) return false;
    std::memcpy(&v, buf, sizeof v);
    return true;
}

// Writes o.size bytes of `v` to memory, all 128 bits to an XMM register, or the low part to a GPR.
inline bool write(Engine& e, const Insn& i, const Operand& o, const Xmm& v, bool aligned = true) {
    if (o.kind == OpKind::Xmm) {
        e.s.xmm[o.reg] = v;
        return true;
    }
    if (o.kind == OpKind::Gpr) {
        e.set_reg(o, v.lo);
        return true;
    }
    if (o.kind != OpKind::Mem) {
        e.note_unimplemented(i.mnemonic);
        e.raise(kVecUD);
        return false;
    }
    const uint64_t off = e.ea(i, o);
    if (aligned && o.size == 16 && (off & 15) != 0) {
        e.raise(kVecGP, 0);
        return false;
    }
    return e.write_bytes(o.seg, off, &v, o.size);
}

template <class T>
struct Lanes {
    static constexpr size_t n = 16 / sizeof(T);
    T v[n];
    explicit Lanes(const Xmm& x) { std::memcpy(v, &x, 16); }
    [[nodiscard]] Xmm xmm() const {
        Xmm x;
        std::memcpy(&x, v, 16);
        return x;
    }
};

}  // namespace popek::hv::emu::sse
