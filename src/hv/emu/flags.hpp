// Arithmetic-flag computation, exact to the SDM for every operand size.
// Pure functions: the interpreter's handlers and a future translator's
// helpers share them.
#pragma once

#include <cstdint>

#include "hv/emu/cpu.hpp"

namespace popek::hv::emu::alu {

// 128-bit integers for wide multiplies, divides and double shifts.
__extension__ typedef __int128 i128;           // NOLINT(modernize-use-using)
__extension__ typedef unsigned __int128 u128;  // NOLINT(modernize-use-using)

inline constexpr uint64_t mask(unsigned size) { return size >= 8 ? ~0ULL : (1ULL << (size * 8)) - 1; }
inline constexpr uint64_t sign_bit(unsigned size) { return 1ULL << (size * 8 - 1); }
inline constexpr uint64_t sext(uint64_t v, unsigned size) {
    const unsigned sh = 64 - size * 8;
    return static_cast<uint64_t>(static_cast<int64_t>(v << sh) >> sh);
}

// SF, ZF and PF of a result (already masked to `size`).
inline uint64_t szp(uint64_t r, unsigned size) {
    uint64_t f = 0;
    if (r == 0) f |= rflags::ZF;
    if ((r & sign_bit(size)) != 0) f |= rflags::SF;
    if (!__builtin_parity(static_cast<unsigned>(r & 0xff))) f |= rflags::PF;
    return f;
}

// a + b + carry; `fl` receives CF PF AF ZF SF OF.
inline uint64_t add(uint64_t a, uint64_t b, uint64_t carry, unsigned size, uint64_t& fl) {
    const uint64_t m = mask(size), sb = sign_bit(size);
    a &= m;
    b &= m;
    const uint64_t r = (a + b + carry) & m;
    fl = szp(r, size);
    if ((((a & b) | ((a | b) & ~r)) & sb) != 0) fl |= rflags::CF;
    if ((((a ^ r) & (b ^ r)) & sb) != 0) fl |= rflags::OF;
    if (((a ^ b ^ r) & 0x10) != 0) fl |= rflags::AF;
    return r;
}

// a - b - borrow; `fl` receives CF PF AF ZF SF OF.
inline uint64_t sub(uint64_t a, uint64_t b, uint64_t borrow, unsigned size, uint64_t& fl) {
    const uint64_t m = mask(size), sb = sign_bit(size);
    a &= m;
    b &= m;
    const uint64_t r = (a - b - borrow) & m;
    fl = szp(r, size);
    if ((((~a & b) | (~(a ^ b) & r)) & sb) != 0) fl |= rflags::CF;
    if ((((a ^ b) & (a ^ r)) & sb) != 0) fl |= rflags::OF;
    if (((a ^ b ^ r) & 0x10) != 0) fl |= rflags::AF;
    return r;
}

// AND/OR/XOR/TEST: CF = OF = 0, AF left clear (undefined by the SDM).
inline uint64_t logic_flags(uint64_t r, unsigned size) { return szp(r & mask(size), size); }

inline void set_arith(CpuState& s, uint64_t fl) { s.rflags = (s.rflags & ~rflags::Arith) | fl; }
// Replaces only the flags in `which`.
inline void set_flags(CpuState& s, uint64_t which, uint64_t fl) {
    s.rflags = (s.rflags & ~which) | (fl & which);
}

// Condition code cc (x86 numbering: O NO B AE E NE BE A S NS P NP L GE LE G).
inline bool condition(uint64_t f, unsigned cc) {
    bool r = false;
    switch (cc >> 1) {
    case 0: r = (f & rflags::OF) != 0; break;
    case 1: r = (f & rflags::CF) != 0; break;
    case 2: r = (f & rflags::ZF) != 0; break;
    case 3: r = (f & (rflags::CF | rflags::ZF)) != 0; break;
    case 4: r = (f & rflags::SF) != 0; break;
    case 5: r = (f & rflags::PF) != 0; break;
    case 6: r = ((f & rflags::SF) != 0) != ((f & rflags::OF) != 0); break;
    default: r = (f & rflags::ZF) != 0 || (((f & rflags::SF) != 0) != ((f & rflags::OF) != 0)); break;
    }
    return (cc & 1) != 0 ? !r : r;
}

}  // namespace popek::hv::emu::alu
