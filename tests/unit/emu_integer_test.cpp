// Integer instructions on the emulation engine: results, flags, stack and
// string operations in the flat 64-bit test machine.
#include <gtest/gtest.h>

#include "emu_env.hpp"

namespace popek::hv::emu::test {
namespace {

constexpr uint64_t kArith = rflags::Arith;

class EmuInteger : public ::testing::Test {
protected:
    Asm a{Machine::kCode};
    Machine m;
    RunExit run() {
        a(ZYDIS_MNEMONIC_HLT);
        RunExit e = m.run(a.code);
        EXPECT_EQ(e.kind, ExitKind::Halt);
        return e;
    }
    uint64_t g(Gpr r) { return m.st().gpr[r]; }
    uint64_t flags() { return m.st().rflags & kArith; }
};

TEST_F(EmuInteger, AddSetsCarryOverflowAndFriends) {
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EAX), I(0x7fffffff)});
    a(ZYDIS_MNEMONIC_ADD, {R(ZYDIS_REGISTER_EAX), I(1)});
    run();
    EXPECT_EQ(g(kRax), 0x80000000u);
    EXPECT_EQ(flags(), rflags::OF | rflags::SF | rflags::AF | rflags::PF);
}

TEST_F(EmuInteger, ThirtyTwoBitWritesZeroExtendEightAndSixteenMerge) {
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RAX), I(-1)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RBX), I(-1)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RCX), I(-1)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EAX), I(5)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_BX), I(5)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_CH), I(5)});
    run();
    EXPECT_EQ(g(kRax), 5u);
    EXPECT_EQ(g(kRbx), 0xffffffffffff0005u);
    EXPECT_EQ(g(kRcx), 0xffffffffffff05ffu);
}

TEST_F(EmuInteger, AdcSbbChainA128BitAdd) {
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RAX), I(-1)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RDX), I(1)});
    a(ZYDIS_MNEMONIC_ADD, {R(ZYDIS_REGISTER_RAX), I(1)});
    a(ZYDIS_MNEMONIC_ADC, {R(ZYDIS_REGISTER_RDX), I(0)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RBX), I(0)});
    a(ZYDIS_MNEMONIC_SUB, {R(ZYDIS_REGISTER_RBX), I(1)});
    a(ZYDIS_MNEMONIC_SBB, {R(ZYDIS_REGISTER_RCX), R(ZYDIS_REGISTER_RCX)});
    run();
    EXPECT_EQ(g(kRax), 0u);
    EXPECT_EQ(g(kRdx), 2u);
    EXPECT_EQ(g(kRcx), ~0ULL);  // borrow propagated
    EXPECT_EQ(flags() & rflags::CF, rflags::CF);
}

TEST_F(EmuInteger, IncDecKeepCarry) {
    a(ZYDIS_MNEMONIC_STC);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_AL), I(-1)});
    a(ZYDIS_MNEMONIC_INC, {R(ZYDIS_REGISTER_AL)});
    run();
    EXPECT_EQ(g(kRax) & 0xff, 0u);
    EXPECT_EQ(flags(), rflags::CF | rflags::ZF | rflags::AF | rflags::PF);
}

TEST_F(EmuInteger, ShiftByZeroLeavesFlagsAndByOneSetsOverflow) {
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RAX), I(1)});
    a(ZYDIS_MNEMONIC_STC);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_CL), I(0)});
    a(ZYDIS_MNEMONIC_SHL, {R(ZYDIS_REGISTER_RAX), R(ZYDIS_REGISTER_CL)});
    a(ZYDIS_MNEMONIC_SETB, {R(ZYDIS_REGISTER_BL)});  // CF survived
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_DL), I(0x40)});
    a(ZYDIS_MNEMONIC_SHL, {R(ZYDIS_REGISTER_DL), I(1)});  // 0x80: OF = MSB ^ CF = 1
    a(ZYDIS_MNEMONIC_SETO, {R(ZYDIS_REGISTER_BH)});
    run();
    EXPECT_EQ(g(kRax), 1u);
    EXPECT_EQ(g(kRbx) & 0xffff, 0x0101u);
    EXPECT_EQ(g(kRdx) & 0xff, 0x80u);
}

