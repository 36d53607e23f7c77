#include "arch/x86/boot_cpu.hpp"

#include <array>
#include <cstring>

#include "arch/x86/boot.hpp"
#include "arch/x86/layout.hpp"
#include "base/bytes.hpp"

namespace popek::arch::x86 {

namespace {

// Descriptor attribute bits 40..55 (type, S, DPL, P, AVL, L, D/B, G).
constexpr uint16_t kCode32Flags = 0xc09b;  // G, D, P, S, execute/read accessed
constexpr uint16_t kCode64Flags = 0xa09b;  // G, L, P, S, execute/read accessed
constexpr uint16_t kDataFlags = 0xc093;    // G, B, P, S, read/write accessed
constexpr uint16_t kTssFlags = 0x008b;     // P, busy 32/64-bit TSS
constexpr uint32_t kFlatLimit = 0xfffff;   // 4 GiB in 4 KiB units
constexpr uint32_t kTssLimit = 0x67;

struct GdtEntry {
    uint16_t flags;
    uint32_t base;
    uint32_t limit;  // 20 bits, in the units the G flag selects
};

// Index = selector >> 3. The TSS takes two slots (a 64-bit system descriptor).
constexpr std::array<GdtEntry, kBootGdtEntries> kGdt{{
    {0, 0, 0},
    {kCode32Flags, 0, kFlatLimit},
    {kCode64Flags, 0, kFlatLimit},
    {kDataFlags, 0, kFlatLimit},
    {kTssFlags, 0, kTssLimit},
    {0, 0, 0},
}};

constexpr uint64_t encode(const GdtEntry& e) {
    return ((uint64_t{e.base} & 0xff000000) << 32) | ((uint64_t{e.flags} & 0xf0ff) << 40) |
           ((uint64_t{e.limit} & 0xf0000) << 32) | ((uint64_t{e.base} & 0x00ffffff) << 16) |
           (uint64_t{e.limit} & 0xffff);
}

uint8_t bit(uint16_t flags, int shift) { return static_cast<uint8_t>((flags >> shift) & 1); }

constexpr uint64_t kPageSize = 4096;
constexpr uint64_t kPtePresentWrite = 0x3;
constexpr uint64_t kPtePageSize = 0x80;
constexpr uint64_t kBootPdPages = 4;  // one page directory per GiB
constexpr uint64_t kEntriesPerTable = 512;

}  // namespace

hv::Segment boot_segment(uint16_t selector) {
    hv::Segment s{};
    s.selector = selector;
    const size_t index = selector >> 3;
    if (index == 0 || index >= kGdt.size() || kGdt[index].flags == 0) {
        s.unusable = 1;
        return s;
    }
    const GdtEntry& e = kGdt[index];
    s.base = e.base;
    s.g = bit(e.flags, 15);
    s.limit = s.g != 0 ? (e.limit << 12) | 0xfff : e.limit;  // byte granular, as KVM caches it
    s.type = static_cast<uint8_t>(e.flags & 0xf);
    s.s = bit(e.flags, 4);
    s.dpl = static_cast<uint8_t>((e.flags >> 5) & 3);
    s.present = bit(e.flags, 7);
    s.avl = bit(e.flags, 12);
    s.l = bit(e.flags, 13);
    s.db = bit(e.flags, 14);
    return s;
}

base::Result<void> write_boot_gdt(const memory::GuestMemory& mem) {
    std::array<uint64_t, kBootGdtEntries> table{};
    for (size_t i = 0; i < kGdt.size(); ++i) table[i] = encode(kGdt[i]);
    return mem.write_obj(kBootGdt, table);
}

base::Result<void> write_boot_page_tables(const memory::GuestMemory& mem) {
    std::array<uint64_t, kEntriesPerTable> pml4{};
    pml4[0] = kBootPdpt | kPtePresentWrite;
    POPEK_TRY(mem.write_obj(kBootPml4, pml4));

    std::array<uint64_t, kEntriesPerTable> pdpt{};
    for (uint64_t i = 0; i < kBootPdPages; ++i) pdpt[i] = (kBootPd + i * kPageSize) | kPtePresentWrite;
    POPEK_TRY(mem.write_obj(kBootPdpt, pdpt));

    std::array<uint64_t, kEntriesPerTable * kBootPdPages> pd{};
    for (uint64_t i = 0; i < pd.size(); ++i) pd[i] = (i * 2 * base::MiB) | kPtePresentWrite | kPtePageSize;
    return mem.write_obj(kBootPd, pd);
}

void boot_cpu_state(const BootInfo& info, hv::Regs& regs, hv::Sregs& sregs) {
    regs = hv::Regs{};
    regs.rip = info.entry;
    regs.rflags = 0x2;  // the always-one bit; interrupts off
    regs.rsp = kBootStack;
    regs.rbp = kBootStack;

    sregs = hv::Sregs{};
    sregs.gdt = {kBootGdt, static_cast<uint16_t>(kBootGdtEntries * 8 - 1)};
    sregs.idt = {0, 0};  // an exception before the kernel's IDT is a triple fault
    sregs.tr = boot_segment(kBootTssSelector);
    sregs.ldt = hv::Segment{};
    sregs.ldt.limit = 0xffff;
    sregs.ldt.type = 2;  // LDT
    sregs.ldt.present = 1;
    sregs.apic_base = kLapicStart | kApicBaseEnable | kApicBaseBsp;

    const hv::Segment data = boot_segment(kBootDataSelector);
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
    if (info.protocol == BootProtocol::Pvh) {
        sregs.cs = boot_segment(kBootCode32Selector);
        sregs.cr0 = kCr0Pe | kCr0Et;
        regs.rbx = info.boot_data;
    } else {
        sregs.cs = boot_segment(kBootCode64Selector);
        sregs.cr0 = kCr0Pe | kCr0Et | kCr0Pg;
        sregs.cr3 = kBootPml4;
        sregs.cr4 = kCr4Pae;
        sregs.efer = kEferLme | kEferLma;
        regs.rsi = info.boot_data;
    }
}

}  // namespace popek::arch::x86
