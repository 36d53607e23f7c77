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

TEST(EmuModes, FarJumpsAndCalls) {
    Machine m;
    const uint64_t compat = Machine::kCode + 0x800, back = Machine::kCode + 0xc00, callee = Machine::kCode + 0xe00;
    const uint64_t ptrs = Machine::kData;
    m.poke<uint32_t>(ptrs, static_cast<uint32_t>(compat));  // m16:32 -> compatibility mode
    m.poke<uint16_t>(ptrs + 4, Machine::kKernel32Cs);
    m.poke<uint64_t>(ptrs + 16, callee);                     // m16:64 -> 64-bit callee
    m.poke<uint16_t>(ptrs + 24, Machine::kKernelCs);
    Asm a(Machine::kCode);
    a.bytes({0xff, 0x2c, 0x25});  // JMP FAR [ptrs] (m16:32)
    const auto p32 = static_cast<uint32_t>(ptrs);
    a.bytes({static_cast<uint8_t>(p32), static_cast<uint8_t>(p32 >> 8), static_cast<uint8_t>(p32 >> 16),
             static_cast<uint8_t>(p32 >> 24)});
    m.load(Machine::kCode, a.code);
    // Compatibility mode: JMP ptr16:32 back to 64-bit code.
    std::vector<uint8_t> c = {0xea};
    for (int k = 0; k < 4; ++k) c.push_back(static_cast<uint8_t>(back >> (8 * k)));
    c.push_back(Machine::kKernelCs);
    c.push_back(0);
    m.load(compat, c);
    Asm b(back);
    b.bytes({0x48, 0xff, 0x1c, 0x25});  // CALL FAR [ptrs + 16] (m16:64)
    const auto p64 = static_cast<uint32_t>(ptrs + 16);
    b.bytes({static_cast<uint8_t>(p64), static_cast<uint8_t>(p64 >> 8), static_cast<uint8_t>(p64 >> 16),
             static_cast<uint8_t>(p64 >> 24)});
    b(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EBX), I(1)});
    b(ZYDIS_MNEMONIC_HLT);
    m.load(back, b.code);
    Asm f(callee);
    f(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RCX), M(8, ZYDIS_REGISTER_RSP, 8)});  // the pushed CS
    f.bytes({0x48, 0xcb});  // LRETQ
    m.load(callee, f.code);
    m.st().rip = Machine::kCode;
    ASSERT_EQ(m.resume().kind, ExitKind::Halt);
    EXPECT_EQ(m.st().gpr[kRbx], 1u);
    EXPECT_EQ(m.st().gpr[kRcx], Machine::kKernelCs);
    EXPECT_EQ(m.st().gpr[kRsp], Machine::kStackTop);
    EXPECT_TRUE(in_64bit_code(m.st()));
}

TEST(EmuModes, TrapFlagSingleSteps) {
    Machine m;
    const uint64_t counter = Machine::kData + 0x800;
    Asm h(Machine::kHandlers);
    h(ZYDIS_MNEMONIC_INC, {M(8, ZYDIS_REGISTER_NONE, static_cast<int64_t>(counter))});
    h(ZYDIS_MNEMONIC_IRETQ);
    m.load(Machine::kHandlers, h.code);
    m.set_gate(kVecDB, Machine::kHandlers);
    Asm a(Machine::kCode);
    a(ZYDIS_MNEMONIC_PUSHFQ);
    a(ZYDIS_MNEMONIC_OR, {M(8, ZYDIS_REGISTER_RSP), I(0x100)});
    a(ZYDIS_MNEMONIC_POPFQ);  // sets TF: the next instruction is the first to trap
    a(ZYDIS_MNEMONIC_NOP);
    a(ZYDIS_MNEMONIC_NOP);
    a(ZYDIS_MNEMONIC_NOP);
    a(ZYDIS_MNEMONIC_PUSHFQ);
    a(ZYDIS_MNEMONIC_AND, {M(8, ZYDIS_REGISTER_RSP), I(~0x100)});
    a(ZYDIS_MNEMONIC_POPFQ);  // clears TF, but traps itself
    a(ZYDIS_MNEMONIC_NOP);
    a(ZYDIS_MNEMONIC_HLT);
    ASSERT_EQ(m.run(a.code).kind, ExitKind::Halt);
    EXPECT_EQ(m.peek<uint64_t>(counter), 6u);
    EXPECT_NE(m.st().dr6 & (1ULL << 14), 0u);
}

