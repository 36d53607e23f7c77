// The architectural state of one emulated x86-64 CPU: plain data, no
// behaviour beyond conversions to and from the hv interface's structs, so the
// interpreter, a later JIT and snapshots all work on the same struct.
#pragma once

#include <array>
#include <cstdint>

#include "hv/x86_state.hpp"

namespace popek::hv::emu {

// General-purpose registers in x86 encoding order (ModRM/REX numbering).
enum Gpr : uint8_t {
    kRax, kRcx, kRdx, kRbx, kRsp, kRbp, kRsi, kRdi,
    kR8, kR9, kR10, kR11, kR12, kR13, kR14, kR15,
};

// Segment registers in x86 encoding order (MOV Sreg numbering).
enum Sreg : uint8_t { kEs, kCs, kSs, kDs, kFs, kGs };

namespace rflags {
inline constexpr uint64_t CF = 1ULL << 0;
inline constexpr uint64_t Fixed1 = 1ULL << 1;  // always reads as 1
inline constexpr uint64_t PF = 1ULL << 2;
inline constexpr uint64_t AF = 1ULL << 4;
inline constexpr uint64_t ZF = 1ULL << 6;
inline constexpr uint64_t SF = 1ULL << 7;
inline constexpr uint64_t TF = 1ULL << 8;
inline constexpr uint64_t IF = 1ULL << 9;
inline constexpr uint64_t DF = 1ULL << 10;
inline constexpr uint64_t OF = 1ULL << 11;
inline constexpr uint64_t IOPL = 3ULL << 12;
inline constexpr uint64_t NT = 1ULL << 14;
inline constexpr uint64_t RF = 1ULL << 16;
inline constexpr uint64_t VM = 1ULL << 17;
inline constexpr uint64_t AC = 1ULL << 18;
inline constexpr uint64_t VIF = 1ULL << 19;
inline constexpr uint64_t VIP = 1ULL << 20;
inline constexpr uint64_t ID = 1ULL << 21;
inline constexpr uint64_t Arith = CF | PF | AF | ZF | SF | OF;
// Bits software can change at all (the rest read as 0, bit 1 as 1).
inline constexpr uint64_t Writable = Arith | TF | IF | DF | IOPL | NT | RF | VM | AC | VIF | VIP | ID;
}  // namespace rflags

namespace cr0 {
inline constexpr uint64_t PE = 1ULL << 0, MP = 1ULL << 1, EM = 1ULL << 2, TS = 1ULL << 3;
inline constexpr uint64_t ET = 1ULL << 4, NE = 1ULL << 5, WP = 1ULL << 16, AM = 1ULL << 18;
inline constexpr uint64_t NW = 1ULL << 29, CD = 1ULL << 30, PG = 1ULL << 31;
}  // namespace cr0

namespace cr4 {
inline constexpr uint64_t VME = 1ULL << 0, PVI = 1ULL << 1, TSD = 1ULL << 2, DE = 1ULL << 3;
inline constexpr uint64_t PSE = 1ULL << 4, PAE = 1ULL << 5, MCE = 1ULL << 6, PGE = 1ULL << 7;
inline constexpr uint64_t PCE = 1ULL << 8, OSFXSR = 1ULL << 9, OSXMMEXCPT = 1ULL << 10;
inline constexpr uint64_t UMIP = 1ULL << 11, LA57 = 1ULL << 12, FSGSBASE = 1ULL << 16;
inline constexpr uint64_t PCIDE = 1ULL << 17, OSXSAVE = 1ULL << 18, SMEP = 1ULL << 20, SMAP = 1ULL << 21;
}  // namespace cr4

namespace efer {
inline constexpr uint64_t SCE = 1ULL << 0, LME = 1ULL << 8, LMA = 1ULL << 10, NXE = 1ULL << 11;
}  // namespace efer

// The MSRs the engine implements, by index.
namespace msr {
inline constexpr uint32_t TSC = 0x10, APIC_BASE = 0x1b, TSC_ADJUST = 0x3b, BIOS_SIGN_ID = 0x8b, MTRRCAP = 0xfe;
inline constexpr uint32_t SYSENTER_CS = 0x174, SYSENTER_ESP = 0x175, SYSENTER_EIP = 0x176;
inline constexpr uint32_t MISC_ENABLE = 0x1a0, PAT = 0x277, MTRR_DEF_TYPE = 0x2ff, TSC_DEADLINE = 0x6e0;
inline constexpr uint32_t MTRR_PHYS_FIRST = 0x200, MTRR_PHYS_LAST = 0x20f;  // 8 base/mask pairs
inline constexpr uint32_t MTRR_FIX64K = 0x250, MTRR_FIX16K_80000 = 0x258, MTRR_FIX16K_A0000 = 0x259;
inline constexpr uint32_t MTRR_FIX4K_FIRST = 0x268, MTRR_FIX4K_LAST = 0x26f;
inline constexpr uint32_t EFER = 0xc0000080, STAR = 0xc0000081, LSTAR = 0xc0000082;
inline constexpr uint32_t CSTAR = 0xc0000083, SFMASK = 0xc0000084;
inline constexpr uint32_t FS_BASE = 0xc0000100, GS_BASE = 0xc0000101, KERNEL_GS_BASE = 0xc0000102;
inline constexpr uint32_t TSC_AUX = 0xc0000103;
}  // namespace msr

struct Xmm {
    uint64_t lo = 0, hi = 0;
    bool operator==(const Xmm&) const = default;
};

// The x87 unit as FXSAVE sees it: `st` in stack order (st[i] is ST(i), the
// physical register (TOP + i) mod 8), `ftw` by physical register. Whatever
// changes TOP without pushing or popping must rotate `st` (x87_set_top).
struct X87 {
    uint16_t fcw = 0x37f;
    uint16_t fsw = 0;
    uint8_t ftw = 0;  // abridged tag word: bit i set = ST(i) valid
    uint16_t fop = 0;
    uint64_t fip = 0, fdp = 0;
    std::array<std::array<uint8_t, 10>, 8> st{};
};

// Sets TOP (FSW bits 11-13), keeping every physical register's value.
inline void x87_set_top(X87& f, unsigned top) {
    const unsigned old = (f.fsw >> 11) & 7u;
    const auto st = f.st;
    for (unsigned k = 0; k < 8; ++k) f.st[k] = st[(k + top - old) & 7u];
    f.fsw = static_cast<uint16_t>((f.fsw & ~0x3800u) | ((top & 7u) << 11));
}

struct Msrs {
    uint64_t star = 0, lstar = 0, cstar = 0, sfmask = 0;
    uint64_t kernel_gs_base = 0;
    uint64_t tsc_offset = 0;  // guest TSC = host TSC + tsc_offset
    uint64_t tsc_adjust = 0;  // IA32_TSC_ADJUST: what the guest added to its TSC through it
    // IA32_TSC_DEADLINE (guest TSC): only stored here; a backend with a local
    // APIC hands writes to it and keeps this copy current.
    uint64_t tsc_deadline = 0;
    uint64_t tsc_aux = 0;
    uint64_t apic_base = 0xfee00900;  // enabled, BSP
    uint64_t sysenter_cs = 0, sysenter_esp = 0, sysenter_eip = 0;
    uint64_t pat = 0x0007040600070406ULL;
    uint64_t misc_enable = 1;  // fast strings
    uint64_t mtrr_def_type = 0;
    std::array<uint64_t, 16> mtrr_var{};   // 0x200..0x20f
    std::array<uint64_t, 11> mtrr_fixed{};  // 0x250, 0x258, 0x259, 0x268..0x26f
};

struct CpuState {
    std::array<uint64_t, 16> gpr{};
    uint64_t rip = 0xfff0;
    uint64_t rflags = rflags::Fixed1;
    std::array<Segment, 6> seg{};  // ES CS SS DS FS GS, with hidden descriptor caches
    Segment ldtr{}, tr{};
    DescriptorTable gdtr{}, idtr{};
    uint64_t cr0 = cr0::ET | cr0::CD | cr0::NW;
    uint64_t cr2 = 0, cr3 = 0, cr4 = 0, cr8 = 0;
    uint64_t efer = 0;
    std::array<uint64_t, 4> dr{};
    uint64_t dr6 = 0xffff0ff0, dr7 = 0x400;
    uint64_t xcr0 = 1;
    Msrs msrs{};
    std::array<Xmm, 16> xmm{};
    uint32_t mxcsr = 0x1f80;
    X87 x87{};
    bool interrupt_shadow = false;  // STI / MOV SS just executed: no interrupt before the next instruction
    bool halted = false;
};

// Privilege level the CPU runs at.
inline unsigned cpl(const CpuState& s) { return s.seg[kCs].dpl; }
inline bool long_mode_active(const CpuState& s) { return (s.efer & efer::LMA) != 0; }
inline bool in_64bit_code(const CpuState& s) { return long_mode_active(s) && s.seg[kCs].l != 0; }

// The architectural power-on state (real mode at F000:FFF0).
CpuState reset_state();

Regs to_regs(const CpuState&);
void from_regs(CpuState&, const Regs&);
Sregs to_sregs(const CpuState&);
// Loads system registers as KVM's SET_SREGS does: caches as given, no checks.
void from_sregs(CpuState&, const Sregs&);

}  // namespace popek::hv::emu