TEST_F(EmuInteger, MulDivAllSizes) {
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RAX), I(-1)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RCX), I(-1)});
    a(ZYDIS_MNEMONIC_MUL, {R(ZYDIS_REGISTER_RCX)});  // (2^64-1)^2 = 0xfffffffffffffffe_0000000000000001
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_R8), R(ZYDIS_REGISTER_RAX)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_R9), R(ZYDIS_REGISTER_RDX)});
    a(ZYDIS_MNEMONIC_DIV, {R(ZYDIS_REGISTER_RCX)});  // back to 2^64-1 remainder 0
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_R10), R(ZYDIS_REGISTER_RAX)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_AX), I(-7)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_BL), I(2)});
    a(ZYDIS_MNEMONIC_IDIV, {R(ZYDIS_REGISTER_BL)});  // -7 / 2 = -3 rem -1
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_R11), R(ZYDIS_REGISTER_RAX)});
    a(ZYDIS_MNEMONIC_IMUL, {R(ZYDIS_REGISTER_R12), R(ZYDIS_REGISTER_R10), I(-3)});
    run();
    EXPECT_EQ(g(kR8), 1u);
    EXPECT_EQ(g(kR9), 0xfffffffffffffffeu);
    EXPECT_EQ(g(kR10), ~0ULL);
    EXPECT_EQ(g(kR11) & 0xffff, 0xfffdu);  // AL = -3, AH = -1
    EXPECT_EQ(g(kR12), 3u);
}

TEST_F(EmuInteger, PushPopCallRetEnterLeave) {
    Asm sub(Machine::kCode + 0x800);
    sub(ZYDIS_MNEMONIC_ENTER, {I(16), I(0)});
    sub(ZYDIS_MNEMONIC_MOV, {M(8, ZYDIS_REGISTER_RBP, -8), I(0x1234)});
    sub(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RAX), M(8, ZYDIS_REGISTER_RBP, -8)});
    sub(ZYDIS_MNEMONIC_LEAVE);
    sub(ZYDIS_MNEMONIC_RET);
    m.load(Machine::kCode + 0x800, sub.code);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RBP), I(0x5555)});
    a(ZYDIS_MNEMONIC_PUSH, {I(-2)});
    a(ZYDIS_MNEMONIC_POP, {R(ZYDIS_REGISTER_RBX)});
    a(ZYDIS_MNEMONIC_CALL, {I(static_cast<int64_t>(Machine::kCode + 0x800))});
    a(ZYDIS_MNEMONIC_PUSHFQ);
    a(ZYDIS_MNEMONIC_POP, {R(ZYDIS_REGISTER_RCX)});
    run();
    EXPECT_EQ(g(kRbx), 0xfffffffffffffffeu);
    EXPECT_EQ(g(kRax), 0x1234u);
    EXPECT_EQ(g(kRbp), 0x5555u);
    EXPECT_EQ(g(kRsp), Machine::kStackTop);
    EXPECT_EQ(g(kRcx) & rflags::Fixed1, rflags::Fixed1);
}

