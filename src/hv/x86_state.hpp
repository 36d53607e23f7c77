// x86 vCPU state as popek sees it: plain structs owned by the hv interface,
// independent of KVM's layouts (the emulation backend fills the same ones).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace popek::hv {

struct Regs {
    uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
    uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
    uint64_t rip, rflags;

    bool operator==(const Regs&) const = default;
};

struct Segment {
    uint64_t base;
    uint32_t limit;
    uint16_t selector;
    uint8_t type;     // 4-bit descriptor type
    uint8_t present, dpl, db, s, l, g, avl;
    uint8_t unusable;

    bool operator==(const Segment&) const = default;
};

struct DescriptorTable {
    uint64_t base;
    uint16_t limit;

    bool operator==(const DescriptorTable&) const = default;
};

struct Sregs {
    Segment cs, ds, es, fs, gs, ss, tr, ldt;
    DescriptorTable gdt, idt;
    uint64_t cr0, cr2, cr3, cr4, cr8;
    uint64_t efer;
    uint64_t apic_base;

    bool operator==(const Sregs&) const = default;
};

// One CPUID leaf/subleaf as the guest will see it.
struct CpuidEntry {
    uint32_t function;
    uint32_t index;
    bool index_significant;  // the leaf has subleaves selected by ECX
    uint32_t eax, ebx, ecx, edx;

    bool operator==(const CpuidEntry&) const = default;
};

struct MsrEntry {
    uint32_t index;
    uint64_t value;

    bool operator==(const MsrEntry&) const = default;
};

struct DebugRegs {
    std::array<uint64_t, 4> db;  // DR0-DR3
    uint64_t dr6, dr7;

    bool operator==(const DebugRegs&) const = default;
};

// Exceptions, interrupts and NMIs the vCPU has accepted but not yet delivered
// (the x86 event-injection state that must survive a snapshot).
struct VcpuEvents {
    uint8_t exception_injected, exception_nr, exception_has_error_code;
    uint32_t exception_error_code;
    uint8_t interrupt_injected, interrupt_nr, interrupt_soft, interrupt_shadow;
    uint8_t nmi_injected, nmi_pending, nmi_masked;
    uint32_t sipi_vector;
    // System-management mode: in SMM, an SMI pending, SMM entered from an NMI
    // handler, an INIT latched while in SMM.
    uint8_t smm, smi_pending, smm_inside_nmi, latched_init;

    bool operator==(const VcpuEvents&) const = default;
};

// Everything a vCPU is, for snapshots and migration. Layouts that the
// architecture defines travel as bytes: `xsave` is the XSAVE area (legacy
// region, header, extended components at their CPUID offsets) and `lapic`
// the 1 KiB local-APIC register page.
struct VcpuState {
    Regs regs{};
    Sregs sregs{};
    std::vector<MsrEntry> msrs;           // every MSR the backend saves, TSC included
    std::vector<uint8_t> xsave;
    std::vector<MsrEntry> xcrs;           // extended control registers (XCR0): index, value
    std::vector<uint8_t> lapic;
    VcpuEvents events{};
    DebugRegs debug{};
    uint32_t mp_state = 0;                // 0 runnable, 1 uninitialized, 2 INIT received, 3 halted, 4 SIPI received

    bool operator==(const VcpuState&) const = default;
};

// The platform state a backend keeps outside the vCPUs: interrupt
// controllers, PIT and the VM clock. Backend-defined bytes tagged with the
// backend's name; a backend refuses state that another one saved.
struct VmState {
    std::string backend;  // Hypervisor::name() of the saver
    std::vector<std::pair<std::string, std::vector<uint8_t>>> blobs;  // e.g. "pic-master", "ioapic", "pit"
    uint64_t clock_ns = 0;  // guest clock (kvmclock) at save time

    bool operator==(const VmState&) const = default;
};

}  // namespace popek::hv