TEST(EmuModes, LslAndLar) {
    Machine m;
    Asm a(Machine::kCode);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EAX), I(Machine::kKernelDs)});
    a(ZYDIS_MNEMONIC_LSL, {R(ZYDIS_REGISTER_EBX), R(ZYDIS_REGISTER_EAX)});
    a(ZYDIS_MNEMONIC_SETZ, {R(ZYDIS_REGISTER_R8B)});
    a(ZYDIS_MNEMONIC_LAR, {R(ZYDIS_REGISTER_ECX), R(ZYDIS_REGISTER_EAX)});
    a(ZYDIS_MNEMONIC_XOR, {R(ZYDIS_REGISTER_EAX), R(ZYDIS_REGISTER_EAX)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EDX), I(-1)});
    a(ZYDIS_MNEMONIC_LSL, {R(ZYDIS_REGISTER_EDX), R(ZYDIS_REGISTER_EAX)});  // null selector: ZF=0, EDX kept
    a(ZYDIS_MNEMONIC_SETZ, {R(ZYDIS_REGISTER_R9B)});
    a(ZYDIS_MNEMONIC_HLT);
    ASSERT_EQ(m.run(a.code).kind, ExitKind::Halt);
    EXPECT_EQ(m.st().gpr[kRbx], 0xffffffffu);
    EXPECT_EQ(m.st().gpr[kR8] & 0xff, 1u);
    EXPECT_EQ(m.st().gpr[kRcx], 0x00cf9300u);
    EXPECT_EQ(m.st().gpr[kRdx], 0xffffffffu);
    EXPECT_EQ(m.st().gpr[kR9] & 0xff, 0u);
}

TEST(EmuModes, XlatFarPointerLoadsAndVerify) {
    Machine m;
    const uint64_t table = Machine::kData, ptr = Machine::kData + 0x100;
    m.poke<uint8_t>(table + 5, 0x5a);
    m.poke<uint64_t>(ptr, 0x123456789);
    m.poke<uint16_t>(ptr + 8, Machine::kKernelDs);
    Asm a(Machine::kCode);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EBX), I(static_cast<int64_t>(table))});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EAX), I(0x7705)});
    a.bytes({0xd7});  // XLAT
    a(ZYDIS_MNEMONIC_LFS, {R(ZYDIS_REGISTER_RCX), M(10, ZYDIS_REGISTER_NONE, static_cast<int64_t>(ptr))});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EDX), I(Machine::kKernelCs)});
    a(ZYDIS_MNEMONIC_VERR, {R(ZYDIS_REGISTER_DX)});
    a(ZYDIS_MNEMONIC_SETZ, {R(ZYDIS_REGISTER_R8B)});  // code 0x10 is readable
    a(ZYDIS_MNEMONIC_VERW, {R(ZYDIS_REGISTER_DX)});
    a(ZYDIS_MNEMONIC_SETZ, {R(ZYDIS_REGISTER_R9B)});  // but not writable
    a(ZYDIS_MNEMONIC_HLT);
    ASSERT_EQ(m.run(a.code).kind, ExitKind::Halt);
    EXPECT_EQ(m.st().gpr[kRax], 0x775au);
    EXPECT_EQ(m.st().gpr[kRcx], 0x123456789u);
    EXPECT_EQ(m.st().seg[kFs].selector, Machine::kKernelDs);
    EXPECT_EQ(m.st().gpr[kR8] & 0xff, 1u);
    EXPECT_EQ(m.st().gpr[kR9] & 0xff, 0u);
}

}  // namespace
}  // namespace popek::hv::emu::test
