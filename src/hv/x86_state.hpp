// x86 vCPU state as popek sees it: plain structs owned by the hv interface,
// independent of KVM's layouts (the emulation backend fills the same ones).
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace popek::hv {

struct Regs {
    uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
    uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
    uint64_t rip, rflags;
};

struct Segment {
    uint64_t base;
    uint32_t limit;
    uint16_t selector;
    uint8_t type;     // 4-bit descriptor type
    uint8_t present, dpl, db, s, l, g, avl;
    uint8_t unusable;
};

struct DescriptorTable {
    uint64_t base;
    uint16_t limit;
};

struct Sregs {
    Segment cs, ds, es, fs, gs, ss, tr, ldt;
    DescriptorTable gdt, idt;
    uint64_t cr0, cr2, cr3, cr4, cr8;
    uint64_t efer;
    uint64_t apic_base;
};

// One CPUID leaf/subleaf as the guest will see it.
struct CpuidEntry {
    uint32_t function;
    uint32_t index;
    bool index_significant;  // the leaf has subleaves selected by ECX
    uint32_t eax, ebx, ecx, edx;
};

struct MsrEntry {
    uint32_t index;
    uint64_t value;
};

}  // namespace popek::hv
