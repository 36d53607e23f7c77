// Near control flow and the stack: jumps, calls, returns, loops, PUSH/POP,
// PUSHF/POPF, ENTER/LEAVE.
#include "hv/emu/handlers.hpp"

namespace popek::hv::emu {

namespace {

using namespace alu;

uint64_t branch_target(Engine& e, const Insn& i, const Operand& o, bool& ok) {
    ok = true;
    if (o.kind == OpKind::Rel) return e.next_rip + static_cast<uint64_t>(o.value);
    uint64_t v = 0;
    ok = e.read_op(i, o, v);
    return v;
}

Flow exec_jmp(Engine& e, const Insn& i) {
    if ((i.flags & insn_flags::Far) != 0) return exec_far_transfer(e, i);
    bool ok = false;
    const uint64_t target = branch_target(e, i, i.op[0], ok);
    return ok ? e.jump(target, i.opsize) : Flow::Fault;
}

Flow exec_jcc(Engine& e, const Insn& i) {
    if (!condition(e.s.rflags, i.cond)) return Flow::Next;
    return e.jump(e.next_rip + static_cast<uint64_t>(i.op[0].value), i.opsize);
}

Flow exec_jrcxz(Engine& e, const Insn& i) {
    if ((e.s.gpr[kRcx] & mask(i.addrsize)) != 0) return Flow::Next;
    return e.jump(e.next_rip + static_cast<uint64_t>(i.op[0].value), i.opsize);
}

// LOOP (0xE2), LOOPE (0xE1), LOOPNE (0xE0).
Flow exec_loop(Engine& e, const Insn& i) {
    const uint64_t rcx = (e.s.gpr[kRcx] - 1) & mask(i.addrsize);
    e.set_gpr(kRcx, i.addrsize, rcx);
    bool taken = rcx != 0;
    const bool zf = (e.s.rflags & rflags::ZF) != 0;
    if (i.mnemonic == ZYDIS_MNEMONIC_LOOPE) taken = taken && zf;
    if (i.mnemonic == ZYDIS_MNEMONIC_LOOPNE) taken = taken && !zf;
    if (!taken) return Flow::Next;
    return e.jump(e.next_rip + static_cast<uint64_t>(i.op[0].value), i.opsize);
}

Flow exec_call(Engine& e, const Insn& i) {
    if ((i.flags & insn_flags::Far) != 0) return exec_far_transfer(e, i);
    bool ok = false;
    const uint64_t target = branch_target(e, i, i.op[0], ok);
    if (!ok) return Flow::Fault;
    const uint64_t rsp = e.s.gpr[kRsp];
    if (!e.push(e.next_rip, i.opsize)) return Flow::Fault;
    if (e.jump(target, i.opsize) == Flow::Fault) {
        e.s.gpr[kRsp] = rsp;
        return Flow::Fault;
    }
    return Flow::Next;
}

Flow exec_ret(Engine& e, const Insn& i) {
    if ((i.flags & insn_flags::Far) != 0) return exec_far_return(e, i);
    const uint64_t rsp = e.s.gpr[kRsp];
    uint64_t target = 0;
    if (!e.pop(target, i.opsize)) return Flow::Fault;
    if (e.jump(target, i.opsize) == Flow::Fault) {
        e.s.gpr[kRsp] = rsp;
        return Flow::Fault;
    }
    if (i.nops == 1) {
        const unsigned as = e.stack_addr_size();
        e.set_gpr(kRsp, as, e.s.gpr[kRsp] + (static_cast<uint64_t>(i.op[0].value) & 0xffff));
    }
    return Flow::Next;
}

Flow exec_push(Engine& e, const Insn& i) {
    uint64_t v = 0;
    if (!e.read_op(i, i.op[0], v)) return Flow::Fault;
    return e.push(v, i.opsize) ? Flow::Next : Flow::Fault;
}

Flow exec_pop(Engine& e, const Insn& i) {
    const Operand& d = i.op[0];
    const uint64_t rsp = e.s.gpr[kRsp];
    uint64_t v = 0;
    if (!e.pop(v, i.opsize)) return Flow::Fault;
    if (d.kind == OpKind::Sreg) {
        if (!load_segment(e, d.reg, static_cast<uint16_t>(v))) {
            e.s.gpr[kRsp] = rsp;
            return Flow::Fault;
        }
        if (d.reg == kSs) e.s.interrupt_shadow = true;
        return Flow::Next;
    }
    if (d.kind == OpKind::Gpr) {
        e.set_reg(d, v);  // POP RSP: the popped value wins
        return Flow::Next;
    }
    if (!e.write_op(i, d, v)) {  // the address uses the incremented RSP
        e.s.gpr[kRsp] = rsp;
        return Flow::Fault;
    }
    return Flow::Next;
}

Flow exec_pushf(Engine& e, const Insn& i) {
    return e.push(e.s.rflags & ~(rflags::VM | rflags::RF), i.opsize) ? Flow::Next : Flow::Fault;
}

Flow exec_popf(Engine& e, const Insn& i) {
    uint64_t v = 0;
    if (!e.pop(v, i.opsize)) return Flow::Fault;
    const unsigned iopl = static_cast<unsigned>((e.s.rflags & rflags::IOPL) >> 12);
    uint64_t changeable = rflags::Arith | rflags::TF | rflags::DF | rflags::NT | rflags::AC | rflags::ID;
    if (cpl(e.s) == 0) changeable |= rflags::IOPL;
    if (cpl(e.s) <= iopl) changeable |= rflags::IF;
    if (i.opsize == 2) changeable &= 0xffff;
    e.s.rflags = ((e.s.rflags & ~changeable) | (v & changeable) | rflags::Fixed1) & ~rflags::RF;
    return Flow::Next;
}

Flow exec_enter(Engine& e, const Insn& i) {
    const uint64_t alloc = static_cast<uint64_t>(i.op[0].value) & 0xffff;
    const unsigned level = static_cast<unsigned>(i.op[1].value) & 31;
    const unsigned size = i.opsize;
    const unsigned as = e.stack_addr_size();
    const uint64_t saved_rsp = e.s.gpr[kRsp];
    if (!e.push(e.s.gpr[kRbp], size)) return Flow::Fault;
    const uint64_t frame = e.s.gpr[kRsp];
    uint64_t rbp = e.s.gpr[kRbp];
    for (unsigned n = 1; n < level; ++n) {
        rbp = (rbp - size) & mask(as);
        uint64_t v = 0;
        if (!e.read_mem(kSs, rbp, size, v) || !e.push(v, size)) {
            e.s.gpr[kRsp] = saved_rsp;
            return Flow::Fault;
        }
    }
    if (level > 0 && !e.push(frame, size)) {
        e.s.gpr[kRsp] = saved_rsp;
        return Flow::Fault;
    }
    const uint64_t new_rsp = (e.s.gpr[kRsp] - alloc) & mask(as);
    uint64_t la = 0;
    // The final stack top must be writable (#PF/#SS now rather than later).
    if (alloc != 0 && (!e.linear(kSs, new_rsp, la) || !e.probe_write(la, 1, e.user_mode()))) {
        e.s.gpr[kRsp] = saved_rsp;
        return Flow::Fault;
    }
    e.set_gpr(kRbp, size, frame);
    e.set_gpr(kRsp, as, new_rsp);
    return Flow::Next;
}

Flow exec_leave(Engine& e, const Insn& i) {
    const unsigned as = e.stack_addr_size();
    const uint64_t rsp = e.s.gpr[kRsp];
    e.set_gpr(kRsp, as, e.s.gpr[kRbp]);
    uint64_t v = 0;
    if (!e.pop(v, i.opsize)) {
        e.s.gpr[kRsp] = rsp;
        return Flow::Fault;
    }
    e.set_gpr(kRbp, i.opsize, v);
    return Flow::Next;
}

}  // namespace

void register_flow(HandlerTable& t) {
    t.set(ZYDIS_MNEMONIC_JMP, exec_jmp, true);
    for (ZydisMnemonic m : {ZYDIS_MNEMONIC_JB, ZYDIS_MNEMONIC_JBE, ZYDIS_MNEMONIC_JL, ZYDIS_MNEMONIC_JLE,
                            ZYDIS_MNEMONIC_JNB, ZYDIS_MNEMONIC_JNBE, ZYDIS_MNEMONIC_JNL, ZYDIS_MNEMONIC_JNLE,
                            ZYDIS_MNEMONIC_JNO, ZYDIS_MNEMONIC_JNP, ZYDIS_MNEMONIC_JNS, ZYDIS_MNEMONIC_JNZ,
                            ZYDIS_MNEMONIC_JO, ZYDIS_MNEMONIC_JP, ZYDIS_MNEMONIC_JS, ZYDIS_MNEMONIC_JZ}) {
        t.set(m, exec_jcc, true);
    }
    t.set(ZYDIS_MNEMONIC_JRCXZ, exec_jrcxz, true);
    t.set(ZYDIS_MNEMONIC_JECXZ, exec_jrcxz, true);
    t.set(ZYDIS_MNEMONIC_JCXZ, exec_jrcxz, true);
    t.set(ZYDIS_MNEMONIC_LOOP, exec_loop, true);
    t.set(ZYDIS_MNEMONIC_LOOPE, exec_loop, true);
    t.set(ZYDIS_MNEMONIC_LOOPNE, exec_loop, true);
    t.set(ZYDIS_MNEMONIC_CALL, exec_call, true);
    t.set(ZYDIS_MNEMONIC_RET, exec_ret, true);
    t.set(ZYDIS_MNEMONIC_PUSH, exec_push);
    t.set(ZYDIS_MNEMONIC_POP, exec_pop);
    t.set(ZYDIS_MNEMONIC_PUSHF, exec_pushf);
    t.set(ZYDIS_MNEMONIC_PUSHFD, exec_pushf);
    t.set(ZYDIS_MNEMONIC_PUSHFQ, exec_pushf);
    t.set(ZYDIS_MNEMONIC_POPF, exec_popf, true);  // may set TF/IF
    t.set(ZYDIS_MNEMONIC_POPFD, exec_popf, true);
    t.set(ZYDIS_MNEMONIC_POPFQ, exec_popf, true);
    t.set(ZYDIS_MNEMONIC_ENTER, exec_enter);
    t.set(ZYDIS_MNEMONIC_LEAVE, exec_leave);
}

}  // namespace popek::hv::emu
