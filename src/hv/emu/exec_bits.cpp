// Shifts, rotates, double shifts, bit tests and bit scans/counts.
#include "hv/emu/handlers.hpp"

namespace popek::hv::emu {

namespace {

using namespace alu;

enum class Sh { Shl, Shr, Sar, Rol, Ror, Rcl, Rcr };

// A shift whose masked count is 0 changes no flags, but a 32-bit register
// destination is still written, which clears its upper half.
Flow keep_zero_count(Engine& e, const Operand& d, uint64_t value) {
    if (d.kind == OpKind::Gpr && d.size == 4) e.set_reg(d, value);
    return Flow::Next;
}

template <Sh k>
Flow shift(Engine& e, const Insn& i) {
    const Operand& d = i.op[0];
    const unsigned size = d.size, bits = size * 8;
    uint64_t a = 0, count = 1;
    if (!e.read_op(i, d, a, Access::Write)) return Flow::Fault;
    if (i.nops > 1 && !e.read_op(i, i.op[1], count)) return Flow::Fault;
    count &= size == 8 ? 63 : 31;
    if (count == 0) return keep_zero_count(e, d, a);
    a &= mask(size);
    const uint64_t m = mask(size), sb = sign_bit(size);
    const auto msb = [sb](uint64_t v) { return (v & sb) != 0; };
    uint64_t r = 0;
    bool cf = (e.s.rflags & rflags::CF) != 0, of = false;
    uint64_t which = rflags::CF | rflags::OF;
    switch (k) {
    case Sh::Shl:
        r = (a << count) & m;
        cf = count <= bits && ((a >> (bits - count)) & 1) != 0;
        of = msb(r) != cf;
        which = rflags::Arith;
        break;
    case Sh::Shr:
        r = a >> count;
        cf = ((a >> (count - 1)) & 1) != 0;
        of = count == 1 && msb(a);
        which = rflags::Arith;
        break;
    case Sh::Sar: {
        const auto sa = static_cast<int64_t>(sext(a, size));
        r = static_cast<uint64_t>(sa >> count) & m;
        cf = ((static_cast<uint64_t>(sa >> (count - 1))) & 1) != 0;
        of = false;
        which = rflags::Arith;
        break;
    }
    case Sh::Rol: {
        const unsigned c = static_cast<unsigned>(count % bits);
        r = c == 0 ? a : ((a << c) | (a >> (bits - c))) & m;
        cf = (r & 1) != 0;
        of = msb(r) != cf;
        break;
    }
    case Sh::Ror: {
        const unsigned c = static_cast<unsigned>(count % bits);
        r = c == 0 ? a : ((a >> c) | (a << (bits - c))) & m;
        cf = msb(r);
        of = msb(r) != (((r << 1) & sb) != 0);
        break;
    }
    case Sh::Rcl:
    case Sh::Rcr: {
        const uint64_t c = size < 4 ? count % (bits + 1) : count;
        r = a;
        if (k == Sh::Rcr) of = msb(a) != cf;
        for (uint64_t n = 0; n < c; ++n) {
            if (k == Sh::Rcl) {
                const bool out = msb(r);
                r = ((r << 1) | (cf ? 1 : 0)) & m;
                cf = out;
            } else {
                const bool out = (r & 1) != 0;
                r = (r >> 1) | (cf ? sb : 0);
                cf = out;
            }
        }
        if (k == Sh::Rcl) of = msb(r) != cf;
        break;
    }
    }
    if (!e.write_op(i, d, r)) return Flow::Fault;
    uint64_t fl = (cf ? rflags::CF : 0) | (of ? rflags::OF : 0);
    if (which == rflags::Arith) fl |= szp(r, size);  // AF undefined: cleared
    set_flags(e.s, which, fl);
    return Flow::Next;
}

template <bool left>
Flow double_shift(Engine& e, const Insn& i) {
    const Operand& d = i.op[0];
    const unsigned size = d.size, bits = size * 8;
    uint64_t a = 0, b = 0, count = 0;
    if (!e.read_op(i, d, a, Access::Write) || !e.read_op(i, i.op[1], b) || !e.read_op(i, i.op[2], count)) {
        return Flow::Fault;
    }
    count &= size == 8 ? 63 : 31;
    if (count == 0) return keep_zero_count(e, d, a);
    a &= mask(size);
    b &= mask(size);
    uint64_t r = 0;
    bool cf = false;
    if (left) {
        const u128 x = (static_cast<u128>(a) << bits) | b;
        r = static_cast<uint64_t>((x << count) >> bits) & mask(size);
        cf = static_cast<uint64_t>(x >> (2 * bits - count)) & 1;
    } else {
        const u128 x = (static_cast<u128>(b) << bits) | a;
        r = static_cast<uint64_t>(x >> count) & mask(size);
        cf = static_cast<uint64_t>(x >> (count - 1)) & 1;
    }
    if (!e.write_op(i, d, r)) return Flow::Fault;
    uint64_t fl = szp(r, size) | (cf ? rflags::CF : 0);
    if (((r ^ a) & sign_bit(size)) != 0) fl |= rflags::OF;  // defined for count 1 only
    set_arith(e.s, fl);
    return Flow::Next;
}

enum class Bt { Test, Set, Reset, Complement };

template <Bt k>
uint64_t apply_bit(uint64_t v, uint64_t bit) {
    if (k == Bt::Set) return v | (1ULL << bit);
    if (k == Bt::Reset) return v & ~(1ULL << bit);
    if (k == Bt::Complement) return v ^ (1ULL << bit);
    return v;
}

template <Bt k>
Flow bit_test(Engine& e, const Insn& i) {
    const Operand& d = i.op[0];
    const unsigned size = d.size, bits = size * 8;
    uint64_t off = 0;
    if (!e.read_op(i, i.op[1], off)) return Flow::Fault;
    constexpr Access acc = k == Bt::Test ? Access::Read : Access::Write;
    uint64_t v = 0, bit = 0, addr = 0;
    if (d.kind == OpKind::Mem) {
        if (i.op[1].kind == OpKind::Gpr) {
            // A register bit offset reaches outside the operand (signed, in operand-size units).
            const auto soff = static_cast<int64_t>(sext(off, i.op[1].size));
            const int64_t unit = soff >> __builtin_ctz(bits);
            addr = e.ea(i, d) + static_cast<uint64_t>(unit * static_cast<int64_t>(size));
            if (i.addrsize == 4) addr &= 0xffffffffULL;
            bit = static_cast<uint64_t>(soff) & (bits - 1);
        } else {
            addr = e.ea(i, d);
            bit = off & (bits - 1);
        }
        if (k != Bt::Test && (i.flags & insn_flags::Lock) != 0) {
            if (!e.atomic_rmw(d.seg, addr, size, [&](uint64_t m) {
                    v = m;
                    return apply_bit<k>(m, bit);
                })) {
                return Flow::Fault;
            }
        } else {
            if (!e.read_mem(d.seg, addr, size, v, acc)) return Flow::Fault;
            if (k != Bt::Test && !e.write_mem(d.seg, addr, size, apply_bit<k>(v, bit))) return Flow::Fault;
        }
    } else {
        bit = off & (bits - 1);
        v = e.get_reg(d);
        if (k != Bt::Test) e.set_reg(d, apply_bit<k>(v, bit));
    }
    set_flags(e.s, rflags::CF, ((v >> bit) & 1) != 0 ? rflags::CF : 0);
    return Flow::Next;
}

enum class Scan { Bsf, Bsr, Tzcnt, Lzcnt, Popcnt };

template <Scan k>
Flow bit_scan(Engine& e, const Insn& i) {
    const unsigned size = i.op[0].size, bits = size * 8;
    uint64_t v = 0;
    if (!e.read_op(i, i.op[1], v)) return Flow::Fault;
    v &= mask(size);
    uint64_t r = 0, fl = 0;
    switch (k) {
    case Scan::Bsf:
    case Scan::Bsr:
        if (v == 0) {
            set_flags(e.s, rflags::ZF, rflags::ZF);  // the destination keeps its value
            return Flow::Next;
        }
        r = k == Scan::Bsf ? static_cast<uint64_t>(__builtin_ctzll(v)) : static_cast<uint64_t>(63 - __builtin_clzll(v));
        set_flags(e.s, rflags::ZF, 0);
        e.set_reg(i.op[0], r);
        return Flow::Next;
    case Scan::Tzcnt:
        r = v == 0 ? bits : static_cast<uint64_t>(__builtin_ctzll(v));
        fl = (v == 0 ? rflags::CF : 0) | (r == 0 ? rflags::ZF : 0);
        set_flags(e.s, rflags::CF | rflags::ZF, fl);
        break;
    case Scan::Lzcnt:
        r = v == 0 ? bits : static_cast<uint64_t>(__builtin_clzll(v)) - (64 - bits);
        fl = (v == 0 ? rflags::CF : 0) | (r == 0 ? rflags::ZF : 0);
        set_flags(e.s, rflags::CF | rflags::ZF, fl);
        break;
    case Scan::Popcnt:
        r = static_cast<uint64_t>(__builtin_popcountll(v));
        set_arith(e.s, v == 0 ? rflags::ZF : 0);
        break;
    }
    e.set_reg(i.op[0], r);
    return Flow::Next;
}

// BMI1 (VEX-encoded, 32/64-bit): ANDN, BEXTR, BLSI, BLSMSK, BLSR. TZCNT is above.
enum class Bmi { Andn, Bextr, Blsi, Blsmsk, Blsr };

template <Bmi k>
Flow bmi1(Engine& e, const Insn& i) {
    const unsigned size = i.op[0].size;
    const uint64_t m = mask(size);
    uint64_t a = 0, b = 0;
    if (!e.read_op(i, i.op[1], a)) return Flow::Fault;
    if (i.nops > 2 && !e.read_op(i, i.op[2], b)) return Flow::Fault;
    a &= m;
    b &= m;
    uint64_t r = 0, fl = 0;
    switch (k) {
    case Bmi::Andn: r = ~a & b & m; break;                     // dst = ~src1 & src2
    case Bmi::Bextr: {                                         // dst = src1[start +: len]
        const uint64_t start = b & 0xff, len = (b >> 8) & 0xff;
        r = start >= size * 8 ? 0 : a >> start;
        if (len < 64) r &= (1ULL << len) - 1;
        break;
    }
    case Bmi::Blsi: r = (0 - a) & a & m; if (a != 0) fl |= rflags::CF; break;
    case Bmi::Blsmsk: r = ((a - 1) ^ a) & m; if (a == 0) fl |= rflags::CF; break;
    case Bmi::Blsr: r = (a - 1) & a & m; if (a == 0) fl |= rflags::CF; break;
    }
    if (r == 0 && k != Bmi::Blsmsk) fl |= rflags::ZF;
    if ((r & sign_bit(size)) != 0) fl |= rflags::SF;
    // OF cleared; AF and PF undefined (cleared); SF undefined for BEXTR (computed anyway).
    set_arith(e.s, fl);
    e.set_reg(i.op[0], r);
    return Flow::Next;
}

}  // namespace

void register_bits(HandlerTable& t) {
    t.set(ZYDIS_MNEMONIC_SHL, shift<Sh::Shl>);
    t.set(ZYDIS_MNEMONIC_SHR, shift<Sh::Shr>);
    t.set(ZYDIS_MNEMONIC_SAR, shift<Sh::Sar>);
    t.set(ZYDIS_MNEMONIC_ROL, shift<Sh::Rol>);
    t.set(ZYDIS_MNEMONIC_ROR, shift<Sh::Ror>);
    t.set(ZYDIS_MNEMONIC_RCL, shift<Sh::Rcl>);
    t.set(ZYDIS_MNEMONIC_RCR, shift<Sh::Rcr>);
    t.set(ZYDIS_MNEMONIC_SHLD, double_shift<true>);
    t.set(ZYDIS_MNEMONIC_SHRD, double_shift<false>);
    t.set(ZYDIS_MNEMONIC_BT, bit_test<Bt::Test>);
    t.set(ZYDIS_MNEMONIC_BTS, bit_test<Bt::Set>);
    t.set(ZYDIS_MNEMONIC_BTR, bit_test<Bt::Reset>);
    t.set(ZYDIS_MNEMONIC_BTC, bit_test<Bt::Complement>);
    t.set(ZYDIS_MNEMONIC_BSF, bit_scan<Scan::Bsf>);
    t.set(ZYDIS_MNEMONIC_BSR, bit_scan<Scan::Bsr>);
    t.set(ZYDIS_MNEMONIC_TZCNT, bit_scan<Scan::Tzcnt>);
    t.set(ZYDIS_MNEMONIC_LZCNT, bit_scan<Scan::Lzcnt>);
    t.set(ZYDIS_MNEMONIC_POPCNT, bit_scan<Scan::Popcnt>);
    t.set(ZYDIS_MNEMONIC_ANDN, bmi1<Bmi::Andn>);
    t.set(ZYDIS_MNEMONIC_BEXTR, bmi1<Bmi::Bextr>);
    t.set(ZYDIS_MNEMONIC_BLSI, bmi1<Bmi::Blsi>);
    t.set(ZYDIS_MNEMONIC_BLSMSK, bmi1<Bmi::Blsmsk>);
    t.set(ZYDIS_MNEMONIC_BLSR, bmi1<Bmi::Blsr>);
}

}  // namespace popek::hv::emu
