#include "arch/x86/boot.hpp"

#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "arch/x86/boot_cpu.hpp"
#include "arch/x86/layout.hpp"

namespace popek::arch::x86 {
namespace {

memory::GuestMemory make_memory(uint64_t size = 64 * MiB) {
    auto ranges = ram_ranges(size);
    auto mem = memory::GuestMemory::create(ranges);
    EXPECT_TRUE(mem.ok()) << mem.error().message;
    return std::move(mem).value();
}

template <class T>
T get(const memory::GuestMemory& mem, uint64_t gpa) {
    T v{};
    EXPECT_TRUE(mem.read(gpa, {reinterpret_cast<uint8_t*>(&v), sizeof v}).ok());
    return v;
}

void expect_flat(const hv::Segment& s, uint16_t selector, uint8_t type) {
    EXPECT_EQ(s.selector, selector);
    EXPECT_EQ(s.base, 0u);
    EXPECT_EQ(s.limit, 0xffffffffu);
    EXPECT_EQ(s.type, type);
    EXPECT_EQ(s.present, 1);
    EXPECT_EQ(s.s, 1);
    EXPECT_EQ(s.dpl, 0);
    EXPECT_EQ(s.g, 1);
    EXPECT_EQ(s.unusable, 0);
}

void expect_valid_tr_and_ldt(const hv::Sregs& sregs) {
    EXPECT_EQ(sregs.tr.type, 11);  // busy 32/64-bit TSS
    EXPECT_EQ(sregs.tr.present, 1);
    EXPECT_EQ(sregs.tr.s, 0);
    EXPECT_EQ(sregs.tr.unusable, 0);
    EXPECT_EQ(sregs.ldt.type, 2);
    EXPECT_EQ(sregs.ldt.present, 1);
    EXPECT_EQ(sregs.ldt.s, 0);
}

TEST(Boot, EmptyAndUnknownKernelsAreRejected) {
    auto mem = make_memory();
    auto r = load_kernel(mem, BootConfig{});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message, "kernel image is empty");
    const std::vector<uint8_t> text(4096, 'A');
    r = load_kernel(mem, BootConfig{text, {}, "", 0});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message, "kernel image is neither an ELF with a PVH entry note nor a Linux bzImage");
}

TEST(Boot, PvhStartsInFlat32BitProtectedMode) {
    BootInfo info{BootProtocol::Pvh, 0x1000850, 0x1000000, 0x4000000, 0, 0, kPvhStartInfo};
    hv::Regs regs{};
    hv::Sregs sregs{};
    regs.rax = 0xdead;  // overwritten: the state is complete
    boot_cpu_state(info, regs, sregs);
    EXPECT_EQ(regs.rip, 0x1000850u);
    EXPECT_EQ(regs.rbx, kPvhStartInfo);
    EXPECT_EQ(regs.rflags, 2u);
    EXPECT_EQ(regs.rax, 0u);
    EXPECT_EQ(sregs.cr0, kCr0Pe | kCr0Et);
    EXPECT_EQ(sregs.cr4, 0u);
    EXPECT_EQ(sregs.efer, 0u);
    expect_flat(sregs.cs, kBootCode32Selector, 0xb);
    EXPECT_EQ(sregs.cs.db, 1);
    EXPECT_EQ(sregs.cs.l, 0);
    for (const auto* s : {&sregs.ds, &sregs.es, &sregs.fs, &sregs.gs, &sregs.ss}) {
        expect_flat(*s, kBootDataSelector, 0x3);
        EXPECT_EQ(s->db, 1);
    }
    expect_valid_tr_and_ldt(sregs);
    EXPECT_EQ(sregs.apic_base, 0xfee00900u);
}