TEST_F(EmuInteger, RepMovsbStosqScasb) {
    const char text[] = "hello, popek";
    std::memcpy(m.ram(Machine::kData), text, sizeof text);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RSI), I(Machine::kData)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RDI), I(Machine::kData + 0x100)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RCX), I(sizeof text)});
    a(ZYDIS_MNEMONIC_MOVSB, {}, ZYDIS_ATTRIB_HAS_REP);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RDI), I(Machine::kData + 0x200)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RCX), I(3)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RAX), I(0x0102030405060708)});
    a(ZYDIS_MNEMONIC_STOSQ, {}, ZYDIS_ATTRIB_HAS_REP);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RDI), I(Machine::kData)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RCX), I(100)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_AL), I(',')});
    a(ZYDIS_MNEMONIC_SCASB, {}, ZYDIS_ATTRIB_HAS_REPNE);
    run();
    EXPECT_STREQ(reinterpret_cast<const char*>(m.ram(Machine::kData + 0x100)), text);
    EXPECT_EQ(m.peek<uint64_t>(Machine::kData + 0x210), 0x0102030405060708u);
    EXPECT_EQ(g(kRdi), Machine::kData + 6);  // one past the comma
    EXPECT_EQ(g(kRcx), 94u);
}

TEST_F(EmuInteger, CmpxchgXaddBtBsfCmov) {
    m.poke<uint64_t>(Machine::kData, 10);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RAX), I(10)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RBX), I(20)});
    a(ZYDIS_MNEMONIC_CMPXCHG, {M(8, ZYDIS_REGISTER_NONE, Machine::kData), R(ZYDIS_REGISTER_RBX)},
      ZYDIS_ATTRIB_HAS_LOCK);
    a(ZYDIS_MNEMONIC_SETZ, {R(ZYDIS_REGISTER_R8B)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RCX), I(5)});
    a(ZYDIS_MNEMONIC_XADD, {M(8, ZYDIS_REGISTER_NONE, Machine::kData), R(ZYDIS_REGISTER_RCX)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RDX), I(0x100)});
    a(ZYDIS_MNEMONIC_BSF, {R(ZYDIS_REGISTER_R9), R(ZYDIS_REGISTER_RDX)});
    a(ZYDIS_MNEMONIC_BTS, {R(ZYDIS_REGISTER_RDX), I(3)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_R10), I(-1)});
    a(ZYDIS_MNEMONIC_CMOVNB, {R(ZYDIS_REGISTER_R10D), R(ZYDIS_REGISTER_ECX)});  // CF=0 from BTS: taken
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_R11), I(-1)});
    a(ZYDIS_MNEMONIC_CMOVB, {R(ZYDIS_REGISTER_R11D), R(ZYDIS_REGISTER_ECX)});  // not taken, still zero-extends
    run();
    EXPECT_EQ(g(kR8) & 0xff, 1u);
    EXPECT_EQ(m.peek<uint64_t>(Machine::kData), 25u);
    EXPECT_EQ(g(kRcx), 20u);
    EXPECT_EQ(g(kR9), 8u);
    EXPECT_EQ(g(kRdx), 0x108u);
    EXPECT_EQ(g(kR10), 20u);
    EXPECT_EQ(g(kR11), 0xffffffffu);
}

TEST_F(EmuInteger, LoopAndJrcxz) {
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RCX), I(10)});
    a(ZYDIS_MNEMONIC_XOR, {R(ZYDIS_REGISTER_EAX), R(ZYDIS_REGISTER_EAX)});
    const uint64_t top = a.here();
    a(ZYDIS_MNEMONIC_ADD, {R(ZYDIS_REGISTER_RAX), R(ZYDIS_REGISTER_RCX)});
    a(ZYDIS_MNEMONIC_LOOP, {I(static_cast<int64_t>(top))});
    run();
    EXPECT_EQ(g(kRax), 55u);
    EXPECT_EQ(g(kRcx), 0u);
}

TEST_F(EmuInteger, CpuidAdvertisesLongModeAndSse2) {
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EAX), I(1)});
    a(ZYDIS_MNEMONIC_CPUID);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_R8), R(ZYDIS_REGISTER_RDX)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EAX), I(static_cast<int32_t>(0x80000001u))});
    a(ZYDIS_MNEMONIC_CPUID);
    run();
    EXPECT_NE(g(kR8) & (1u << 26), 0u);  // SSE2
    EXPECT_NE(g(kRdx) & (1u << 29), 0u);  // LM
}

}  // namespace
}  // namespace popek::hv::emu::test
