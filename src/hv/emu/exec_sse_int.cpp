// SSE2 integer operations on XMM registers: logic, compares, add/subtract
// (wrapping and saturating), min/max, multiplies, shifts, shuffles, unpacks,
// packs, byte masks, word insert/extract.
#include <algorithm>
#include <cstdlib>
#include <limits>
#include <type_traits>

#include "hv/emu/sse.hpp"

namespace popek::hv::emu {

namespace {

using sse::Lanes;

// The XMM destination every handler here writes (MMX forms are not implemented).
bool xmm_dest(Engine& e, const Insn& i) {
    if (!sse::available(e)) return false;
    if (i.op[0].kind == OpKind::Xmm) return true;
    e.note_unimplemented(i.mnemonic);
    e.raise(kVecUD);
    return false;
}

template <class T, class Op>
Xmm map2(const Xmm& a, const Xmm& b, Op op) {
    Lanes<T> x(a);
    const Lanes<T> y(b);
    for (size_t k = 0; k < Lanes<T>::n; ++k) x.v[k] = static_cast<T>(op(x.v[k], y.v[k]));
    return x.xmm();
}

// dst ← f(dst, src) for `dst` an XMM register and `src` an XMM register or aligned m128.
template <Xmm (*f)(const Xmm&, const Xmm&)>
Flow binary(Engine& e, const Insn& i) {
    Xmm b;
    if (!xmm_dest(e, i)) return Flow::Fault;
    if (!sse::read(e, i, i.op[1], b)) return Flow::Fault;
    Xmm& a = e.s.xmm[i.op[0].reg];
    a = f(a, b);
    return Flow::Next;
}

Xmm op_xor(const Xmm& a, const Xmm& b) { return {a.lo ^ b.lo, a.hi ^ b.hi}; }
Xmm op_or(const Xmm& a, const Xmm& b) { return {a.lo | b.lo, a.hi | b.hi}; }
Xmm op_and(const Xmm& a, const Xmm& b) { return {a.lo & b.lo, a.hi & b.hi}; }
Xmm op_andn(const Xmm& a, const Xmm& b) { return {~a.lo & b.lo, ~a.hi & b.hi}; }

template <class T>
Xmm op_cmpeq(const Xmm& a, const Xmm& b) { return map2<T>(a, b, [](T x, T y) { return x == y ? static_cast<T>(~T{0}) : T{0}; }); }
template <class T>
Xmm op_cmpgt(const Xmm& a, const Xmm& b) { return map2<T>(a, b, [](T x, T y) { return x > y ? static_cast<T>(-1) : T{0}; }); }
template <class T>
Xmm op_add(const Xmm& a, const Xmm& b) { return map2<T>(a, b, [](T x, T y) { return static_cast<T>(x + y); }); }
template <class T>
Xmm op_sub(const Xmm& a, const Xmm& b) { return map2<T>(a, b, [](T x, T y) { return static_cast<T>(x - y); }); }
template <class T>
Xmm op_min(const Xmm& a, const Xmm& b) { return map2<T>(a, b, [](T x, T y) { return std::min(x, y); }); }
template <class T>
Xmm op_max(const Xmm& a, const Xmm& b) { return map2<T>(a, b, [](T x, T y) { return std::max(x, y); }); }

// Saturating add/subtract in the lane type T, computed in int.
template <class T, bool add>
Xmm op_sat(const Xmm& a, const Xmm& b) {
    return map2<T>(a, b, [](T x, T y) {
        const int r = add ? int{x} + int{y} : int{x} - int{y};
        return static_cast<T>(std::clamp<int>(r, std::numeric_limits<T>::min(), std::numeric_limits<T>::max()));
    });
}

Xmm op_mullw(const Xmm& a, const Xmm& b) {
    return map2<uint16_t>(a, b, [](uint16_t x, uint16_t y) { return static_cast<uint16_t>(x * y); });
}
Xmm op_mulhuw(const Xmm& a, const Xmm& b) {
    return map2<uint16_t>(a, b, [](uint16_t x, uint16_t y) { return static_cast<uint16_t>((uint32_t{x} * y) >> 16); });
}
Xmm op_mulhw(const Xmm& a, const Xmm& b) {
    return map2<int16_t>(a, b, [](int16_t x, int16_t y) { return static_cast<int16_t>((int32_t{x} * y) >> 16); });
}
Xmm op_muludq(const Xmm& a, const Xmm& b) {
    return {(a.lo & 0xffffffff) * (b.lo & 0xffffffff), (a.hi & 0xffffffff) * (b.hi & 0xffffffff)};
}
template <class T>
Xmm op_avg(const Xmm& a, const Xmm& b) {
    return map2<T>(a, b, [](T x, T y) { return static_cast<T>((uint32_t{x} + y + 1) >> 1); });
}

// Interleave the low (or high) halves of a and b, T-sized elements.
template <class T, bool high>
Xmm op_unpack(const Xmm& a, const Xmm& b) {
    const Lanes<T> x(a), y(b);
    Lanes<T> r(a);
    constexpr size_t half = Lanes<T>::n / 2;
    for (size_t k = 0; k < half; ++k) {
        r.v[2 * k] = x.v[k + (high ? half : 0)];
        r.v[2 * k + 1] = y.v[k + (high ? half : 0)];
    }
    return r.xmm();
}

// Narrow with saturation: a's lanes then b's.
template <class From, class To>
Xmm op_pack(const Xmm& a, const Xmm& b) {
    const Lanes<From> x(a), y(b);
    Lanes<To> r(a);
    const auto sat = [](From v) {
        return static_cast<To>(std::clamp<long>(v, std::numeric_limits<To>::min(), std::numeric_limits<To>::max()));
    };
    for (size_t k = 0; k < Lanes<From>::n; ++k) {
        r.v[k] = sat(x.v[k]);
        r.v[k + Lanes<From>::n] = sat(y.v[k]);
    }
    return r.xmm();
}

Xmm op_sadbw(const Xmm& a, const Xmm& b) {
    const Lanes<uint8_t> x(a), y(b);
    uint64_t s[2] = {0, 0};
    for (size_t k = 0; k < 16; ++k) s[k / 8] += static_cast<uint64_t>(std::abs(int{x.v[k]} - int{y.v[k]}));
    return {s[0], s[1]};
}

Flow exec_pmovmskb(Engine& e, const Insn& i) {
    if (!sse::available(e)) return Flow::Fault;
    if (i.op[1].kind != OpKind::Xmm) return e.raise(kVecUD);
    const Lanes<uint8_t> x(e.s.xmm[i.op[1].reg]);
    uint64_t mask = 0;
    for (size_t k = 0; k < 16; ++k) mask |= static_cast<uint64_t>(x.v[k] >> 7) << k;
    e.set_gpr(i.op[0].reg, i.op[0].size == 8 ? 8 : 4, mask);
    return Flow::Next;
}

template <class T>
Flow exec_movmsk(Engine& e, const Insn& i) {
    if (!sse::available(e)) return Flow::Fault;
    const Lanes<T> x(e.s.xmm[i.op[1].reg]);
    uint64_t mask = 0;
    for (size_t k = 0; k < Lanes<T>::n; ++k) mask |= static_cast<uint64_t>(x.v[k] >> (sizeof(T) * 8 - 1)) << k;
    e.set_gpr(i.op[0].reg, i.op[0].size == 8 ? 8 : 4, mask);
    return Flow::Next;
}

// PSHUFD / PSHUFLW / PSHUFHW / SHUFPS (imm8 selects lanes).
template <int kind>
Flow exec_shuffle(Engine& e, const Insn& i) {
    if (!xmm_dest(e, i)) return Flow::Fault;
    Xmm src;
    if (!sse::read(e, i, i.op[1], src)) return Flow::Fault;
    const auto imm = static_cast<unsigned>(i.op[2].value);
    Xmm& d = e.s.xmm[i.op[0].reg];
    if (kind == 0 || kind == 3) {  // PSHUFD: all from src; SHUFPS: low two from dst, high two from src
        const Lanes<uint32_t> s(src), old(d);
        Lanes<uint32_t> r(src);
        for (unsigned k = 0; k < 4; ++k) {
            const unsigned sel = (imm >> (2 * k)) & 3;
            r.v[k] = (kind == 3 && k < 2) ? old.v[sel] : s.v[sel];
        }
        d = r.xmm();
    } else {
        const Lanes<uint16_t> s(src);
        Lanes<uint16_t> r(src);
        const unsigned base = kind == 1 ? 0 : 4;
        for (unsigned k = 0; k < 4; ++k) r.v[base + k] = s.v[base + ((imm >> (2 * k)) & 3)];
        d = r.xmm();
    }
    return Flow::Next;
}

// Shifts by an immediate or by the low 64 bits of an XMM/m128 operand.
// kind: 0 logical left, 1 logical right, 2 arithmetic right.
template <class T, int kind>
Flow exec_shift(Engine& e, const Insn& i) {
    if (!xmm_dest(e, i)) return Flow::Fault;
    uint64_t count = 0;
    if (i.op[1].kind == OpKind::Imm) {
        count = static_cast<uint64_t>(i.op[1].value) & 0xff;
    } else {
        Xmm c;
        if (!sse::read(e, i, i.op[1], c)) return Flow::Fault;
        count = c.lo;
    }
    constexpr unsigned bits = sizeof(T) * 8;
    Lanes<T> x(e.s.xmm[i.op[0].reg]);
    for (size_t k = 0; k < Lanes<T>::n; ++k) {
        if (kind == 0) x.v[k] = count >= bits ? T{0} : static_cast<T>(x.v[k] << count);
        if (kind == 1) x.v[k] = count >= bits ? T{0} : static_cast<T>(x.v[k] >> count);
        if (kind == 2) {
            using S = std::make_signed_t<T>;
            const auto sv = static_cast<S>(x.v[k]);
            x.v[k] = static_cast<T>(sv >> (count >= bits ? bits - 1 : count));
        }
    }
    e.s.xmm[i.op[0].reg] = x.xmm();
    return Flow::Next;
}

// PSLLDQ / PSRLDQ: whole-register byte shifts.
template <bool left>
Flow exec_byte_shift(Engine& e, const Insn& i) {
    if (!xmm_dest(e, i)) return Flow::Fault;
    const auto n = static_cast<unsigned>(i.op[1].value) & 0xff;
    const Lanes<uint8_t> x(e.s.xmm[i.op[0].reg]);
    Lanes<uint8_t> r(Xmm{});
    for (unsigned k = 0; k < 16; ++k) {
        const int from = left ? static_cast<int>(k) - static_cast<int>(n) : static_cast<int>(k + n);
        r.v[k] = (from >= 0 && from < 16) ? x.v[from] : 0;
    }
    e.s.xmm[i.op[0].reg] = r.xmm();
    return Flow::Next;
}

Flow exec_pinsrw(Engine& e, const Insn& i) {
    if (!xmm_dest(e, i)) return Flow::Fault;
    uint64_t v = 0;
    if (!e.read_op(i, i.op[1], v)) return Flow::Fault;
    Lanes<uint16_t> x(e.s.xmm[i.op[0].reg]);
    x.v[static_cast<unsigned>(i.op[2].value) & 7] = static_cast<uint16_t>(v);
    e.s.xmm[i.op[0].reg] = x.xmm();
    return Flow::Next;
}

Flow exec_pextrw(Engine& e, const Insn& i) {
    if (!sse::available(e)) return Flow::Fault;
    if (i.op[1].kind != OpKind::Xmm || i.op[0].kind != OpKind::Gpr) return e.raise(kVecUD);
    const Lanes<uint16_t> x(e.s.xmm[i.op[1].reg]);
    e.set_gpr(i.op[0].reg, i.op[0].size == 8 ? 8 : 4, x.v[static_cast<unsigned>(i.op[2].value) & 7]);
    return Flow::Next;
}

}  // namespace

void register_sse_int(HandlerTable& t) {
    for (ZydisMnemonic m : {ZYDIS_MNEMONIC_PXOR, ZYDIS_MNEMONIC_XORPS, ZYDIS_MNEMONIC_XORPD}) t.set(m, binary<op_xor>);
    for (ZydisMnemonic m : {ZYDIS_MNEMONIC_POR, ZYDIS_MNEMONIC_ORPS, ZYDIS_MNEMONIC_ORPD}) t.set(m, binary<op_or>);
    for (ZydisMnemonic m : {ZYDIS_MNEMONIC_PAND, ZYDIS_MNEMONIC_ANDPS, ZYDIS_MNEMONIC_ANDPD}) t.set(m, binary<op_and>);
    for (ZydisMnemonic m : {ZYDIS_MNEMONIC_PANDN, ZYDIS_MNEMONIC_ANDNPS, ZYDIS_MNEMONIC_ANDNPD}) t.set(m, binary<op_andn>);
    t.set(ZYDIS_MNEMONIC_PCMPEQB, binary<op_cmpeq<uint8_t>>);
    t.set(ZYDIS_MNEMONIC_PCMPEQW, binary<op_cmpeq<uint16_t>>);
    t.set(ZYDIS_MNEMONIC_PCMPEQD, binary<op_cmpeq<uint32_t>>);
    t.set(ZYDIS_MNEMONIC_PCMPGTB, binary<op_cmpgt<int8_t>>);
    t.set(ZYDIS_MNEMONIC_PCMPGTW, binary<op_cmpgt<int16_t>>);
    t.set(ZYDIS_MNEMONIC_PCMPGTD, binary<op_cmpgt<int32_t>>);
    t.set(ZYDIS_MNEMONIC_PADDB, binary<op_add<uint8_t>>);
    t.set(ZYDIS_MNEMONIC_PADDW, binary<op_add<uint16_t>>);
    t.set(ZYDIS_MNEMONIC_PADDD, binary<op_add<uint32_t>>);
    t.set(ZYDIS_MNEMONIC_PADDQ, binary<op_add<uint64_t>>);
    t.set(ZYDIS_MNEMONIC_PSUBB, binary<op_sub<uint8_t>>);
    t.set(ZYDIS_MNEMONIC_PSUBW, binary<op_sub<uint16_t>>);
    t.set(ZYDIS_MNEMONIC_PSUBD, binary<op_sub<uint32_t>>);
    t.set(ZYDIS_MNEMONIC_PSUBQ, binary<op_sub<uint64_t>>);
    t.set(ZYDIS_MNEMONIC_PADDUSB, binary<op_sat<uint8_t, true>>);
    t.set(ZYDIS_MNEMONIC_PADDUSW, binary<op_sat<uint16_t, true>>);
    t.set(ZYDIS_MNEMONIC_PSUBUSB, binary<op_sat<uint8_t, false>>);
    t.set(ZYDIS_MNEMONIC_PSUBUSW, binary<op_sat<uint16_t, false>>);
    t.set(ZYDIS_MNEMONIC_PADDSB, binary<op_sat<int8_t, true>>);
    t.set(ZYDIS_MNEMONIC_PADDSW, binary<op_sat<int16_t, true>>);
    t.set(ZYDIS_MNEMONIC_PSUBSB, binary<op_sat<int8_t, false>>);
    t.set(ZYDIS_MNEMONIC_PSUBSW, binary<op_sat<int16_t, false>>);
    t.set(ZYDIS_MNEMONIC_PMINUB, binary<op_min<uint8_t>>);
    t.set(ZYDIS_MNEMONIC_PMAXUB, binary<op_max<uint8_t>>);
    t.set(ZYDIS_MNEMONIC_PMINSW, binary<op_min<int16_t>>);
    t.set(ZYDIS_MNEMONIC_PMAXSW, binary<op_max<int16_t>>);
    t.set(ZYDIS_MNEMONIC_PMULLW, binary<op_mullw>);
    t.set(ZYDIS_MNEMONIC_PMULHW, binary<op_mulhw>);
    t.set(ZYDIS_MNEMONIC_PMULHUW, binary<op_mulhuw>);
    t.set(ZYDIS_MNEMONIC_PMULUDQ, binary<op_muludq>);
    t.set(ZYDIS_MNEMONIC_PAVGB, binary<op_avg<uint8_t>>);
    t.set(ZYDIS_MNEMONIC_PAVGW, binary<op_avg<uint16_t>>);
    t.set(ZYDIS_MNEMONIC_PSADBW, binary<op_sadbw>);
    t.set(ZYDIS_MNEMONIC_PUNPCKLBW, binary<op_unpack<uint8_t, false>>);
    t.set(ZYDIS_MNEMONIC_PUNPCKLWD, binary<op_unpack<uint16_t, false>>);
    t.set(ZYDIS_MNEMONIC_PUNPCKLDQ, binary<op_unpack<uint32_t, false>>);
    t.set(ZYDIS_MNEMONIC_PUNPCKLQDQ, binary<op_unpack<uint64_t, false>>);
    t.set(ZYDIS_MNEMONIC_PUNPCKHBW, binary<op_unpack<uint8_t, true>>);
    t.set(ZYDIS_MNEMONIC_PUNPCKHWD, binary<op_unpack<uint16_t, true>>);
    t.set(ZYDIS_MNEMONIC_PUNPCKHDQ, binary<op_unpack<uint32_t, true>>);
    t.set(ZYDIS_MNEMONIC_PUNPCKHQDQ, binary<op_unpack<uint64_t, true>>);
    t.set(ZYDIS_MNEMONIC_UNPCKLPS, binary<op_unpack<uint32_t, false>>);
    t.set(ZYDIS_MNEMONIC_UNPCKHPS, binary<op_unpack<uint32_t, true>>);
    t.set(ZYDIS_MNEMONIC_UNPCKLPD, binary<op_unpack<uint64_t, false>>);
    t.set(ZYDIS_MNEMONIC_UNPCKHPD, binary<op_unpack<uint64_t, true>>);
    t.set(ZYDIS_MNEMONIC_PACKUSWB, binary<op_pack<int16_t, uint8_t>>);
    t.set(ZYDIS_MNEMONIC_PACKSSWB, binary<op_pack<int16_t, int8_t>>);
    t.set(ZYDIS_MNEMONIC_PACKSSDW, binary<op_pack<int32_t, int16_t>>);
    t.set(ZYDIS_MNEMONIC_PMOVMSKB, exec_pmovmskb);
    t.set(ZYDIS_MNEMONIC_MOVMSKPS, exec_movmsk<uint32_t>);
    t.set(ZYDIS_MNEMONIC_MOVMSKPD, exec_movmsk<uint64_t>);
    t.set(ZYDIS_MNEMONIC_PSHUFD, exec_shuffle<0>);
    t.set(ZYDIS_MNEMONIC_PSHUFLW, exec_shuffle<1>);
    t.set(ZYDIS_MNEMONIC_PSHUFHW, exec_shuffle<2>);
    t.set(ZYDIS_MNEMONIC_SHUFPS, exec_shuffle<3>);
    t.set(ZYDIS_MNEMONIC_PSLLW, exec_shift<uint16_t, 0>);
    t.set(ZYDIS_MNEMONIC_PSLLD, exec_shift<uint32_t, 0>);
    t.set(ZYDIS_MNEMONIC_PSLLQ, exec_shift<uint64_t, 0>);
    t.set(ZYDIS_MNEMONIC_PSRLW, exec_shift<uint16_t, 1>);
    t.set(ZYDIS_MNEMONIC_PSRLD, exec_shift<uint32_t, 1>);
    t.set(ZYDIS_MNEMONIC_PSRLQ, exec_shift<uint64_t, 1>);
    t.set(ZYDIS_MNEMONIC_PSRAW, exec_shift<uint16_t, 2>);
    t.set(ZYDIS_MNEMONIC_PSRAD, exec_shift<uint32_t, 2>);
    t.set(ZYDIS_MNEMONIC_PSLLDQ, exec_byte_shift<true>);
    t.set(ZYDIS_MNEMONIC_PSRLDQ, exec_byte_shift<false>);
    t.set(ZYDIS_MNEMONIC_PINSRW, exec_pinsrw);
    t.set(ZYDIS_MNEMONIC_PEXTRW, exec_pextrw);
}

}  // namespace popek::hv::emu
