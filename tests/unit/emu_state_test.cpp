// CpuState conversions to and from the hv interface's structs, the reset
// state, and guest accesses to memory that is not RAM (MmioHandler).
#include <gtest/gtest.h>

#include <vector>

#include "arch/x86/cpuid.hpp"
#include "emu_env.hpp"

namespace popek::hv::emu::test {
namespace {

TEST(EmuState, RegsAndSregsRoundTrip) {
    CpuState s = reset_state();
    for (unsigned k = 0; k < 16; ++k) s.gpr[k] = 0x1000 + k;
    s.rip = 0xabc;
    s.rflags = 0x246;
    const Regs r = to_regs(s);
    EXPECT_EQ(r.rax, 0x1000u);
    EXPECT_EQ(r.rcx, 0x1001u);
    EXPECT_EQ(r.rbx, 0x1003u);
    EXPECT_EQ(r.rsp, 0x1004u);
    EXPECT_EQ(r.r15, 0x100fu);
    EXPECT_EQ(r.rip, 0xabcu);
    CpuState t = reset_state();
    from_regs(t, r);
    EXPECT_EQ(t.gpr, s.gpr);
    EXPECT_EQ(t.rflags, 0x246u);

    Machine m;
    const Sregs sr = to_sregs(m.st());
    EXPECT_EQ(sr.cs.selector, Machine::kKernelCs);
    EXPECT_EQ(sr.cs.l, 1);
    EXPECT_EQ(sr.cr3, Machine::kPml4);
    EXPECT_EQ(sr.efer, m.st().efer);
    CpuState u = reset_state();
    from_sregs(u, sr);
    EXPECT_EQ(u.seg[kCs].selector, Machine::kKernelCs);
    EXPECT_EQ(u.seg[kSs].selector, Machine::kKernelDs);
    EXPECT_EQ(u.gdtr.base, Machine::kGdt);
    EXPECT_EQ(u.tr.selector, Machine::kTssSel);
    EXPECT_EQ(u.cr0, m.st().cr0);
    EXPECT_EQ(u.cr4, m.st().cr4);
}

TEST(EmuState, ResetStateRunsRealModeCodeAtTheResetVector) {
    // The reset vector (linear 0xFFFFFFF0) is not RAM in the test machine, so
    // after checking the reset state run from 0000:7C00, where a BIOS would jump.
    Machine m;
    CpuState& s = m.st();
    s = reset_state();
    EXPECT_EQ(s.rip, 0xfff0u);
    EXPECT_EQ(s.seg[kCs].base, 0xffff0000u);
    s.seg[kCs].selector = 0;
    s.seg[kCs].base = 0;
    s.rip = 0x7c00;
    m.cpu().state_changed();
    m.load(0x7c00, {0xb8, 0x34, 0x12, 0x01, 0xc0, 0xf4});  // MOV AX, 0x1234; ADD AX, AX; HLT
    ASSERT_EQ(m.resume().kind, ExitKind::Halt);
    EXPECT_EQ(s.gpr[kRax] & 0xffff, 0x2468u);
}

struct RecordingMmio final : MmioHandler {
    struct Access {
        uint64_t gpa;
        unsigned size;
        bool write;
        uint64_t value;
    };
    std::vector<Access> log;
    uint64_t mmio_read(uint64_t gpa, unsigned size) override {
        log.push_back({gpa, size, false, 0});
        return 0x1122334455667788ULL & (size == 8 ? ~0ULL : (1ULL << (size * 8)) - 1);
    }
    void mmio_write(uint64_t gpa, unsigned size, uint64_t value) override { log.push_back({gpa, size, true, value}); }
};

TEST(EmuState, NonRamAccessesGoToTheMmioHandler) {
    RecordingMmio mmio;
    Machine m(&mmio);
    const uint64_t dev = 16ULL << 20;  // just past RAM
    m.poke<uint64_t>(Machine::kPd + 8 * 8, dev | 0x7 | 0x80);  // map it with a 2M page
    Asm a(Machine::kCode);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RCX), I(static_cast<int64_t>(dev + 0x10))});
    a(ZYDIS_MNEMONIC_MOV, {M(4, ZYDIS_REGISTER_RCX), I(0xabcd)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RAX), M(8, ZYDIS_REGISTER_RCX, 8)});
    a(ZYDIS_MNEMONIC_OR, {M(2, ZYDIS_REGISTER_RCX, 0x20), I(1)});
    a(ZYDIS_MNEMONIC_HLT);
    ASSERT_EQ(m.run(a.code).kind, ExitKind::Halt);
    ASSERT_EQ(mmio.log.size(), 4u);
    EXPECT_TRUE(mmio.log[0].write);
    EXPECT_EQ(mmio.log[0].gpa, dev + 0x10);
    EXPECT_EQ(mmio.log[0].size, 4u);
    EXPECT_EQ(mmio.log[0].value, 0xabcdu);
    EXPECT_FALSE(mmio.log[1].write);
    EXPECT_EQ(mmio.log[1].gpa, dev + 0x18);
    EXPECT_EQ(mmio.log[1].size, 8u);
    EXPECT_EQ(m.st().gpr[kRax], 0x1122334455667788u);
    EXPECT_FALSE(mmio.log[2].write);  // read-modify-write: read, then write
    EXPECT_TRUE(mmio.log[3].write);
    EXPECT_EQ(mmio.log[3].value, 0x7789u);
}