TEST(Boot, Linux64StartsInLongMode) {
    BootInfo info{BootProtocol::Linux64, kKernelStart + 0x200, kKernelStart, 0x2000000, 0, 0, kZeroPage};
    hv::Regs regs{};
    hv::Sregs sregs{};
    boot_cpu_state(info, regs, sregs);
    EXPECT_EQ(regs.rip, kKernelStart + 0x200);
    EXPECT_EQ(regs.rsi, kZeroPage);
    EXPECT_EQ(regs.rflags, 2u);
    EXPECT_EQ(sregs.cr0 & (kCr0Pe | kCr0Pg), kCr0Pe | kCr0Pg);
    EXPECT_EQ(sregs.cr3, kBootPml4);
    EXPECT_EQ(sregs.cr4 & kCr4Pae, kCr4Pae);
    EXPECT_EQ(sregs.efer, kEferLme | kEferLma);
    expect_flat(sregs.cs, 0x10, 0xb);
    EXPECT_EQ(sregs.cs.l, 1);
    EXPECT_EQ(sregs.cs.db, 0);
    for (const auto* s : {&sregs.ds, &sregs.es, &sregs.fs, &sregs.gs, &sregs.ss}) expect_flat(*s, 0x18, 0x3);
    expect_valid_tr_and_ldt(sregs);
    EXPECT_EQ(sregs.gdt.base, kBootGdt);
    EXPECT_EQ(sregs.gdt.limit, kBootGdtEntries * 8 - 1);
}

// The GDT in memory must say what the cached segments say, for when the
// kernel reloads a selector before installing its own GDT.
TEST(Boot, GdtInMemoryMatchesTheSegments) {
    auto mem = make_memory();
    ASSERT_TRUE(write_boot_gdt(mem).ok());
    const auto gdt = get<std::array<uint64_t, kBootGdtEntries>>(mem, kBootGdt);
    EXPECT_EQ(gdt[0], 0u);
    for (uint16_t sel : {kBootCode32Selector, kBootCode64Selector, kBootDataSelector, kBootTssSelector}) {
        const uint64_t d = gdt[sel >> 3];
        const hv::Segment s = boot_segment(sel);
        EXPECT_EQ((d >> 40) & 0xf, s.type) << sel;
        EXPECT_EQ((d >> 44) & 1, s.s) << sel;
        EXPECT_EQ((d >> 47) & 1, s.present) << sel;
        EXPECT_EQ((d >> 53) & 1, s.l) << sel;
        EXPECT_EQ((d >> 54) & 1, s.db) << sel;
        EXPECT_EQ((d >> 55) & 1, s.g) << sel;
        const uint64_t limit = (d & 0xffff) | ((d >> 32) & 0xf0000);
        EXPECT_EQ(s.g != 0 ? (limit << 12) | 0xfff : limit, s.limit) << sel;
    }
    EXPECT_EQ(gdt[kBootCode64Selector >> 3], 0x00af9b000000ffffull);
    EXPECT_EQ(gdt[kBootDataSelector >> 3], 0x00cf93000000ffffull);
}

// Walks the boot page tables like the MMU would.
TEST(Boot, PageTablesIdentityMapTheFirst4GiB) {
    auto mem = make_memory();
    ASSERT_TRUE(write_boot_page_tables(mem).ok());
    const uint64_t addr_mask = 0x000ffffffffff000ull;
    for (uint64_t va : {uint64_t{0}, uint64_t{0x1000200}, 3 * GiB + 5, 4 * GiB - 1, uint64_t{0xfee00000}}) {
        const uint64_t pml4e = get<uint64_t>(mem, kBootPml4 + ((va >> 39) & 511) * 8);
        ASSERT_EQ(pml4e & 3, 3u);
        const uint64_t pdpte = get<uint64_t>(mem, (pml4e & addr_mask) + ((va >> 30) & 511) * 8);
        ASSERT_EQ(pdpte & 3, 3u) << va;
        const uint64_t pde = get<uint64_t>(mem, (pdpte & addr_mask) + ((va >> 21) & 511) * 8);
        ASSERT_EQ(pde & 0x83, 0x83u) << va;
        EXPECT_EQ((pde & ~uint64_t{0x1fffff} & addr_mask) | (va & 0x1fffff), va);
    }
    // Nothing above 4 GiB.
    EXPECT_EQ(get<uint64_t>(mem, kBootPdpt + 4 * 8), 0u);
    EXPECT_LE(kBootPd + 4 * 4096, kCmdline);
}

}  // namespace
}  // namespace popek::arch::x86
