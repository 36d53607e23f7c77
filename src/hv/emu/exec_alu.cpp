// Integer arithmetic: the two-operand ALU group, INC/DEC/NEG/NOT and the
// multiply/divide family.
#include "hv/emu/handlers.hpp"

namespace popek::hv::emu {

namespace {

using namespace alu;

enum class Op { Add, Adc, Sub, Sbb, Cmp, And, Or, Xor, Test };

template <Op op>
uint64_t compute(uint64_t a, uint64_t b, uint64_t cf, unsigned size, uint64_t& fl) {
    uint64_t r = 0;
    switch (op) {
    case Op::Add: r = add(a, b, 0, size, fl); break;
    case Op::Adc: r = add(a, b, cf, size, fl); break;
    case Op::Sub:
    case Op::Cmp: r = sub(a, b, 0, size, fl); break;
    case Op::Sbb: r = sub(a, b, cf, size, fl); break;
    case Op::And:
    case Op::Test: r = a & b & mask(size); fl = logic_flags(r, size); break;
    case Op::Or: r = (a | b) & mask(size); fl = logic_flags(r, size); break;
    case Op::Xor: r = (a ^ b) & mask(size); fl = logic_flags(r, size); break;
    }
    return r;
}

// A LOCK prefix on a memory destination makes the read-modify-write atomic.
bool locked(const Insn& i) { return (i.flags & insn_flags::Lock) != 0 && i.op[0].kind == OpKind::Mem; }

template <Op op>
Flow binop(Engine& e, const Insn& i) {
    const Operand& d = i.op[0];
    constexpr bool writes = op != Op::Cmp && op != Op::Test;
    const unsigned size = d.size;
    uint64_t a = 0, b = 0, fl = 0;
    if (!e.read_op(i, i.op[1], b)) return Flow::Fault;
    const uint64_t cf = e.s.rflags & rflags::CF;
    if (writes && locked(i)) {
        const auto f = [&](uint64_t old) { return compute<op>(old, b, cf, size, fl); };
        if (!e.atomic_rmw(d.seg, e.ea(i, d), size, f)) return Flow::Fault;
        set_arith(e.s, fl);
        return Flow::Next;
    }
    if (!e.read_op(i, d, a, writes ? Access::Write : Access::Read)) return Flow::Fault;
    const uint64_t r = compute<op>(a, b, cf, size, fl);
    if (writes && !e.write_op(i, d, r)) return Flow::Fault;
    set_arith(e.s, fl);
    return Flow::Next;
}

// dst ← f(dst) for the one-operand read-modify-write instructions, atomic under LOCK.
template <class F>
bool unary_rmw(Engine& e, const Insn& i, F f) {
    const Operand& d = i.op[0];
    if (locked(i)) return e.atomic_rmw(d.seg, e.ea(i, d), d.size, f);
    uint64_t a = 0;
    return e.read_op(i, d, a, Access::Write) && e.write_op(i, d, f(a));
}

template <bool is_inc>
Flow inc_dec(Engine& e, const Insn& i) {
    const unsigned size = i.op[0].size;
    uint64_t fl = 0;
    const auto f = [&](uint64_t a) { return is_inc ? add(a, 1, 0, size, fl) : sub(a, 1, 0, size, fl); };
    if (!unary_rmw(e, i, f)) return Flow::Fault;
    set_flags(e.s, rflags::Arith & ~rflags::CF, fl);
    return Flow::Next;
}

Flow exec_neg(Engine& e, const Insn& i) {
    const unsigned size = i.op[0].size;
    uint64_t fl = 0;
    if (!unary_rmw(e, i, [&](uint64_t a) { return sub(0, a, 0, size, fl); })) return Flow::Fault;
    set_arith(e.s, fl);
    return Flow::Next;
}

Flow exec_not(Engine& e, const Insn& i) {
    const unsigned size = i.op[0].size;
    return unary_rmw(e, i, [size](uint64_t a) { return ~a & mask(size); }) ? Flow::Next : Flow::Fault;
}

// Widening multiply: the high and low halves and whether the high half matters.
void set_mul_flags(Engine& e, uint64_t lo, unsigned size, bool overflow) {
    uint64_t fl = szp(lo & mask(size), size);  // SF ZF PF AF are undefined; these are a choice
    if (overflow) fl |= rflags::CF | rflags::OF;
    set_arith(e.s, fl);
}

void store_wide(Engine& e, unsigned size, uint64_t lo, uint64_t hi) {
    if (size == 1) {
        e.set_gpr(kRax, 2, (lo & 0xff) | ((hi & 0xff) << 8));
    } else {
        e.set_gpr(kRax, size, lo);
        e.set_gpr(kRdx, size, hi);
    }
}

Flow exec_mul(Engine& e, const Insn& i) {
    const unsigned size = i.op[0].size;
    uint64_t src = 0;
    if (!e.read_op(i, i.op[0], src)) return Flow::Fault;
    const uint64_t a = e.s.gpr[kRax] & mask(size);
    const u128 p = static_cast<u128>(a) * (src & mask(size));
    const uint64_t lo = static_cast<uint64_t>(p) & mask(size);
    const uint64_t hi = size == 8 ? static_cast<uint64_t>(p >> 64) : (static_cast<uint64_t>(p) >> (size * 8)) & mask(size);
    store_wide(e, size, lo, hi);
    set_mul_flags(e, lo, size, hi != 0);
    return Flow::Next;
}

Flow exec_imul(Engine& e, const Insn& i) {
    if (i.nops == 1) {
        const unsigned size = i.op[0].size;
        uint64_t src = 0;
        if (!e.read_op(i, i.op[0], src)) return Flow::Fault;
        const i128 p = static_cast<i128>(static_cast<int64_t>(sext(e.s.gpr[kRax], size))) *
                           static_cast<int64_t>(sext(src, size));
        const uint64_t lo = static_cast<uint64_t>(p) & mask(size);
        const uint64_t hi = size == 8 ? static_cast<uint64_t>(static_cast<u128>(p) >> 64)
                                      : (static_cast<uint64_t>(p) >> (size * 8)) & mask(size);
        store_wide(e, size, lo, hi);
        set_mul_flags(e, lo, size, static_cast<i128>(static_cast<int64_t>(sext(lo, size))) != p);
        return Flow::Next;
    }
    // Two- and three-operand forms: a truncated product into a register.
    const Operand& d = i.op[0];
    const unsigned size = d.size;
    uint64_t a = 0, b = 0;
    if (!e.read_op(i, i.nops == 3 ? i.op[1] : i.op[0], a)) return Flow::Fault;
    if (!e.read_op(i, i.nops == 3 ? i.op[2] : i.op[1], b)) return Flow::Fault;
    const i128 p = static_cast<i128>(static_cast<int64_t>(sext(a, size))) * static_cast<int64_t>(sext(b, size));
    const uint64_t lo = static_cast<uint64_t>(p) & mask(size);
    e.set_reg(d, lo);
    set_mul_flags(e, lo, size, static_cast<i128>(static_cast<int64_t>(sext(lo, size))) != p);
    return Flow::Next;
}

Flow exec_div(Engine& e, const Insn& i) {
    const unsigned size = i.op[0].size;
    uint64_t src = 0;
    if (!e.read_op(i, i.op[0], src)) return Flow::Fault;
    src &= mask(size);
    if (src == 0) return e.raise(kVecDE);
    u128 n;
    if (size == 1) {
        n = e.s.gpr[kRax] & 0xffff;
    } else {
        n = (static_cast<u128>(e.s.gpr[kRdx] & mask(size)) << (size * 8)) | (e.s.gpr[kRax] & mask(size));
    }
    const u128 q = n / src;
    const uint64_t r = static_cast<uint64_t>(n % src);
    if (q > mask(size)) return e.raise(kVecDE);
    store_wide(e, size, static_cast<uint64_t>(q), r);
    return Flow::Next;  // flags undefined: left unchanged
}

Flow exec_idiv(Engine& e, const Insn& i) {
    const unsigned size = i.op[0].size;
    uint64_t src = 0;
    if (!e.read_op(i, i.op[0], src)) return Flow::Fault;
    const auto d = static_cast<int64_t>(sext(src, size));
    if (d == 0) return e.raise(kVecDE);
    i128 n;
    if (size == 1) {
        n = static_cast<int64_t>(sext(e.s.gpr[kRax], 2));
    } else {
        const u128 u =
            (static_cast<u128>(e.s.gpr[kRdx] & mask(size)) << (size * 8)) | (e.s.gpr[kRax] & mask(size));
        const unsigned shift = 128 - size * 16;
        n = static_cast<i128>(u << shift) >> shift;
    }
    i128 q, r;
    if (d == -1) {
        q = static_cast<i128>(-static_cast<u128>(n));  // no UB for the most negative n
        r = 0;
        if (n != 0 && q == n) return e.raise(kVecDE);
    } else {
        q = n / d;
        r = n % d;
    }
    const i128 lim = static_cast<i128>(1) << (size * 8 - 1);
    if (q >= lim || q < -lim) return e.raise(kVecDE);
    store_wide(e, size, static_cast<uint64_t>(q) & mask(size), static_cast<uint64_t>(r) & mask(size));
    return Flow::Next;
}

}  // namespace

void register_alu(HandlerTable& t) {
    t.set(ZYDIS_MNEMONIC_ADD, binop<Op::Add>);
    t.set(ZYDIS_MNEMONIC_ADC, binop<Op::Adc>);
    t.set(ZYDIS_MNEMONIC_SUB, binop<Op::Sub>);
    t.set(ZYDIS_MNEMONIC_SBB, binop<Op::Sbb>);
    t.set(ZYDIS_MNEMONIC_CMP, binop<Op::Cmp>);
    t.set(ZYDIS_MNEMONIC_AND, binop<Op::And>);
    t.set(ZYDIS_MNEMONIC_OR, binop<Op::Or>);
    t.set(ZYDIS_MNEMONIC_XOR, binop<Op::Xor>);
    t.set(ZYDIS_MNEMONIC_TEST, binop<Op::Test>);
    t.set(ZYDIS_MNEMONIC_INC, inc_dec<true>);
    t.set(ZYDIS_MNEMONIC_DEC, inc_dec<false>);
    t.set(ZYDIS_MNEMONIC_NEG, exec_neg);
    t.set(ZYDIS_MNEMONIC_NOT, exec_not);
    t.set(ZYDIS_MNEMONIC_MUL, exec_mul);
    t.set(ZYDIS_MNEMONIC_IMUL, exec_imul);
    t.set(ZYDIS_MNEMONIC_DIV, exec_div);
    t.set(ZYDIS_MNEMONIC_IDIV, exec_idiv);
}

}  // namespace popek::hv::emu