// A ROM on the MMIO bus.
struct RomMmio final : MmioHandler {
    std::vector<uint8_t> bytes;
    uint64_t base = 0;
    unsigned reads = 0;
    uint64_t mmio_read(uint64_t gpa, unsigned size) override {
        ++reads;
        uint64_t v = 0;
        for (unsigned k = 0; k < size; ++k) {
            const uint64_t at = gpa + k - base;
            v |= static_cast<uint64_t>(at < bytes.size() ? bytes[at] : 0xcc) << (8 * k);
        }
        return v;
    }
    void mmio_write(uint64_t, unsigned, uint64_t) override {}
};

TEST(EmuState, CodeOutsideRamRunsFromTheMmioHandler) {
    RomMmio rom;
    rom.base = 16ULL << 20;
    rom.bytes = {0xb8, 7, 0, 0, 0, 0x83, 0xc0, 0x01, 0xf4};  // MOV EAX, 7; ADD EAX, 1; HLT
    Machine m(&rom);
    m.poke<uint64_t>(Machine::kPd + 8 * 8, rom.base | 0x7 | 0x80);
    m.st().rip = rom.base;
    ASSERT_EQ(m.resume().kind, ExitKind::Halt);
    EXPECT_EQ(m.st().gpr[kRax], 8u);
    EXPECT_LE(rom.reads, 3u * 15);  // an instruction's worth of bytes per instruction, not a page
}

