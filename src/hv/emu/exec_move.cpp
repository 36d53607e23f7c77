// Data movement: MOV and its extending forms, LEA, exchanges and
// compare-exchanges, conditional moves and sets, sign extensions of the
// accumulator, flag-register instructions and the NOP family.
#include "hv/emu/handlers.hpp"

namespace popek::hv::emu {

namespace {

using namespace alu;

Flow exec_mov(Engine& e, const Insn& i) {
    const Operand& d = i.op[0];
    const Operand& src = i.op[1];
    if (d.kind == OpKind::Sreg) {
        uint64_t sel = 0;
        if (!e.read_op(i, src, sel)) return Flow::Fault;
        if (d.reg == kCs) return e.raise(kVecUD);
        if (!load_segment(e, d.reg, static_cast<uint16_t>(sel))) return Flow::Fault;
        if (d.reg == kSs) e.s.interrupt_shadow = true;
        return Flow::Next;
    }
    if (d.kind == OpKind::Cr || src.kind == OpKind::Cr) return exec_mov_cr(e, i);
    if (d.kind == OpKind::Dr || src.kind == OpKind::Dr) return exec_mov_dr(e, i);
    uint64_t v = 0;
    if (!e.read_op(i, src, v)) return Flow::Fault;
    return e.write_op(i, d, v) ? Flow::Next : Flow::Fault;
}

Flow exec_movzx(Engine& e, const Insn& i) {
    uint64_t v = 0;
    if (!e.read_op(i, i.op[1], v)) return Flow::Fault;
    e.set_reg(i.op[0], v & mask(i.op[1].size));
    return Flow::Next;
}

Flow exec_movsx(Engine& e, const Insn& i) {
    uint64_t v = 0;
    if (!e.read_op(i, i.op[1], v)) return Flow::Fault;
    e.set_reg(i.op[0], sext(v, i.op[1].size) & mask(i.op[0].size));
    return Flow::Next;
}

Flow exec_lea(Engine& e, const Insn& i) {
    e.set_reg(i.op[0], e.ea(i, i.op[1]) & mask(i.op[0].size));
    return Flow::Next;
}

// A LOCK prefix on a memory destination makes the read-modify-write atomic.
bool locked(const Insn& i) { return (i.flags & insn_flags::Lock) != 0 && i.op[0].kind == OpKind::Mem; }

Flow exec_xchg(Engine& e, const Insn& i) {
    const Operand& a = i.op[0];
    const Operand& b = i.op[1];
    if (a.kind == OpKind::Mem || b.kind == OpKind::Mem) {  // always locked with memory
        const Operand& mem = a.kind == OpKind::Mem ? a : b;
        const Operand& reg = a.kind == OpKind::Mem ? b : a;
        const uint64_t v = e.get_reg(reg);
        uint64_t old = 0;
        if (!e.atomic_rmw(mem.seg, e.ea(i, mem), mem.size, [&](uint64_t m) {
                old = m;
                return v;
            })) {
            return Flow::Fault;
        }
        e.set_reg(reg, old);
        return Flow::Next;
    }
    uint64_t va = 0, vb = 0;
    if (!e.read_op(i, a, va, Access::Write) || !e.read_op(i, b, vb, Access::Write)) return Flow::Fault;
    // A memory operand is written first so a fault leaves the registers alone.
    if (a.kind == OpKind::Mem) {
        if (!e.write_op(i, a, vb)) return Flow::Fault;
        e.set_reg(b, va);
    } else {
        if (!e.write_op(i, b, va)) return Flow::Fault;
        e.set_reg(a, vb);
    }
    return Flow::Next;
}

Flow exec_cmpxchg(Engine& e, const Insn& i) {
    const Operand& d = i.op[0];
    const unsigned size = d.size;
    uint64_t dest = 0, src = 0, fl = 0;
    const uint64_t acc = e.s.gpr[kRax] & mask(size);
    if (locked(i)) {
        if (!e.read_op(i, i.op[1], src)) return Flow::Fault;
        if (!e.atomic_rmw(d.seg, e.ea(i, d), size, [&](uint64_t m) {
                dest = m;
                return m == acc ? src : m;
            })) {
            return Flow::Fault;
        }
        sub(acc, dest, 0, size, fl);
        if (acc != dest) e.set_gpr(kRax, size, dest);
        set_arith(e.s, fl);
        return Flow::Next;
    }
    if (!e.read_op(i, d, dest, Access::Write) || !e.read_op(i, i.op[1], src)) return Flow::Fault;
    sub(acc, dest, 0, size, fl);
    if (acc == (dest & mask(size))) {
        if (!e.write_op(i, d, src)) return Flow::Fault;
    } else {
        if (d.kind == OpKind::Mem && !e.write_op(i, d, dest)) return Flow::Fault;  // the locked write-back
        e.set_gpr(kRax, size, dest);
    }
    set_arith(e.s, fl);
    return Flow::Next;
}

// CMPXCHG8B/16B: always one atomic step on RAM (the instruction is used with LOCK).
Flow exec_cmpxchg_wide(Engine& e, const Insn& i) {
    const Operand& m = i.op[0];
    const uint64_t addr = e.ea(i, m);
    const bool wide = m.size == 16;  // CMPXCHG16B
    if (wide && (addr & 15) != 0) return e.raise(kVecGP, 0);
    uint64_t la = 0;
    uint8_t* host = nullptr;
    if (!e.linear(m.seg, addr, la) || !e.atomic_target(la, m.size, host)) return Flow::Fault;
    const unsigned half = wide ? 8 : 4;
    const uint64_t m_lo = mask(half);
    const uint64_t want_lo = e.s.gpr[kRax] & m_lo, want_hi = e.s.gpr[kRdx] & m_lo;
    const uint64_t new_lo = e.s.gpr[kRbx] & m_lo, new_hi = e.s.gpr[kRcx] & m_lo;
    uint64_t lo = 0, hi = 0;
    bool equal = false;
    if (host != nullptr && wide) {
        uint64_t a = want_lo, d = want_hi;
        asm volatile("lock cmpxchg16b %[mem]"
                     : [mem] "+m"(*reinterpret_cast<unsigned char(*)[16]>(host)), "+a"(a), "+d"(d), "=@ccz"(equal)
                     : "b"(new_lo), "c"(new_hi)
                     : "memory");
        lo = a;
        hi = d;
    } else if (host != nullptr) {
        uint64_t cur = 0;
        if (!e.atomic_rmw(m.seg, addr, 8, [&](uint64_t v) {
                cur = v;
                return (v == (want_lo | want_hi << 32)) ? (new_lo | new_hi << 32) : v;
            })) {
            return Flow::Fault;
        }
        lo = cur & m_lo;
        hi = cur >> 32;
        equal = lo == want_lo && hi == want_hi;
    } else {
        // Outside RAM: a plain read and write.
        if (!e.read_la(la, half, lo, e.user_mode()) || !e.read_la(la + half, half, hi, e.user_mode())) {
            return Flow::Fault;
        }
        equal = lo == want_lo && hi == want_hi;
        if (equal && (!e.write_la(la, half, new_lo, e.user_mode()) || !e.write_la(la + half, half, new_hi, e.user_mode()))) {
            return Flow::Fault;
        }
    }
    if (equal) {
        e.s.rflags |= rflags::ZF;
    } else {
        e.set_gpr(kRax, half, lo);
        e.set_gpr(kRdx, half, hi);
        e.s.rflags &= ~rflags::ZF;
    }
    return Flow::Next;
}

Flow exec_xadd(Engine& e, const Insn& i) {
    const Operand& d = i.op[0];
    uint64_t a = 0, b = 0, fl = 0;
    if (locked(i)) {
        b = e.get_reg(i.op[1]);
        if (!e.atomic_rmw(d.seg, e.ea(i, d), d.size, [&](uint64_t m) {
                a = m;
                return add(m, b, 0, d.size, fl);
            })) {
            return Flow::Fault;
        }
        e.set_reg(i.op[1], a);
        set_arith(e.s, fl);
        return Flow::Next;
    }
    if (!e.read_op(i, d, a, Access::Write) || !e.read_op(i, i.op[1], b)) return Flow::Fault;
    const uint64_t sum = add(a, b, 0, d.size, fl);
    if (d.kind == OpKind::Mem) {
        if (!e.write_op(i, d, sum)) return Flow::Fault;
        e.set_reg(i.op[1], a);
    } else {
        e.set_reg(i.op[1], a);
        e.set_reg(d, sum);
    }
    set_arith(e.s, fl);
    return Flow::Next;
}

Flow exec_bswap(Engine& e, const Insn& i) {
    const Operand& d = i.op[0];
    const uint64_t v = e.get_reg(d);
    if (d.size == 8) {
        e.set_reg(d, __builtin_bswap64(v));
    } else if (d.size == 4) {
        e.set_reg(d, __builtin_bswap32(static_cast<uint32_t>(v)));
    } else {
        e.set_reg(d, 0);  // 16-bit BSWAP is undefined; real CPUs give zero
    }
    return Flow::Next;
}

Flow exec_setcc(Engine& e, const Insn& i) {
    return e.write_op(i, i.op[0], condition(e.s.rflags, i.cond) ? 1 : 0) ? Flow::Next : Flow::Fault;
}

Flow exec_cmovcc(Engine& e, const Insn& i) {
    uint64_t v = 0;
    if (!e.read_op(i, i.op[1], v)) return Flow::Fault;  // the source is read either way
    if (condition(e.s.rflags, i.cond)) {
        e.set_reg(i.op[0], v);
    } else if (i.op[0].size == 4) {
        e.set_reg(i.op[0], e.get_reg(i.op[0]));  // a 32-bit CMOV zero-extends even when not taken
    }
    return Flow::Next;
}

// CBW/CWDE/CDQE: sign-extend the accumulator's lower half into itself.
Flow exec_extend_acc(Engine& e, const Insn& i) {
    const unsigned size = i.opsize;
    e.set_gpr(kRax, size, sext(e.s.gpr[kRax], size / 2));
    return Flow::Next;
}

// CWD/CDQ/CQO: sign of the accumulator into RDX.
Flow exec_extend_dx(Engine& e, const Insn& i) {
    const unsigned size = i.opsize;
    const bool neg = (e.s.gpr[kRax] & sign_bit(size)) != 0;
    e.set_gpr(kRdx, size, neg ? ~0ULL : 0);
    return Flow::Next;
}

Flow exec_lahf(Engine& e, const Insn&) {
    e.s.gpr[kRax] = (e.s.gpr[kRax] & ~0xff00ULL) | ((e.s.rflags & 0xd5) | 2) << 8;
    return Flow::Next;
}

Flow exec_sahf(Engine& e, const Insn&) {
    const uint64_t ah = (e.s.gpr[kRax] >> 8) & 0xd5;
    e.s.rflags = (e.s.rflags & ~0xd5ULL) | ah;
    return Flow::Next;
}

template <uint64_t clear, uint64_t set, bool complement = false>
Flow flag_op(Engine& e, const Insn&) {
    if (complement) {
        e.s.rflags ^= rflags::CF;
    } else {
        e.s.rflags = (e.s.rflags & ~clear) | set;
    }
    return Flow::Next;
}

Flow exec_nop(Engine&, const Insn&) { return Flow::Next; }

// XLAT: AL ← [seg:rBX + AL].
Flow exec_xlat(Engine& e, const Insn& i) {
    const uint64_t off = (e.s.gpr[kRbx] + (e.s.gpr[kRax] & 0xff)) & mask(i.addrsize);
    uint64_t v = 0;
    if (!e.read_mem(i.seg, off, 1, v)) return Flow::Fault;
    e.set_gpr(kRax, 1, v);
    return Flow::Next;
}

}  // namespace

void register_move(HandlerTable& t) {
    t.set(ZYDIS_MNEMONIC_MOV, exec_mov);
    t.set(ZYDIS_MNEMONIC_MOVZX, exec_movzx);
    t.set(ZYDIS_MNEMONIC_MOVSX, exec_movsx);
    t.set(ZYDIS_MNEMONIC_MOVSXD, exec_movsx);
    t.set(ZYDIS_MNEMONIC_MOVNTI, exec_mov);
    t.set(ZYDIS_MNEMONIC_LEA, exec_lea);
    t.set(ZYDIS_MNEMONIC_XCHG, exec_xchg);
    t.set(ZYDIS_MNEMONIC_CMPXCHG, exec_cmpxchg);
    t.set(ZYDIS_MNEMONIC_CMPXCHG8B, exec_cmpxchg_wide);
    t.set(ZYDIS_MNEMONIC_CMPXCHG16B, exec_cmpxchg_wide);
    t.set(ZYDIS_MNEMONIC_XADD, exec_xadd);
    t.set(ZYDIS_MNEMONIC_BSWAP, exec_bswap);
    for (ZydisMnemonic m : {ZYDIS_MNEMONIC_SETB, ZYDIS_MNEMONIC_SETBE, ZYDIS_MNEMONIC_SETL, ZYDIS_MNEMONIC_SETLE,
                            ZYDIS_MNEMONIC_SETNB, ZYDIS_MNEMONIC_SETNBE, ZYDIS_MNEMONIC_SETNL, ZYDIS_MNEMONIC_SETNLE,
                            ZYDIS_MNEMONIC_SETNO, ZYDIS_MNEMONIC_SETNP, ZYDIS_MNEMONIC_SETNS, ZYDIS_MNEMONIC_SETNZ,
                            ZYDIS_MNEMONIC_SETO, ZYDIS_MNEMONIC_SETP, ZYDIS_MNEMONIC_SETS, ZYDIS_MNEMONIC_SETZ}) {
        t.set(m, exec_setcc);
    }
    for (ZydisMnemonic m : {ZYDIS_MNEMONIC_CMOVB, ZYDIS_MNEMONIC_CMOVBE, ZYDIS_MNEMONIC_CMOVL, ZYDIS_MNEMONIC_CMOVLE,
                            ZYDIS_MNEMONIC_CMOVNB, ZYDIS_MNEMONIC_CMOVNBE, ZYDIS_MNEMONIC_CMOVNL, ZYDIS_MNEMONIC_CMOVNLE,
                            ZYDIS_MNEMONIC_CMOVNO, ZYDIS_MNEMONIC_CMOVNP, ZYDIS_MNEMONIC_CMOVNS, ZYDIS_MNEMONIC_CMOVNZ,
                            ZYDIS_MNEMONIC_CMOVO, ZYDIS_MNEMONIC_CMOVP, ZYDIS_MNEMONIC_CMOVS, ZYDIS_MNEMONIC_CMOVZ}) {
        t.set(m, exec_cmovcc);
    }
    t.set(ZYDIS_MNEMONIC_CBW, exec_extend_acc);
    t.set(ZYDIS_MNEMONIC_CWDE, exec_extend_acc);
    t.set(ZYDIS_MNEMONIC_CDQE, exec_extend_acc);
    t.set(ZYDIS_MNEMONIC_CWD, exec_extend_dx);
    t.set(ZYDIS_MNEMONIC_CDQ, exec_extend_dx);
    t.set(ZYDIS_MNEMONIC_CQO, exec_extend_dx);
    t.set(ZYDIS_MNEMONIC_XLAT, exec_xlat);
    t.set(ZYDIS_MNEMONIC_LAHF, exec_lahf);
    t.set(ZYDIS_MNEMONIC_SAHF, exec_sahf);
    t.set(ZYDIS_MNEMONIC_CLC, flag_op<rflags::CF, 0>);
    t.set(ZYDIS_MNEMONIC_STC, flag_op<0, rflags::CF>);
    t.set(ZYDIS_MNEMONIC_CMC, flag_op<0, 0, true>);
    t.set(ZYDIS_MNEMONIC_CLD, flag_op<rflags::DF, 0>);
    t.set(ZYDIS_MNEMONIC_STD, flag_op<0, rflags::DF>);
    for (ZydisMnemonic m : {ZYDIS_MNEMONIC_NOP, ZYDIS_MNEMONIC_PAUSE, ZYDIS_MNEMONIC_ENDBR64, ZYDIS_MNEMONIC_ENDBR32,
                            ZYDIS_MNEMONIC_LFENCE, ZYDIS_MNEMONIC_MFENCE, ZYDIS_MNEMONIC_SFENCE,
                            ZYDIS_MNEMONIC_PREFETCHT0, ZYDIS_MNEMONIC_PREFETCHT1, ZYDIS_MNEMONIC_PREFETCHT2,
                            ZYDIS_MNEMONIC_PREFETCHNTA, ZYDIS_MNEMONIC_PREFETCHW, ZYDIS_MNEMONIC_PREFETCH}) {
        t.set(m, exec_nop);
    }
}

}  // namespace popek::hv::emu
