// Segment loads with the protected-mode checks, and the descriptor-table
// instructions (LGDT/LIDT/SGDT/SIDT/LLDT/LTR/SLDT/STR).
#include "hv/emu/segments.hpp"

#include <algorithm>

#include "hv/emu/handlers.hpp"

namespace popek::hv::emu {

Segment segment_from_descriptor(uint16_t selector, uint64_t d) {
    Segment s{};
    s.selector = selector;
    s.base = ((d >> 16) & 0xffffff) | (((d >> 56) & 0xff) << 24);
    uint32_t limit = static_cast<uint32_t>((d & 0xffff) | (((d >> 48) & 0xf) << 16));
    s.g = static_cast<uint8_t>((d >> 55) & 1);
    if (s.g != 0) limit = (limit << 12) | 0xfff;
    s.limit = limit;
    s.type = static_cast<uint8_t>((d >> 40) & 0xf);
    s.s = static_cast<uint8_t>((d >> 44) & 1);
    s.dpl = static_cast<uint8_t>((d >> 45) & 3);
    s.present = static_cast<uint8_t>((d >> 47) & 1);
    s.avl = static_cast<uint8_t>((d >> 52) & 1);
    s.l = static_cast<uint8_t>((d >> 53) & 1);
    s.db = static_cast<uint8_t>((d >> 54) & 1);
    return s;
}

Segment flat_segment(uint16_t selector, uint8_t type, uint8_t dpl, bool code64) {
    Segment s{};
    s.selector = selector;
    s.limit = 0xffffffff;
    s.type = type;
    s.s = 1;
    s.dpl = dpl;
    s.present = 1;
    s.g = 1;
    s.l = code64 ? 1 : 0;
    s.db = code64 ? 0 : 1;
    return s;
}

bool read_descriptor(Engine& e, uint16_t selector, uint64_t& d, uint64_t* addr) {
    const bool ldt = (selector & 4) != 0;
    const uint64_t base = ldt ? e.s.ldtr.base : e.s.gdtr.base;
    const uint64_t limit = ldt ? (e.s.ldtr.unusable ? 0 : e.s.ldtr.limit) : e.s.gdtr.limit;
    const uint64_t index = selector & ~7u;
    if (index + 7 > limit || (ldt && e.s.ldtr.unusable)) {
        e.raise(kVecGP, selector & ~3u);
        return false;
    }
    if (addr != nullptr) *addr = base + index;
    return e.read_la(base + index, 8, d, false);
}

bool mark_accessed(Engine& e, uint64_t addr, uint64_t d) {
    if ((d >> 40) & desc::Accessed) return true;
    return e.write_la(addr + 5, 1, ((d >> 40) & 0xff) | desc::Accessed, false);
}

bool load_segment(Engine& e, uint8_t sreg, uint16_t selector) {
    CpuState& s = e.s;
    Segment& seg = s.seg[sreg];
    if ((s.cr0 & cr0::PE) == 0 || (s.rflags & rflags::VM) != 0) {
        seg.selector = selector;
        seg.base = static_cast<uint64_t>(selector) << 4;
        return true;
    }
    const unsigned cur = cpl(s), rpl = selector & 3u;
    if ((selector & ~3u) == 0) {
        // A null selector: fine for data segments; SS only in 64-bit mode below ring 3.
        if (sreg == kSs && !(in_64bit_code(s) && cur < 3 && rpl == cur)) {
            e.raise(kVecGP, 0);
            return false;
        }
        const uint64_t keep_base = (sreg == kFs || sreg == kGs) ? seg.base : 0;
        seg = Segment{};
        seg.selector = selector;
        seg.base = keep_base;
        seg.unusable = 1;
        if (sreg == kSs) {
            seg = flat_segment(selector, 3, static_cast<uint8_t>(cur), false);
        }
        return true;
    }
    uint64_t d = 0, addr = 0;
    if (!read_descriptor(e, selector, d, &addr)) return false;
    Segment n = segment_from_descriptor(selector, d);
    const uint32_t err = selector & ~3u;
    const bool code = (n.type & desc::Code) != 0;
    if (sreg == kSs) {
        if (n.s == 0 || code || (n.type & desc::Writable) == 0 || rpl != cur || n.dpl != cur) {
            e.raise(kVecGP, err);
            return false;
        }
        if (n.present == 0) {
            e.raise(kVecSS, err);
            return false;
        }
    } else {
        if (n.s == 0 || (code && (n.type & desc::Readable) == 0)) {
            e.raise(kVecGP, err);
            return false;
        }
        const bool conforming_code = code && (n.type & desc::Conforming) != 0;
        if (!conforming_code && n.dpl < std::max(cur, rpl)) {
            e.raise(kVecGP, err);
            return false;
        }
        if (n.present == 0) {
            e.raise(kVecNP, err);
            return false;
        }
    }
    if (!mark_accessed(e, addr, d)) return false;
    n.type |= desc::Accessed;
    seg = n;
    return true;
}

namespace {

bool require_cpl0(Engine& e) {
    if (cpl(e.s) != 0 && (e.s.cr0 & cr0::PE) != 0) {
        e.raise(kVecGP, 0);
        return false;
    }
    return true;
}

// LGDT/LIDT: a 2-byte limit and an 8-byte base (4-byte outside 64-bit mode).
template <bool idt>
Flow exec_load_table(Engine& e, const Insn& i) {
    if (!require_cpl0(e)) return Flow::Fault;
    const Operand& m = i.op[0];
    const uint64_t off = e.ea(i, m);
    uint64_t limit = 0, base = 0;
    const unsigned base_size = in_64bit_code(e.s) ? 8 : 4;
    if (!e.read_mem(m.seg, off, 2, limit) || !e.read_mem(m.seg, off + 2, base_size, base)) return Flow::Fault;
    if (!in_64bit_code(e.s) && i.opsize == 2) base &= 0xffffff;
    DescriptorTable& t = idt ? e.s.idtr : e.s.gdtr;
    t.limit = static_cast<uint16_t>(limit);
    t.base = base;
    return Flow::Next;
}

template <bool idt>
Flow exec_store_table(Engine& e, const Insn& i) {
    const Operand& m = i.op[0];
    const uint64_t off = e.ea(i, m);
    const DescriptorTable& t = idt ? e.s.idtr : e.s.gdtr;
    const unsigned base_size = in_64bit_code(e.s) ? 8 : 4;
    if (!e.write_mem(m.seg, off, 2, t.limit) || !e.write_mem(m.seg, off + 2, base_size, t.base)) return Flow::Fault;
    return Flow::Next;
}

// LLDT and LTR: system descriptors, 16 bytes in long mode.
template <bool tr>
Flow exec_load_system_segment(Engine& e, const Insn& i) {
    if ((e.s.cr0 & cr0::PE) == 0) return e.raise(kVecUD);
    if (!require_cpl0(e)) return Flow::Fault;
    uint64_t v = 0;
    if (!e.read_op(i, i.op[0], v)) return Flow::Fault;
    const auto sel = static_cast<uint16_t>(v);
    if ((sel & ~3u) == 0) {
        if (tr) return e.raise(kVecGP, 0);
        e.s.ldtr = Segment{};
        e.s.ldtr.selector = sel;
        e.s.ldtr.unusable = 1;
        return Flow::Next;
    }
    if ((sel & 4) != 0) return e.raise(kVecGP, sel & ~3u);
    uint64_t d = 0, addr = 0;
    if (!read_descriptor(e, sel, d, &addr)) return Flow::Fault;
    Segment n = segment_from_descriptor(sel, d);
    const uint8_t want = tr ? desc::TssAvailable : desc::Ldt;
    if (n.s != 0 || n.type != want) return e.raise(kVecGP, sel & ~3u);
    if (n.present == 0) return e.raise(kVecNP, sel & ~3u);
    if (long_mode_active(e.s)) {
        uint64_t high = 0;
        if (addr + 15 > e.s.gdtr.base + e.s.gdtr.limit) return e.raise(kVecGP, sel & ~3u);
        if (!e.read_la(addr + 8, 8, high, false)) return Flow::Fault;
        n.base |= (high & 0xffffffffULL) << 32;
    }
    if (tr) {
        if (!e.write_la(addr + 5, 1, ((d >> 40) & 0xf0) | desc::TssBusy, false)) return Flow::Fault;
        n.type = desc::TssBusy;
        e.s.tr = n;
    } else {
        e.s.ldtr = n;
    }
    return Flow::Next;
}

template <bool tr>
Flow exec_store_system_selector(Engine& e, const Insn& i) {
    const uint16_t sel = tr ? e.s.tr.selector : e.s.ldtr.selector;
    const Operand& d = i.op[0];
    if (d.kind == OpKind::Mem) return e.write_mem(d.seg, e.ea(i, d), 2, sel) ? Flow::Next : Flow::Fault;
    e.set_reg(d, sel);
    return Flow::Next;
}

// LAR/LSL: ZF=1 and the access rights or limit if the descriptor is visible
// at the current privilege; ZF=0 (and no fault) otherwise.
template <bool lsl>
Flow exec_load_descriptor_info(Engine& e, const Insn& i) {
    CpuState& s = e.s;
    if ((s.cr0 & cr0::PE) == 0 || (s.rflags & rflags::VM) != 0) return e.raise(kVecUD);
    uint64_t v = 0;
    if (!e.read_op(i, i.op[1], v)) return Flow::Fault;
    const auto sel = static_cast<uint16_t>(v);
    const bool ldt = (sel & 4) != 0;
    const uint64_t limit = ldt ? (s.ldtr.unusable ? 0 : s.ldtr.limit) : s.gdtr.limit;
    uint64_t d = 0;
    bool ok = (sel & ~3u) != 0 && (sel & ~7u) + 7 <= limit && !(ldt && s.ldtr.unusable);
    if (ok && !e.read_la((ldt ? s.ldtr.base : s.gdtr.base) + (sel & ~7u), 8, d, false)) return Flow::Fault;
    const Segment n = segment_from_descriptor(sel, d);
    if (ok && n.s == 0) {
        // System descriptors: LDT and 64-bit TSS for both, call gates for LAR too.
        ok = n.type == desc::Ldt || n.type == desc::TssAvailable || n.type == desc::TssBusy ||
             (!lsl && n.type == 12);
        if (!long_mode_active(s)) ok = ok || n.type == 1 || n.type == 3 || (!lsl && (n.type == 4 || n.type == 5));
    }
    const bool conforming_code = n.s != 0 && (n.type & desc::Code) != 0 && (n.type & desc::Conforming) != 0;
    if (ok && !conforming_code && (n.dpl < cpl(s) || n.dpl < (sel & 3u))) ok = false;
    if (!ok) {
        s.rflags &= ~rflags::ZF;
        return Flow::Next;
    }
    const uint64_t result = lsl ? n.limit : (d >> 32) & 0x00ffff00ULL;
    e.set_reg(i.op[0], result & (i.op[0].size == 2 ? 0xffff : ~0ULL));
    s.rflags |= rflags::ZF;
    return Flow::Next;
}

// VERR/VERW: ZF=1 if the segment is readable (writable) at the current privilege.
template <bool write>
Flow exec_verify(Engine& e, const Insn& i) {
    CpuState& s = e.s;
    if ((s.cr0 & cr0::PE) == 0 || (s.rflags & rflags::VM) != 0) return e.raise(kVecUD);
    uint64_t v = 0;
    if (!e.read_op(i, i.op[0], v)) return Flow::Fault;
    const auto sel = static_cast<uint16_t>(v);
    const bool ldt = (sel & 4) != 0;
    const uint64_t limit = ldt ? (s.ldtr.unusable ? 0 : s.ldtr.limit) : s.gdtr.limit;
    bool ok = (sel & ~3u) != 0 && (sel & ~7u) + 7 <= limit && !(ldt && s.ldtr.unusable);
    uint64_t d = 0;
    if (ok && !e.read_la((ldt ? s.ldtr.base : s.gdtr.base) + (sel & ~7u), 8, d, false)) return Flow::Fault;
    const Segment n = segment_from_descriptor(sel, d);
    const bool code = (n.type & desc::Code) != 0;
    ok = ok && n.s != 0;
    if (ok) ok = write ? (!code && (n.type & desc::Writable) != 0) : (!code || (n.type & desc::Readable) != 0);
    const bool conforming_code = code && (n.type & desc::Conforming) != 0;
    if (ok && !conforming_code && (n.dpl < cpl(s) || n.dpl < (sel & 3u))) ok = false;
    alu::set_flags(s, rflags::ZF, ok ? rflags::ZF : 0);
    return Flow::Next;
}

// LDS/LES/LSS/LFS/LGS: a far pointer (offset, then selector) into a segment register and a GPR.
template <uint8_t sreg>
Flow exec_load_far_pointer(Engine& e, const Insn& i) {
    const Operand& m = i.op[1];
    if (m.kind != OpKind::Mem) return e.raise(kVecUD);
    const unsigned size = i.op[0].size;
    const uint64_t at = e.ea(i, m);
    uint64_t off = 0, sel = 0;
    if (!e.read_mem(m.seg, at, size, off) || !e.read_mem(m.seg, at + size, 2, sel)) return Flow::Fault;
    if (!load_segment(e, sreg, static_cast<uint16_t>(sel))) return Flow::Fault;
    if (sreg == kSs) e.s.interrupt_shadow = true;
    e.set_reg(i.op[0], off);
    return Flow::Next;
}

}  // namespace

void register_segment(HandlerTable& t) {
    t.set(ZYDIS_MNEMONIC_LGDT, exec_load_table<false>);
    t.set(ZYDIS_MNEMONIC_LIDT, exec_load_table<true>);
    t.set(ZYDIS_MNEMONIC_SGDT, exec_store_table<false>);
    t.set(ZYDIS_MNEMONIC_SIDT, exec_store_table<true>);
    t.set(ZYDIS_MNEMONIC_LLDT, exec_load_system_segment<false>);
    t.set(ZYDIS_MNEMONIC_LTR, exec_load_system_segment<true>);
    t.set(ZYDIS_MNEMONIC_SLDT, exec_store_system_selector<false>);
    t.set(ZYDIS_MNEMONIC_STR, exec_store_system_selector<true>);
    t.set(ZYDIS_MNEMONIC_LAR, exec_load_descriptor_info<false>);
    t.set(ZYDIS_MNEMONIC_LSL, exec_load_descriptor_info<true>);
    t.set(ZYDIS_MNEMONIC_VERR, exec_verify<false>);
    t.set(ZYDIS_MNEMONIC_VERW, exec_verify<true>);
    t.set(ZYDIS_MNEMONIC_LDS, exec_load_far_pointer<kDs>, true);
    t.set(ZYDIS_MNEMONIC_LES, exec_load_far_pointer<kEs>, true);
    t.set(ZYDIS_MNEMONIC_LSS, exec_load_far_pointer<kSs>, true);
    t.set(ZYDIS_MNEMONIC_LFS, exec_load_far_pointer<kFs>, true);
    t.set(ZYDIS_MNEMONIC_LGS, exec_load_far_pointer<kGs>, true);
}

}  // namespace popek::hv::emu
