// System instructions: control and debug registers, MSRs, CPUID, the TSC,
// HLT, CLI/STI, TLB and cache maintenance, UD2.
#include <x86intrin.h>

#include "hv/emu/handlers.hpp"

namespace popek::hv::emu {

namespace {

// CR4 bits the engine implements (the rest #GP when set).
constexpr uint64_t kCr4Supported = cr4::TSD | cr4::DE | cr4::PSE | cr4::PAE | cr4::MCE | cr4::PGE | cr4::PCE |
                                   cr4::OSFXSR | cr4::OSXMMEXCPT;
constexpr uint64_t kCr3Reserved = ~((1ULL << kPhysAddrBits) - 1);

bool privileged(Engine& e) {
    if ((e.s.cr0 & cr0::PE) != 0 && cpl(e.s) != 0) {
        e.raise(kVecGP, 0);
        return false;
    }
    return true;
}

bool write_cr0(Engine& e, uint64_t v) {
    CpuState& s = e.s;
    v |= cr0::ET;
    if ((v >> 32) != 0 || ((v & cr0::PG) && !(v & cr0::PE)) || ((v & cr0::NW) && !(v & cr0::CD))) {
        e.raise(kVecGP, 0);
        return false;
    }
    const bool paging_on = (v & cr0::PG) != 0 && (s.cr0 & cr0::PG) == 0;
    const bool paging_off = (v & cr0::PG) == 0 && (s.cr0 & cr0::PG) != 0;
    if (paging_on && (s.efer & efer::LME) != 0) {
        if ((s.cr4 & cr4::PAE) == 0) {
            e.raise(kVecGP, 0);
            return false;
        }
        s.efer |= efer::LMA;
    }
    if (paging_off && in_64bit_code(s)) {
        e.raise(kVecGP, 0);
        return false;
    }
    if (paging_off) s.efer &= ~efer::LMA;
    const uint64_t changed = s.cr0 ^ v;
    s.cr0 = v;
    if ((changed & (cr0::PG | cr0::WP | cr0::PE)) != 0) e.mmu().flush_all();
    return true;
}

bool write_cr4(Engine& e, uint64_t v) {
    CpuState& s = e.s;
    if ((v & ~kCr4Supported) != 0 || (long_mode_active(s) && (v & cr4::PAE) == 0)) {
        e.raise(kVecGP, 0);
        return false;
    }
    const uint64_t changed = s.cr4 ^ v;
    s.cr4 = v;
    if ((changed & (cr4::PGE | cr4::PAE | cr4::PSE)) != 0) e.mmu().flush_all();
    return true;
}

}  // namespace

Flow exec_mov_cr(Engine& e, const Insn& i) {
    if (!privileged(e)) return Flow::Fault;
    CpuState& s = e.s;
    const bool to_cr = i.op[0].kind == OpKind::Cr;
    const unsigned n = to_cr ? i.op[0].reg : i.op[1].reg;
    if (!to_cr) {
        uint64_t v = 0;
        switch (n) {
        case 0: v = s.cr0; break;
        case 2: v = s.cr2; break;
        case 3: v = s.cr3; break;
        case 4: v = s.cr4; break;
        case 8: v = s.cr8; break;
        default: return e.raise(kVecUD);
        }
        e.set_gpr(i.op[0].reg, i.op[0].size, v);
        return Flow::Next;
    }
    const uint64_t v = e.get_reg(i.op[1]);
    switch (n) {
    case 0: return write_cr0(e, v) ? Flow::Next : Flow::Fault;
    case 2: s.cr2 = v; return Flow::Next;
    case 3:
        if (long_mode_active(s) && (v & kCr3Reserved) != 0) return e.raise(kVecGP, 0);
        s.cr3 = v;
        e.mmu().flush_nonglobal();
        return Flow::Next;
    case 4: return write_cr4(e, v) ? Flow::Next : Flow::Fault;
    case 8:
        if (v > 15) return e.raise(kVecGP, 0);
        s.cr8 = v;
        return Flow::Next;
    default: return e.raise(kVecUD);
    }
}

Flow exec_mov_dr(Engine& e, const Insn& i) {
    if (!privileged(e)) return Flow::Fault;
    CpuState& s = e.s;
    const bool to_dr = i.op[0].kind == OpKind::Dr;
    unsigned n = to_dr ? i.op[0].reg : i.op[1].reg;
    if (n == 4 || n == 5) {
        if ((s.cr4 & cr4::DE) != 0) return e.raise(kVecUD);
        n += 2;
    }
    if (n > 7) return e.raise(kVecUD);
    if (!to_dr) {
        const uint64_t v = n < 4 ? s.dr[n] : n == 6 ? (s.dr6 | 0xffff0ff0) : (s.dr7 | 0x400);
        e.set_gpr(i.op[0].reg, i.op[0].size, v);
        return Flow::Next;
    }
    const uint64_t v = e.get_reg(i.op[1]);
    if (n < 4) {
        s.dr[n] = v;
    } else if ((v >> 32) != 0) {
        return e.raise(kVecGP, 0);
    } else if (n == 6) {
        s.dr6 = v | 0xffff0ff0;
    } else {
        s.dr7 = v | 0x400;  // breakpoints are stored, not armed
    }
    return Flow::Next;
}

namespace {

Flow exec_rdmsr(Engine& e, const Insn&) {
    if (!privileged(e)) return Flow::Fault;
    uint64_t v = 0;
    if (!read_msr(e, static_cast<uint32_t>(e.s.gpr[kRcx]), v)) return e.raise(kVecGP, 0);
    e.s.gpr[kRax] = v & 0xffffffff;
    e.s.gpr[kRdx] = v >> 32;
    return Flow::Next;
}

Flow exec_wrmsr(Engine& e, const Insn&) {
    if (!privileged(e)) return Flow::Fault;
    const uint64_t v = (e.s.gpr[kRax] & 0xffffffff) | (e.s.gpr[kRdx] << 32);
    if (!write_msr(e, static_cast<uint32_t>(e.s.gpr[kRcx]), v)) return e.raise(kVecGP, 0);
    return Flow::Next;
}

Flow exec_cpuid(Engine& e, const Insn&) {
    uint32_t r[4];
    e.cpuid(static_cast<uint32_t>(e.s.gpr[kRax]), static_cast<uint32_t>(e.s.gpr[kRcx]), r);
    e.s.gpr[kRax] = r[0];
    e.s.gpr[kRbx] = r[1];
    e.s.gpr[kRcx] = r[2];
    e.s.gpr[kRdx] = r[3];
    return Flow::Next;
}

template <bool with_aux>
Flow exec_rdtsc(Engine& e, const Insn&) {
    if ((e.s.cr4 & cr4::TSD) != 0 && cpl(e.s) != 0) return e.raise(kVecGP, 0);
    const uint64_t tsc = __rdtsc() + e.s.msrs.tsc_offset;
    e.s.gpr[kRax] = tsc & 0xffffffff;
    e.s.gpr[kRdx] = tsc >> 32;
    if (with_aux) e.s.gpr[kRcx] = e.s.msrs.tsc_aux & 0xffffffff;
    return Flow::Next;
}

Flow exec_hlt(Engine& e, const Insn&) {
    if (!privileged(e)) return Flow::Fault;
    e.s.halted = true;
    return Flow::Next;
}

bool iopl_allows(Engine& e) {
    if ((e.s.cr0 & cr0::PE) == 0) return true;
    const unsigned iopl = static_cast<unsigned>((e.s.rflags & rflags::IOPL) >> 12);
    if (cpl(e.s) <= iopl) return true;
    e.raise(kVecGP, 0);
    return false;
}

Flow exec_cli(Engine& e, const Insn&) {
    if (!iopl_allows(e)) return Flow::Fault;
    e.s.rflags &= ~rflags::IF;
    return Flow::Next;
}

Flow exec_sti(Engine& e, const Insn&) {
    if (!iopl_allows(e)) return Flow::Fault;
    if ((e.s.rflags & rflags::IF) == 0) e.s.interrupt_shadow = true;  // one more instruction first
    e.s.rflags |= rflags::IF;
    return Flow::Next;
}

Flow exec_invlpg(Engine& e, const Insn& i) {
    if (!privileged(e)) return Flow::Fault;
    const Operand& m = i.op[0];
    uint64_t off = e.ea(i, m);
    if (in_64bit_code(e.s)) {
        if (m.seg == kFs || m.seg == kGs) off += e.s.seg[m.seg].base;
    } else {
        off = (off + e.s.seg[m.seg].base) & 0xffffffff;
    }
    e.mmu().invlpg(off);  // a non-canonical address invalidates nothing
    return Flow::Next;
}

Flow exec_privileged_nop(Engine& e, const Insn&) { return privileged(e) ? Flow::Next : Flow::Fault; }
Flow exec_nop(Engine&, const Insn&) { return Flow::Next; }
Flow exec_ud(Engine& e, const Insn&) { return e.raise(kVecUD); }

Flow exec_clts(Engine& e, const Insn&) {
    if (!privileged(e)) return Flow::Fault;
    e.s.cr0 &= ~cr0::TS;
    return Flow::Next;
}

Flow exec_lmsw(Engine& e, const Insn& i) {
    if (!privileged(e)) return Flow::Fault;
    uint64_t v = 0;
    if (!e.read_op(i, i.op[0], v)) return Flow::Fault;
    // Sets or clears MP, EM, TS; can set PE but not clear it.
    const uint64_t nv = (e.s.cr0 & ~0xeULL) | (v & 0xf) | (e.s.cr0 & cr0::PE);
    return write_cr0(e, nv) ? Flow::Next : Flow::Fault;
}

Flow exec_smsw(Engine& e, const Insn& i) {
    const Operand& d = i.op[0];
    if (d.kind == OpKind::Mem) return e.write_mem(d.seg, e.ea(i, d), 2, e.s.cr0 & 0xffff) ? Flow::Next : Flow::Fault;
    e.set_reg(d, e.s.cr0);
    return Flow::Next;
}

}  // namespace

void register_system(HandlerTable& t) {
    t.set(ZYDIS_MNEMONIC_RDMSR, exec_rdmsr);
    t.set(ZYDIS_MNEMONIC_WRMSR, exec_wrmsr, true);  // EFER, FS/GS bases
    t.set(ZYDIS_MNEMONIC_CPUID, exec_cpuid);
    t.set(ZYDIS_MNEMONIC_RDTSC, exec_rdtsc<false>);
    t.set(ZYDIS_MNEMONIC_RDTSCP, exec_rdtsc<true>);
    t.set(ZYDIS_MNEMONIC_HLT, exec_hlt, true);
    t.set(ZYDIS_MNEMONIC_CLI, exec_cli);
    t.set(ZYDIS_MNEMONIC_STI, exec_sti, true);  // interrupts are checked between blocks
    t.set(ZYDIS_MNEMONIC_INVLPG, exec_invlpg, true);
    t.set(ZYDIS_MNEMONIC_WBINVD, exec_privileged_nop);
    t.set(ZYDIS_MNEMONIC_INVD, exec_privileged_nop);
    t.set(ZYDIS_MNEMONIC_CLFLUSH, exec_nop);
    t.set(ZYDIS_MNEMONIC_CLFLUSHOPT, exec_nop);
    t.set(ZYDIS_MNEMONIC_UD0, exec_ud, true);
    t.set(ZYDIS_MNEMONIC_UD1, exec_ud, true);
    t.set(ZYDIS_MNEMONIC_UD2, exec_ud, true);
    t.set(ZYDIS_MNEMONIC_CLTS, exec_clts);
    t.set(ZYDIS_MNEMONIC_LMSW, exec_lmsw, true);
    t.set(ZYDIS_MNEMONIC_SMSW, exec_smsw);
}

}  // namespace popek::hv::emu
