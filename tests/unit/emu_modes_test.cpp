// Leaving and re-entering long mode the way Linux's decompressor trampoline
// does (6.1: far return to compatibility mode, paging off, PAE on, paging on,
// far return to 64-bit code), and real-mode interrupt delivery.
#include <gtest/gtest.h>

#include "emu_env.hpp"

namespace popek::hv::emu::test {
namespace {

constexpr uint64_t kRecord = Machine::kData + 0x800;

TEST(EmuModes, LinuxStyleTrampolineThroughLegacyProtectedMode) {
    Machine m;
    const uint64_t tramp = Machine::kCode + 0x800, back64 = Machine::kCode + 0xc00;
    Asm a(Machine::kCode);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_ESP), I(0x8f000)});
    const uint64_t after_at = Machine::kCode + 0x100;
    a(ZYDIS_MNEMONIC_PUSH, {I(static_cast<int64_t>(after_at))});
    a(ZYDIS_MNEMONIC_PUSH, {I(Machine::kKernel32Cs)});
    a(ZYDIS_MNEMONIC_PUSH, {I(static_cast<int64_t>(tramp))});
    a.bytes({0x48, 0xcb});  // LRETQ
    m.load(Machine::kCode, a.code);

    Asm after(after_at);
    after(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RBX), I(0x64)});
    after(ZYDIS_MNEMONIC_HLT);
    m.load(after_at, after.code);

    Asm t(tramp, ZYDIS_MACHINE_MODE_LONG_COMPAT_32);
    t(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EAX), I(Machine::kKernelDs)});
    t(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_DS), R(ZYDIS_REGISTER_AX)});
    t(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_SS), R(ZYDIS_REGISTER_AX)});
    t(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EAX), R(ZYDIS_REGISTER_CR0)});
    t(ZYDIS_MNEMONIC_BTR, {R(ZYDIS_REGISTER_EAX), I(31)});
    t(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_CR0), R(ZYDIS_REGISTER_EAX)});  // paging off: legacy mode
    t(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_ECX), I(static_cast<int32_t>(msr::EFER))});
    t(ZYDIS_MNEMONIC_RDMSR);
    t(ZYDIS_MNEMONIC_MOV, {M(4, ZYDIS_REGISTER_NONE, kRecord), R(ZYDIS_REGISTER_EAX)});
    t(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EAX), I(5)});
    t.bytes({0x40});  // INC EAX (a REX prefix in 64-bit mode)
    t(ZYDIS_MNEMONIC_MOV, {M(4, ZYDIS_REGISTER_NONE, kRecord + 8), R(ZYDIS_REGISTER_EAX)});
    t(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EAX), R(ZYDIS_REGISTER_CR4)});
    t(ZYDIS_MNEMONIC_OR, {R(ZYDIS_REGISTER_EAX), I(0x20)});
    t(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_CR4), R(ZYDIS_REGISTER_EAX)});
    t(ZYDIS_MNEMONIC_PUSH, {I(Machine::kKernelCs)});
    t(ZYDIS_MNEMONIC_PUSH, {I(static_cast<int64_t>(back64))});
    t(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EAX), R(ZYDIS_REGISTER_CR0)});
    t(ZYDIS_MNEMONIC_BTS, {R(ZYDIS_REGISTER_EAX), I(31)});
    t(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_CR0), R(ZYDIS_REGISTER_EAX)});  // compatibility mode again
    t.bytes({0xcb});  // LRET (32-bit)
    m.load(tramp, t.code);

    m.load(back64, {0xc3});  // RETQ to after_at

    m.st().rip = Machine::kCode;
    ASSERT_EQ(m.resume().kind, ExitKind::Halt);
    EXPECT_EQ(m.peek<uint32_t>(kRecord) & efer::LMA, 0u);       // long mode was left
    EXPECT_NE(m.peek<uint32_t>(kRecord) & efer::LME, 0u);
    EXPECT_EQ(m.peek<uint32_t>(kRecord + 8), 6u);                // 0x40 ran as INC EAX
    EXPECT_EQ(m.st().gpr[kRbx], 0x64u);
    EXPECT_TRUE(in_64bit_code(m.st()));
    EXPECT_EQ(m.st().seg[kCs].selector, Machine::kKernelCs);
    EXPECT_EQ(m.st().gpr[kRsp], 0x8f000u);
}

TEST(EmuModes, RealModeInterruptThroughTheIvt) {
    Machine m;
    CpuState& s = m.st();
    s.cr0 = cr0::ET;
    s.efer = 0;
    s.cr4 = 0;
    for (auto& seg : s.seg) seg = Segment{0, 0xffff, 0, 3, 1, 0, 0, 1, 0, 0, 0, 0};
    s.seg[kCs].type = 11;
    s.idtr = {0, 0x3ff};
    s.gpr[kRsp] = 0x7000;
    m.cpu().state_changed();
    // IVT[0x10] = 0x0000:0x0600; the handler sets AX and IRETs.
    m.poke<uint16_t>(0x10 * 4, 0x600);
    m.poke<uint16_t>(0x10 * 4 + 2, 0);
    m.load(0x600, {0xb8, 0x34, 0x12, 0xcf});  // MOV AX, 0x1234; IRET
    m.load(0x500, {0xcd, 0x10, 0x89, 0xc3, 0xf4});  // INT 0x10; MOV BX, AX; HLT
    s.rip = 0x500;
    ASSERT_EQ(m.resume().kind, ExitKind::Halt);
    EXPECT_EQ(s.gpr[kRbx] & 0xffff, 0x1234u);
    EXPECT_EQ(s.gpr[kRsp], 0x7000u);
    EXPECT_EQ(s.rip, 0x505u);
}

}  // namespace
}  // namespace popek::hv::emu::test
