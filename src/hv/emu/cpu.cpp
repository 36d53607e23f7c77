#include "hv/emu/cpu.hpp"

namespace popek::hv::emu {

namespace {

Segment real_mode_segment(uint16_t selector, uint8_t type) {
    Segment s{};
    s.selector = selector;
    s.base = static_cast<uint64_t>(selector) << 4;
    s.limit = 0xffff;
    s.type = type;
    s.present = 1;
    s.s = 1;
    return s;
}

}  // namespace

CpuState reset_state() {
    CpuState s;
    for (auto& seg : s.seg) seg = real_mode_segment(0, 3);  // read/write data, accessed
    s.seg[kCs] = real_mode_segment(0xf000, 11);            // execute/read code, accessed
    s.seg[kCs].base = 0xffff0000;
    s.ldtr.limit = 0xffff;
    s.ldtr.type = 2;
    s.ldtr.present = 1;
    s.tr.limit = 0xffff;
    s.tr.type = 11;
    s.tr.present = 1;
    s.gdtr.limit = 0xffff;
    s.idtr.limit = 0xffff;
    s.gpr[kRdx] = 0x600;  // family 6 as the reset signature
    return s;
}

Regs to_regs(const CpuState& s) {
    const auto& g = s.gpr;
    return Regs{g[kRax], g[kRbx], g[kRcx], g[kRdx], g[kRsi], g[kRdi], g[kRsp], g[kRbp],
                g[kR8],  g[kR9],  g[kR10], g[kR11], g[kR12], g[kR13], g[kR14], g[kR15],
                s.rip,   s.rflags};
}

void from_regs(CpuState& s, const Regs& r) {
    auto& g = s.gpr;
    g[kRax] = r.rax; g[kRbx] = r.rbx; g[kRcx] = r.rcx; g[kRdx] = r.rdx;
    g[kRsi] = r.rsi; g[kRdi] = r.rdi; g[kRsp] = r.rsp; g[kRbp] = r.rbp;
    g[kR8] = r.r8;   g[kR9] = r.r9;   g[kR10] = r.r10; g[kR11] = r.r11;
    g[kR12] = r.r12; g[kR13] = r.r13; g[kR14] = r.r14; g[kR15] = r.r15;
    s.rip = r.rip;
    s.rflags = (r.rflags & rflags::Writable) | rflags::Fixed1;
}

Sregs to_sregs(const CpuState& s) {
    Sregs r{};
    r.cs = s.seg[kCs]; r.ds = s.seg[kDs]; r.es = s.seg[kEs];
    r.fs = s.seg[kFs]; r.gs = s.seg[kGs]; r.ss = s.seg[kSs];
    r.tr = s.tr;
    r.ldt = s.ldtr;
    r.gdt = s.gdtr;
    r.idt = s.idtr;
    r.cr0 = s.cr0; r.cr2 = s.cr2; r.cr3 = s.cr3; r.cr4 = s.cr4; r.cr8 = s.cr8;
    r.efer = s.efer;
    r.apic_base = s.msrs.apic_base;
    return r;
}

void from_sregs(CpuState& s, const Sregs& r) {
    s.seg[kCs] = r.cs; s.seg[kDs] = r.ds; s.seg[kEs] = r.es;
    s.seg[kFs] = r.fs; s.seg[kGs] = r.gs; s.seg[kSs] = r.ss;
    s.tr = r.tr;
    s.ldtr = r.ldt;
    s.gdtr = r.gdt;
    s.idtr = r.idt;
    s.cr0 = r.cr0 | cr0::ET; s.cr2 = r.cr2; s.cr3 = r.cr3; s.cr4 = r.cr4; s.cr8 = r.cr8;
    s.efer = r.efer;
    s.msrs.apic_base = r.apic_base;
}

}  // namespace popek::hv::emu
