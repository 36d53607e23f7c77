// Event delivery through the 64-bit IDT (and the real-mode IVT), and the
// instructions that enter and leave the kernel: INT n/INT3/INTO, IRET,
// SYSCALL/SYSRET, SWAPGS and far RET.
#include "hv/emu/handlers.hpp"
#include "hv/emu/segments.hpp"

namespace popek::hv::emu {

namespace {

bool deliver_real_mode(Engine& e, uint8_t vector, uint64_t return_rip) {
    CpuState& s = e.s;
    uint64_t entry = 0;
    if (static_cast<uint64_t>(vector) * 4 + 3 > s.idtr.limit) {
        e.raise(kVecGP, 0);
        return false;
    }
    if (!e.read_la(s.idtr.base + vector * 4u, 4, entry, false)) return false;
    const uint64_t sp = s.gpr[kRsp];
    if (!e.push(s.rflags & 0xffff, 2) || !e.push(s.seg[kCs].selector, 2) || !e.push(return_rip & 0xffff, 2)) {
        s.gpr[kRsp] = sp;
        return false;
    }
    s.rflags &= ~(rflags::IF | rflags::TF | rflags::AC);
    s.seg[kCs].selector = static_cast<uint16_t>(entry >> 16);
    s.seg[kCs].base = (entry >> 16) << 4;
    s.rip = entry & 0xffff;
    return true;
}

// Loads CS for a far transfer to `selector` at privilege `new_cpl`.
void set_cs(CpuState& s, uint16_t selector, uint64_t d, unsigned new_cpl) {
    Segment cs = segment_from_descriptor(static_cast<uint16_t>((selector & ~3u) | new_cpl), d);
    cs.type |= desc::Accessed;
    cs.dpl = static_cast<uint8_t>(new_cpl);
    s.seg[kCs] = cs;
}

// Checks a code-segment descriptor for a transfer; raises #GP/#NP on failure.
bool check_code_descriptor(Engine& e, uint16_t sel, uint64_t d, uint32_t err) {
    const Segment n = segment_from_descriptor(sel, d);
    if (n.s == 0 || (n.type & desc::Code) == 0) {
        e.raise(kVecGP, err);
        return false;
    }
    if (n.present == 0) {
        e.raise(kVecNP, err);
        return false;
    }
    return true;
}

}  // namespace

bool Engine::deliver_event(uint8_t vector, bool has_error, uint32_t error, bool software, uint64_t return_rip) {
    if ((s.cr0 & cr0::PE) == 0) return deliver_real_mode(*this, vector, return_rip);
    if (!long_mode_active(s)) {
        internal_ = InternalReason::UnsupportedMode;
        raise(kVecMC);
        return false;
    }
    const uint32_t ext = software ? 0 : 1;
    const uint32_t idt_err = vector * 8u + 2 + ext;
    if (static_cast<uint64_t>(vector) * 16 + 15 > s.idtr.limit) {
        raise(kVecGP, idt_err);
        return false;
    }
    uint64_t lo = 0, hi = 0;
    if (!read_la(s.idtr.base + vector * 16u, 8, lo, false) || !read_la(s.idtr.base + vector * 16u + 8, 8, hi, false)) {
        return false;
    }
    const auto type = static_cast<uint8_t>((lo >> 40) & 0xf);
    const auto gate_dpl = static_cast<unsigned>((lo >> 45) & 3);
    if (type != desc::IntGate && type != desc::TrapGate) {
        raise(kVecGP, idt_err);
        return false;
    }
    const unsigned cur = cpl(s);
    if (software && gate_dpl < cur) {
        raise(kVecGP, vector * 8u + 2);
        return false;
    }
    if (((lo >> 47) & 1) == 0) {
        raise(kVecNP, idt_err);
        return false;
    }
    const auto sel = static_cast<uint16_t>((lo >> 16) & 0xffff);
    const uint64_t target = (lo & 0xffff) | (((lo >> 48) & 0xffff) << 16) | ((hi & 0xffffffffULL) << 32);
    const auto ist = static_cast<unsigned>((lo >> 32) & 7);
    if ((sel & ~3u) == 0) {
        raise(kVecGP, ext);
        return false;
    }
    uint64_t d = 0;
    if (!read_descriptor(*this, sel, d)) return false;
    const uint32_t sel_err = (sel & ~3u) | ext;
    if (!check_code_descriptor(*this, sel, d, sel_err)) return false;
    const Segment code = segment_from_descriptor(sel, d);
    if (code.l == 0 || code.db != 0 || code.dpl > cur) {
        raise(kVecGP, sel_err);
        return false;
    }
    const unsigned new_cpl = (code.type & desc::Conforming) != 0 ? cur : code.dpl;

    uint64_t rsp = s.gpr[kRsp];
    if (ist != 0 || new_cpl < cur) {
        const uint64_t off = ist != 0 ? 0x24 + (ist - 1) * 8 : 4 + new_cpl * 8;
        if (off + 7 > s.tr.limit) {
            raise(kVecTS, s.tr.selector & ~3u);
            return false;
        }
        if (!read_la(s.tr.base + off, 8, rsp, false)) return false;
    }
    rsp &= ~0xfULL;
    const bool user = new_cpl == 3;
    const uint64_t frame[6] = {error, return_rip, s.seg[kCs].selector, s.rflags, s.gpr[kRsp], s.seg[kSs].selector};
    const int first = has_error ? 0 : 1;
    for (int k = 5; k >= first; --k) {
        rsp -= 8;
        if (!write_la(rsp, 8, frame[k], user)) return false;
    }
    if (new_cpl != cur) s.seg[kSs] = flat_segment(static_cast<uint16_t>(new_cpl), 3, static_cast<uint8_t>(new_cpl), false);
    set_cs(s, sel, d, new_cpl);
    s.gpr[kRsp] = rsp;
    s.rip = target;
    s.rflags &= ~(rflags::TF | rflags::NT | rflags::RF | rflags::VM);
    if (type == desc::IntGate) s.rflags &= ~rflags::IF;
    s.halted = false;
    return true;
}

namespace {

Flow software_interrupt(Engine& e, uint8_t vector) {
    if (!e.deliver_event(vector, false, 0, true, e.next_rip)) return Flow::Fault;
    e.next_rip = e.s.rip;
    return Flow::Next;
}

Flow exec_int(Engine& e, const Insn& i) { return software_interrupt(e, static_cast<uint8_t>(i.op[0].value)); }
Flow exec_int3(Engine& e, const Insn&) { return software_interrupt(e, kVecBP); }

// INT1 (ICEBP): #DB as a trap, without the gate-privilege check of INT n.
Flow exec_int1(Engine& e, const Insn&) {
    if (!e.deliver_event(kVecDB, false, 0, false, e.next_rip)) return Flow::Fault;
    e.next_rip = e.s.rip;
    return Flow::Next;
}

Flow exec_into(Engine& e, const Insn&) {
    if (in_64bit_code(e.s)) return e.raise(kVecUD);
    if ((e.s.rflags & rflags::OF) == 0) return Flow::Next;
    return software_interrupt(e, kVecOF);
}

// Pops `n` values of `size` bytes from the stack without moving RSP.
bool peek_stack(Engine& e, unsigned size, unsigned n, uint64_t* out) {
    const unsigned as = e.stack_addr_size();
    const uint64_t am = alu::mask(as);
    for (unsigned k = 0; k < n; ++k) {
        if (!e.read_mem(kSs, (e.s.gpr[kRsp] + k * size) & am, size, out[k])) return false;
    }
    return true;
}

// After a return to an outer ring: data segments the new ring may not use become null.
void invalidate_data_segments(CpuState& s, unsigned new_cpl) {
    for (uint8_t r : {kEs, kDs, kFs, kGs}) {
        Segment& seg = s.seg[r];
        const bool conforming_code = (seg.type & desc::Code) != 0 && (seg.type & desc::Conforming) != 0;
        if (seg.unusable == 0 && !conforming_code && seg.dpl < new_cpl) {
            const uint64_t base = seg.base;
            seg = Segment{};
            seg.unusable = 1;
            if (r == kFs || r == kGs) seg.base = base;  // 64-bit mode keeps the bases
        }
    }
}

// The far-return part of IRET and RETF: CS:RIP, then SS:RSP when the
// privilege changes (always for IRET in 64-bit mode). `vals` = RIP, CS, [RFLAGS,] RSP, SS.
Flow far_return(Engine& e, const Insn& i, uint64_t rip, uint16_t cs_sel, bool has_stack, uint64_t new_rsp,
                uint16_t ss_sel, unsigned pop_bytes) {
    CpuState& s = e.s;
    const unsigned cur = cpl(s), rpl = cs_sel & 3u;
    if ((cs_sel & ~3u) == 0) return e.raise(kVecGP, 0);
    if (rpl < cur) return e.raise(kVecGP, cs_sel & ~3u);
    uint64_t d = 0;
    if (!read_descriptor(e, cs_sel, d)) return Flow::Fault;
    if (!check_code_descriptor(e, cs_sel, d, cs_sel & ~3u)) return Flow::Fault;
    const Segment code = segment_from_descriptor(cs_sel, d);
    const bool conforming = (code.type & desc::Conforming) != 0;
    if ((conforming && code.dpl > rpl) || (!conforming && code.dpl != rpl)) return e.raise(kVecGP, cs_sel & ~3u);
    const bool to64 = long_mode_active(s) && code.l != 0;
    if (to64 && (static_cast<uint64_t>(static_cast<int64_t>(rip << 16) >> 16) != rip)) return e.raise(kVecGP, 0);
    Segment ss = s.seg[kSs];
    if (has_stack || rpl != cur) {
        if ((ss_sel & ~3u) == 0) {
            if (!(long_mode_active(s) && rpl < 3 && code.l != 0)) return e.raise(kVecGP, 0);
            ss = flat_segment(ss_sel, 3, static_cast<uint8_t>(rpl), false);
        } else {
            uint64_t sd = 0, saddr = 0;
            if ((ss_sel & 3u) != rpl || !read_descriptor(e, ss_sel, sd, &saddr)) {
                if ((ss_sel & 3u) != rpl) e.raise(kVecGP, ss_sel & ~3u);
                return Flow::Fault;
            }
            ss = segment_from_descriptor(ss_sel, sd);
            if (ss.s == 0 || (ss.type & desc::Code) != 0 || (ss.type & desc::Writable) == 0 || ss.dpl != rpl) {
                return e.raise(kVecGP, ss_sel & ~3u);
            }
            if (ss.present == 0) return e.raise(kVecSS, ss_sel & ~3u);
            if (!mark_accessed(e, saddr, sd)) return Flow::Fault;
            ss.type |= desc::Accessed;
        }
    }
    set_cs(s, cs_sel, d, rpl);
    if (has_stack || rpl != cur) {
        s.seg[kSs] = ss;
        s.gpr[kRsp] = new_rsp;
    } else {
        e.set_gpr(kRsp, e.stack_addr_size(), s.gpr[kRsp] + pop_bytes);
    }
    if (rpl > cur) invalidate_data_segments(s, rpl);
    e.next_rip = to64 ? rip : rip & (i.opsize == 2 ? 0xffff : 0xffffffff);
    return Flow::Next;
}

Flow iret(Engine& e, const Insn& i) {
    CpuState& s = e.s;
    const unsigned size = i.opsize;
    if ((s.cr0 & cr0::PE) == 0) {
        uint64_t v[3];
        if (!peek_stack(e, size, 3, v)) return Flow::Fault;
        e.set_gpr(kRsp, e.stack_addr_size(), s.gpr[kRsp] + 3 * size);
        s.seg[kCs].selector = static_cast<uint16_t>(v[1]);
        s.seg[kCs].base = (v[1] & 0xffff) << 4;
        const uint64_t m = size == 2 ? 0xffff : rflags::Writable & ~rflags::VM;
        s.rflags = (s.rflags & ~m) | (v[2] & m) | rflags::Fixed1;
        e.next_rip = v[0] & (size == 2 ? 0xffff : 0xffffffff);
        return Flow::Next;
    }
    if (!long_mode_active(s)) return e.raise(kVecUD);  // 32-bit protected-mode IRET: not implemented
    if ((s.rflags & rflags::NT) != 0) return e.raise(kVecGP, 0);  // task return: no tasks in long mode
    const bool has_stack = in_64bit_code(s);
    uint64_t v[5] = {};
    const unsigned n = has_stack ? 5 : 3;
    if (!peek_stack(e, size, n, v)) return Flow::Fault;
    const unsigned cur = cpl(s);
    const unsigned iopl = static_cast<unsigned>((s.rflags & rflags::IOPL) >> 12);
    uint64_t changeable = rflags::Arith | rflags::TF | rflags::DF | rflags::NT | rflags::AC | rflags::ID | rflags::RF;
    if (cur == 0) changeable |= rflags::IOPL | rflags::VIF | rflags::VIP;
    if (cur <= iopl) changeable |= rflags::IF;
    if (size == 2) changeable &= 0xffff;
    const uint64_t old_flags = s.rflags;
    if (has_stack) {
        const uint64_t m = alu::mask(size);
        const Flow f = far_return(e, i, v[0] & m, static_cast<uint16_t>(v[1]), true, v[3] & m, static_cast<uint16_t>(v[4]), 0);
        if (f != Flow::Next) return f;
    } else {
        const Flow f = far_return(e, i, v[0], static_cast<uint16_t>(v[1]), false, 0, 0, 3 * size);
        if (f != Flow::Next) return f;
    }
    s.rflags = (old_flags & ~changeable) | (v[2] & changeable) | rflags::Fixed1;
    return Flow::Next;
}

Flow exec_iret(Engine& e, const Insn& i) {
    const Flow f = iret(e, i);
    if (f == Flow::Next) e.nmi_returned();
    return f;
}

}  // namespace

Flow exec_far_return(Engine& e, const Insn& i) {
    const unsigned size = i.opsize;
    uint64_t v[4] = {};
    if (!peek_stack(e, size, 2, v)) return Flow::Fault;
    const uint64_t extra = i.nops == 1 ? (static_cast<uint64_t>(i.op[0].value) & 0xffff) : 0;
    const unsigned rpl = v[1] & 3u;
    if (rpl > cpl(e.s)) {
        // Return to an outer ring: SS:RSP follow the parameters.
        const uint64_t saved = e.s.gpr[kRsp];
        e.s.gpr[kRsp] += 2 * size + extra;
        uint64_t w[2];
        const bool ok = peek_stack(e, size, 2, w);
        e.s.gpr[kRsp] = saved;
        if (!ok) return Flow::Fault;
        return far_return(e, i, v[0], static_cast<uint16_t>(v[1]), true, w[0] + extra, static_cast<uint16_t>(w[1]), 0);
    }
    return far_return(e, i, v[0], static_cast<uint16_t>(v[1]), false, 0, 0, static_cast<unsigned>(2 * size + extra));
}

namespace {

}  // namespace

// Far JMP/CALL to a code segment (ptr16:16/32 or m16:16/32/64); call gates are not implemented.
Flow exec_far_transfer(Engine& e, const Insn& i) {
    CpuState& s = e.s;
    const bool call = i.mnemonic == ZYDIS_MNEMONIC_CALL;
    const Operand& o = i.op[0];
    const unsigned size = i.opsize;
    uint64_t off = 0, sel = 0;
    if (o.kind == OpKind::Ptr) {
        off = static_cast<uint64_t>(o.value) & 0xffffffffULL;
        sel = static_cast<uint64_t>(o.value) >> 32;
    } else if (o.kind == OpKind::Mem) {
        const uint64_t at = e.ea(i, o);
        const unsigned off_size = o.size - 2u;
        if (!e.read_mem(o.seg, at, off_size, off) || !e.read_mem(o.seg, at + off_size, 2, sel)) return Flow::Fault;
    } else {
        return e.raise(kVecUD);
    }
    const auto selector = static_cast<uint16_t>(sel);
    const uint64_t rsp = s.gpr[kRsp];
    const auto push_return = [&]() { return e.push(s.seg[kCs].selector, size) && e.push(e.next_rip, size); };
    if ((s.cr0 & cr0::PE) == 0 || (s.rflags & rflags::VM) != 0) {
        if (call && !push_return()) return Flow::Fault;
        s.seg[kCs].selector = selector;
        s.seg[kCs].base = static_cast<uint64_t>(selector) << 4;
        e.next_rip = off & alu::mask(size);
        return Flow::Next;
    }
    if ((selector & ~3u) == 0) return e.raise(kVecGP, 0);
    uint64_t d = 0;
    if (!read_descriptor(e, selector, d)) return Flow::Fault;
    const Segment code = segment_from_descriptor(selector, d);
    if (code.s == 0) {
        e.note_unimplemented(i.mnemonic);  // call gates, task gates, TSS targets
        return e.raise(kVecGP, selector & ~3u);
    }
    if (!check_code_descriptor(e, selector, d, selector & ~3u)) return Flow::Fault;
    const unsigned cur = cpl(s);
    const bool conforming = (code.type & desc::Conforming) != 0;
    if ((conforming && code.dpl > cur) || (!conforming && ((selector & 3u) > cur || code.dpl != cur))) {
        return e.raise(kVecGP, selector & ~3u);
    }
    const bool to64 = long_mode_active(s) && code.l != 0;
    if (to64 && static_cast<uint64_t>(static_cast<int64_t>(off << 16) >> 16) != off) return e.raise(kVecGP, 0);
    if (call && !push_return()) {
        s.gpr[kRsp] = rsp;
        return Flow::Fault;
    }
    set_cs(s, selector, d, cur);
    e.next_rip = to64 ? off : off & alu::mask(size == 8 ? 4 : size);
    return Flow::Next;
}

namespace {

Flow exec_syscall(Engine& e, const Insn&) {
    CpuState& s = e.s;
    if ((s.efer & efer::SCE) == 0 || !long_mode_active(s)) return e.raise(kVecUD);
    const auto sel = static_cast<uint16_t>((s.msrs.star >> 32) & 0xfffc);
    s.gpr[kRcx] = e.next_rip;
    s.gpr[kR11] = s.rflags & ~rflags::RF;
    s.rflags = (s.rflags & ~(s.msrs.sfmask | rflags::RF)) | rflags::Fixed1;
    s.seg[kCs] = flat_segment(sel, 11, 0, true);
    s.seg[kSs] = flat_segment(static_cast<uint16_t>(sel + 8), 3, 0, false);
    e.next_rip = in_64bit_code(s) ? s.msrs.lstar : s.msrs.cstar;
    return Flow::Next;
}

Flow exec_sysret(Engine& e, const Insn& i) {
    CpuState& s = e.s;
    if ((s.efer & efer::SCE) == 0 || !in_64bit_code(s)) return e.raise(kVecUD);
    if (cpl(s) != 0) return e.raise(kVecGP, 0);
    const auto base = static_cast<uint16_t>((s.msrs.star >> 48) & 0xffff);
    uint64_t rip = s.gpr[kRcx];
    if (i.opsize == 8) {
        if (static_cast<uint64_t>(static_cast<int64_t>(rip << 16) >> 16) != rip) return e.raise(kVecGP, 0);
        s.seg[kCs] = flat_segment(static_cast<uint16_t>((base + 16) | 3), 11, 3, true);
    } else {
        rip &= 0xffffffff;
        s.seg[kCs] = flat_segment(static_cast<uint16_t>(base | 3), 11, 3, false);
    }
    s.seg[kSs] = flat_segment(static_cast<uint16_t>((base + 8) | 3), 3, 3, false);
    s.rflags = (s.gpr[kR11] & rflags::Writable & ~(rflags::RF | rflags::VM)) | rflags::Fixed1;
    e.next_rip = rip;
    return Flow::Next;
}

Flow exec_swapgs(Engine& e, const Insn&) {
    if (!in_64bit_code(e.s)) return e.raise(kVecUD);
    if (cpl(e.s) != 0) return e.raise(kVecGP, 0);
    std::swap(e.s.seg[kGs].base, e.s.msrs.kernel_gs_base);
    return Flow::Next;
}

}  // namespace

void register_interrupts(HandlerTable& t) {
    t.set(ZYDIS_MNEMONIC_INT, exec_int, true);
    t.set(ZYDIS_MNEMONIC_INT3, exec_int3, true);
    t.set(ZYDIS_MNEMONIC_INTO, exec_into, true);
    t.set(ZYDIS_MNEMONIC_INT1, exec_int1, true);
    t.set(ZYDIS_MNEMONIC_IRET, exec_iret, true);
    t.set(ZYDIS_MNEMONIC_IRETD, exec_iret, true);
    t.set(ZYDIS_MNEMONIC_IRETQ, exec_iret, true);
    t.set(ZYDIS_MNEMONIC_SYSCALL, exec_syscall, true);
    t.set(ZYDIS_MNEMONIC_SYSRET, exec_sysret, true);
    t.set(ZYDIS_MNEMONIC_SWAPGS, exec_swapgs);
}

}  // namespace popek::hv::emu