TEST(EmuState, MmioExitsLikeKvm) {
    Machine m;  // no MmioHandler: non-RAM accesses become exits
    m.cpu().set_mmio_exits(true);
    const uint64_t dev = 16ULL << 20;
    m.poke<uint64_t>(Machine::kPd + 8 * 8, dev | 0x7 | 0x80);
    m.poke<uint32_t>(Machine::kData, 0x00636261);  // "abc"
    Asm a(Machine::kCode);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RCX), I(static_cast<int64_t>(dev))});
    a(ZYDIS_MNEMONIC_MOV, {M(4, ZYDIS_REGISTER_RCX, 0x10), I(0xabcd)});
    const uint64_t load = a.here();
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RAX), M(8, ZYDIS_REGISTER_RCX, 0x18)});
    a(ZYDIS_MNEMONIC_OR, {M(2, ZYDIS_REGISTER_RCX, 0x20), I(1)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EDX), M(4, ZYDIS_REGISTER_RCX, 0xffe)});  // spans two pages
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RSI), I(Machine::kData)});
    a(ZYDIS_MNEMONIC_LEA, {R(ZYDIS_REGISTER_RDI), M(8, ZYDIS_REGISTER_RCX, 0x40)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RCX), I(3)});
    a(ZYDIS_MNEMONIC_MOVSB, {}, ZYDIS_ATTRIB_HAS_REP);
    a(ZYDIS_MNEMONIC_HLT);

    RunExit e = m.run(a.code);
    ASSERT_EQ(e.kind, ExitKind::Mmio);
    EXPECT_TRUE(e.is_write);
    EXPECT_EQ(e.addr, dev + 0x10);
    EXPECT_EQ(e.size, 4);
    EXPECT_EQ(e.data[0] | e.data[1] << 8, 0xabcd);
    EXPECT_EQ(m.st().rip, load);  // the store completed

    e = m.resume();
    ASSERT_EQ(e.kind, ExitKind::Mmio);
    EXPECT_FALSE(e.is_write);
    EXPECT_EQ(e.addr, dev + 0x18);
    EXPECT_EQ(e.size, 8);
    EXPECT_EQ(m.st().rip, load);  // the load waits for its data
    const uint64_t value = 0x1122334455667788;
    std::memcpy(e.data, &value, 8);

    e = m.resume();  // OR: read, then (after the data) write
    ASSERT_EQ(e.kind, ExitKind::Mmio);
    EXPECT_FALSE(e.is_write);
    EXPECT_EQ(m.st().gpr[kRax], value);
    e.data[0] = 0x88;
    e.data[1] = 0x77;
    e = m.resume();
    ASSERT_EQ(e.kind, ExitKind::Mmio);
    EXPECT_TRUE(e.is_write);
    EXPECT_EQ(e.addr, dev + 0x20);
    EXPECT_EQ(e.data[0] | e.data[1] << 8, 0x7789);

    // Four byte reads for the access across pages, each answered in turn.
    for (uint8_t k = 0; k < 4; ++k) {
        e = m.resume();
        ASSERT_EQ(e.kind, ExitKind::Mmio);
        EXPECT_FALSE(e.is_write);
        EXPECT_EQ(e.addr, dev + 0xffe + k);
        e.data[0] = static_cast<uint8_t>(0x11 * (k + 1));
    }
    std::string sent;
    for (e = m.resume(); e.kind == ExitKind::Mmio; e = m.resume()) {
        EXPECT_TRUE(e.is_write);
        sent += static_cast<char>(e.data[0]);
    }
    EXPECT_EQ(e.kind, ExitKind::Halt);
    EXPECT_EQ(m.st().gpr[kRdx], 0x44332211u);
    EXPECT_EQ(sent, "abc");
    EXPECT_EQ(m.st().gpr[kRcx], 0u);
}

TEST(EmuState, CpuidTableThroughPopeksPolicy) {
    const std::vector<CpuidEntry> supported = supported_cpuid();
    ASSERT_FALSE(supported.empty());
    EXPECT_EQ(arch::x86::cpuid_vendor(supported), arch::x86::CpuVendor::Intel);
    Machine m;
    m.cpu().set_cpuid(arch::x86::cpuid_policy(supported, {1, 2, 0}));
    Asm a(Machine::kCode);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EAX), I(1)});
    a(ZYDIS_MNEMONIC_CPUID);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_R8), R(ZYDIS_REGISTER_RBX)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_R9), R(ZYDIS_REGISTER_RCX)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_R10), R(ZYDIS_REGISTER_RDX)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EAX), I(static_cast<int32_t>(0x80000001u))});
    a(ZYDIS_MNEMONIC_CPUID);
    a(ZYDIS_MNEMONIC_HLT);
    ASSERT_EQ(m.run(a.code).kind, ExitKind::Halt);
    EXPECT_EQ(m.st().gpr[kR8] >> 24, 1u);                // APIC id of vCPU 1, from the policy
    EXPECT_NE(m.st().gpr[kR9] & (1u << 31), 0u);         // hypervisor bit, from the policy
    EXPECT_NE(m.st().gpr[kR10] & (1u << 26), 0u);        // SSE2, from the engine
    EXPECT_NE(m.st().gpr[kRdx] & (1u << 29), 0u);        // long mode, from the engine
}

TEST(EmuState, EveryListedMsrReadsAndRestores) {
    Machine m;
    m.st().msrs.lstar = 0xffffffff81000000;
    m.st().seg[kGs].base = 0xffff888000000000;
    Machine other;
    for (uint32_t index : msr_indices()) {
        uint64_t v = 0;
        ASSERT_TRUE(get_msr(m.cpu(), index, v)) << std::hex << index;
        EXPECT_TRUE(set_msr(other.cpu(), index, v)) << std::hex << index;
    }
    EXPECT_EQ(other.st().msrs.lstar, 0xffffffff81000000u);
    EXPECT_EQ(other.st().seg[kGs].base, 0xffff888000000000u);
    EXPECT_EQ(other.st().efer, m.st().efer);
    uint64_t v = 0;
    EXPECT_FALSE(get_msr(m.cpu(), 0x12345, v));
}

}  // namespace
}  // namespace popek::hv::emu::test
