// The engine's CPUID (only features it implements) and its MSRs.
#include <x86intrin.h>

#include <cstring>

#include "hv/emu/handlers.hpp"

namespace popek::hv::emu {

namespace {

// CPUID.1:EDX — FPU (state only, required by x86-64 Linux), DE, PSE, TSC,
// MSR, PAE, CX8, MTRR (as storage), PGE, CMOV, PAT, CLFSH, FXSR, SSE, SSE2.
constexpr uint32_t kLeaf1Edx = (1u << 0) | (1u << 2) | (1u << 3) | (1u << 4) | (1u << 5) | (1u << 6) | (1u << 8) |
                               (1u << 12) | (1u << 13) | (1u << 15) | (1u << 16) | (1u << 19) | (1u << 24) |
                               (1u << 25) | (1u << 26);
// CPUID.1:ECX — CX16, POPCNT.
constexpr uint32_t kLeaf1Ecx = (1u << 13) | (1u << 23);
// CPUID.7.0:EBX — TSC_ADJUST, BMI1 (ANDN, BEXTR, BLSI, BLSMSK, BLSR, TZCNT), ERMS (REP MOVSB/STOSB are fine to use).
constexpr uint32_t kLeaf7Ebx = (1u << 1) | (1u << 3) | (1u << 9);
// CPUID.80000007:EDX — invariant TSC: RDTSC reads the host's TSC (plus an
// offset), which runs at a constant rate. With TSC_ADJUST this tells Linux
// it needs no clocksource watchdog, which would otherwise compare the TSC
// with a tick count that lags on a slow interpreter and throw the TSC out.
constexpr uint32_t kExt7Edx = 1u << 8;
// CPUID.80000001:ECX — LAHF/SAHF in 64-bit mode, LZCNT (ABM), PREFETCHW.
constexpr uint32_t kExt1Ecx = (1u << 0) | (1u << 5) | (1u << 8);
// CPUID.80000001:EDX — SYSCALL, NX, 1G pages, RDTSCP, LM.
constexpr uint32_t kExt1Edx = (1u << 11) | (1u << 20) | (1u << 26) | (1u << 27) | (1u << 29);

void put_string(const char* text, uint32_t out[4]) {
    char buf[16] = {};
    std::strncpy(buf, text, sizeof buf);
    std::memcpy(out, buf, 16);
}

bool canonical(uint64_t v) { return static_cast<uint64_t>(static_cast<int64_t>(v << 16) >> 16) == v; }

bool valid_pat(uint64_t v) {
    for (int k = 0; k < 8; ++k) {
        const uint64_t t = (v >> (k * 8)) & 0xff;
        if (t == 2 || t == 3 || t > 7) return false;
    }
    return true;
}

int fixed_mtrr_index(uint32_t index) {
    if (index == msr::MTRR_FIX64K) return 0;
    if (index == msr::MTRR_FIX16K_80000) return 1;
    if (index == msr::MTRR_FIX16K_A0000) return 2;
    if (index >= msr::MTRR_FIX4K_FIRST && index <= msr::MTRR_FIX4K_LAST) {
        return 3 + static_cast<int>(index - msr::MTRR_FIX4K_FIRST);
    }
    return -1;
}

}  // namespace

void cpuid(const CpuState&, uint32_t leaf, uint32_t subleaf, uint32_t out[4]) {
    out[0] = out[1] = out[2] = out[3] = 0;
    switch (leaf) {
    case 0:
        out[0] = 7;
        std::memcpy(&out[1], "Genu", 4);
        std::memcpy(&out[3], "ineI", 4);
        std::memcpy(&out[2], "ntel", 4);
        break;
    case 1:
        out[0] = 0x663;          // family 6, model 6, stepping 3 (as QEMU's qemu64)
        out[1] = (8u << 8) | (1u << 16);  // CLFLUSH line 64 bytes, one logical CPU, APIC id 0
        out[2] = kLeaf1Ecx;
        out[3] = kLeaf1Edx;
        break;
    case 7:
        if (subleaf == 0) out[1] = kLeaf7Ebx;
        break;
    case 0x80000000: out[0] = 0x80000008; break;
    case 0x80000001:
        out[2] = kExt1Ecx;
        out[3] = kExt1Edx;
        break;
    case 0x80000002: put_string("popek emulated ", out); break;
    case 0x80000003: put_string("x86-64 CPU", out); break;
    case 0x80000004: break;
    case 0x80000007: out[3] = kExt7Edx; break;
    case 0x80000008: out[0] = kPhysAddrBits | (48u << 8); break;
    default: break;
    }
}

std::vector<CpuidEntry> supported_cpuid() {
    static constexpr uint32_t kLeaves[] = {0, 1, 7, 0x80000000, 0x80000001, 0x80000002,
                                           0x80000003, 0x80000004, 0x80000007, 0x80000008};
    const CpuState none{};
    std::vector<CpuidEntry> out;
    for (uint32_t leaf : kLeaves) {
        uint32_t r[4];
        cpuid(none, leaf, 0, r);
        out.push_back(CpuidEntry{leaf, 0, leaf == 7, r[0], r[1], r[2], r[3]});
    }
    return out;
}

void Engine::cpuid(uint32_t leaf, uint32_t subleaf, uint32_t out[4]) const {
    if (cpuid_table_.empty()) {
        emu::cpuid(s, leaf, subleaf, out);
        return;
    }
    out[0] = out[1] = out[2] = out[3] = 0;
    for (const CpuidEntry& c : cpuid_table_) {
        if (c.function == leaf && (!c.index_significant || c.index == subleaf)) {
            out[0] = c.eax;
            out[1] = c.ebx;
            out[2] = c.ecx;
            out[3] = c.edx;
            return;
        }
    }
}

bool read_msr(Engine& e, uint32_t index, uint64_t& v) {
    const CpuState& s = e.s;
    const Msrs& m = s.msrs;
    if (index >= msr::MTRR_PHYS_FIRST && index <= msr::MTRR_PHYS_LAST) {
        v = m.mtrr_var[index - msr::MTRR_PHYS_FIRST];
        return true;
    }
    if (const int f = fixed_mtrr_index(index); f >= 0) {
        v = m.mtrr_fixed[static_cast<size_t>(f)];
        return true;
    }
    switch (index) {
    case msr::TSC: v = __rdtsc() + m.tsc_offset; return true;
    case msr::TSC_ADJUST: v = m.tsc_adjust; return true;
    case msr::TSC_DEADLINE: v = m.tsc_deadline; return true;
    case msr::APIC_BASE: v = m.apic_base; return true;
    case msr::MTRRCAP: v = 0x508; return true;  // 8 variable ranges, fixed ranges, write-combining
    case msr::SYSENTER_CS: v = m.sysenter_cs; return true;
    case msr::SYSENTER_ESP: v = m.sysenter_esp; return true;
    case msr::SYSENTER_EIP: v = m.sysenter_eip; return true;
    case msr::MISC_ENABLE: v = m.misc_enable; return true;
    case msr::PAT: v = m.pat; return true;
    case msr::MTRR_DEF_TYPE: v = m.mtrr_def_type; return true;
    case msr::EFER: v = s.efer; return true;
    case msr::STAR: v = m.star; return true;
    case msr::LSTAR: v = m.lstar; return true;
    case msr::CSTAR: v = m.cstar; return true;
    case msr::SFMASK: v = m.sfmask; return true;
    case msr::FS_BASE: v = s.seg[kFs].base; return true;
    case msr::GS_BASE: v = s.seg[kGs].base; return true;
    case msr::KERNEL_GS_BASE: v = m.kernel_gs_base; return true;
    case msr::TSC_AUX: v = m.tsc_aux; return true;
    case msr::BIOS_SIGN_ID: v = 0; return true;  // no microcode loaded
    default: return false;
    }
}

bool write_msr(Engine& e, uint32_t index, uint64_t v) {
    CpuState& s = e.s;
    Msrs& m = s.msrs;
    if (index >= msr::MTRR_PHYS_FIRST && index <= msr::MTRR_PHYS_LAST) {
        m.mtrr_var[index - msr::MTRR_PHYS_FIRST] = v;
        return true;
    }
    if (const int f = fixed_mtrr_index(index); f >= 0) {
        m.mtrr_fixed[static_cast<size_t>(f)] = v;
        return true;
    }
    switch (index) {
    case msr::TSC: m.tsc_offset = v - __rdtsc(); return true;
    // Moves the TSC by the change. (Unlike hardware, a WRMSR to IA32_TSC does
    // not move TSC_ADJUST: restoring TSC_ADJUST and then TSC is then exact.)
    case msr::TSC_ADJUST:
        m.tsc_offset += v - m.tsc_adjust;
        m.tsc_adjust = v;
        return true;
    // Stops the engine at the next block so that the backend arms its timer.
    case msr::TSC_DEADLINE:
        m.tsc_deadline = v;
        e.request_exit();
        return true;
    case msr::APIC_BASE:
        if ((v & ~(0xfffff000ULL | (1ULL << 11) | (1ULL << 8))) != 0 || (v >> kPhysAddrBits) != 0) return false;
        m.apic_base = v;
        return true;
    case msr::SYSENTER_CS: m.sysenter_cs = v & 0xffff; return true;
    case msr::SYSENTER_ESP:
        if (!canonical(v)) return false;
        m.sysenter_esp = v;
        return true;
    case msr::SYSENTER_EIP:
        if (!canonical(v)) return false;
        m.sysenter_eip = v;
        return true;
    case msr::MISC_ENABLE: m.misc_enable = v; return true;
    case msr::PAT:
        if (!valid_pat(v)) return false;
        m.pat = v;
        return true;
    case msr::MTRR_DEF_TYPE: m.mtrr_def_type = v & 0xcff; return true;
    case msr::EFER: {
        if ((v & ~(efer::SCE | efer::LME | efer::LMA | efer::NXE)) != 0) return false;
        // LME cannot change while paging is on; LMA is read-only.
        if ((s.cr0 & cr0::PG) != 0 && ((v ^ s.efer) & efer::LME) != 0) return false;
        const uint64_t nv = (v & ~efer::LMA) | (s.efer & efer::LMA);
        if (((nv ^ s.efer) & efer::NXE) != 0) e.mmu().flush_all();
        s.efer = nv;
        return true;
    }
    case msr::STAR: m.star = v; return true;
    case msr::LSTAR:
        if (!canonical(v)) return false;
        m.lstar = v;
        return true;
    case msr::CSTAR:
        if (!canonical(v)) return false;
        m.cstar = v;
        return true;
    case msr::SFMASK: m.sfmask = v & 0xffffffff; return true;
    case msr::FS_BASE:
    case msr::GS_BASE:
    case msr::KERNEL_GS_BASE:
        if (!canonical(v)) return false;
        if (index == msr::FS_BASE) s.seg[kFs].base = v;
        if (index == msr::GS_BASE) s.seg[kGs].base = v;
        if (index == msr::KERNEL_GS_BASE) m.kernel_gs_base = v;
        return true;
    case msr::TSC_AUX:
        if ((v >> 32) != 0) return false;
        m.tsc_aux = v;
        return true;
    case msr::BIOS_SIGN_ID: return true;  // Linux clears it before reading the microcode revision
    default: return false;
    }
}

std::vector<uint32_t> msr_indices() {
    // TSC_ADJUST before TSC: a restore writes them in this order.
    std::vector<uint32_t> out = {msr::TSC_ADJUST,  msr::TSC,         msr::APIC_BASE,  msr::MTRRCAP,      msr::SYSENTER_CS,
                                 msr::SYSENTER_ESP, msr::SYSENTER_EIP, msr::MISC_ENABLE, msr::PAT,
                                 msr::MTRR_DEF_TYPE, msr::MTRR_FIX64K, msr::MTRR_FIX16K_80000,
                                 msr::MTRR_FIX16K_A0000, msr::EFER, msr::STAR, msr::LSTAR, msr::CSTAR,
                                 msr::SFMASK, msr::FS_BASE, msr::GS_BASE, msr::KERNEL_GS_BASE, msr::TSC_AUX};
    for (uint32_t k = msr::MTRR_PHYS_FIRST; k <= msr::MTRR_PHYS_LAST; ++k) out.push_back(k);
    for (uint32_t k = msr::MTRR_FIX4K_FIRST; k <= msr::MTRR_FIX4K_LAST; ++k) out.push_back(k);
    return out;
}

bool get_msr(Engine& e, uint32_t index, uint64_t& value) { return read_msr(e, index, value); }

bool set_msr(Engine& e, uint32_t index, uint64_t value) {
    if (index == msr::MTRRCAP) return true;  // read-only; restoring the same value is fine
    return write_msr(e, index, value);
}

}  // namespace popek::hv::emu
