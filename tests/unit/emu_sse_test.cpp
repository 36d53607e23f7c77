// SSE memory forms, MXCSR, FXSAVE/FXRSTOR and the SSE enable/trap bits.
// (Register forms are compared against the host in emu_diff_test.cpp.)
#include <gtest/gtest.h>

#include "emu_env.hpp"

namespace popek::hv::emu::test {
namespace {

constexpr uint64_t kRecord = Machine::kData + 0x800;
constexpr uint64_t kBuf = Machine::kData + 0x1000;

class EmuSse : public ::testing::Test {
protected:
    Asm a{Machine::kCode};
    Machine m;
    RunExit run() {
        a(ZYDIS_MNEMONIC_HLT);
        return m.run(a.code);
    }
    void recording_handler(uint8_t vector) {
        const uint64_t at = Machine::kHandlers + vector * 0x40u;
        Asm h(at);
        h(ZYDIS_MNEMONIC_MOV, {M(8, ZYDIS_REGISTER_NONE, kRecord), I(vector)});
        h(ZYDIS_MNEMONIC_HLT);
        m.load(at, h.code);
        m.set_gate(vector, at);
    }
    uint64_t recorded() { return m.peek<uint64_t>(kRecord); }
};

TEST_F(EmuSse, MemoryMovesAndScalarZeroing) {
    m.poke<uint64_t>(kBuf, 0x1111111111111111);
    m.poke<uint64_t>(kBuf + 8, 0x2222222222222222);
    m.st().xmm[2] = Xmm{~0ULL, ~0ULL};
    m.st().xmm[3] = Xmm{~0ULL, ~0ULL};
    a(ZYDIS_MNEMONIC_MOVDQA, {R(ZYDIS_REGISTER_XMM1), M(16, ZYDIS_REGISTER_NONE, kBuf)});
    a(ZYDIS_MNEMONIC_MOVSS, {R(ZYDIS_REGISTER_XMM2), M(4, ZYDIS_REGISTER_NONE, kBuf)});
    a(ZYDIS_MNEMONIC_MOVQ, {R(ZYDIS_REGISTER_XMM3), M(8, ZYDIS_REGISTER_NONE, kBuf + 8)});
    a(ZYDIS_MNEMONIC_MOVDQU, {M(16, ZYDIS_REGISTER_NONE, kBuf + 0x21), R(ZYDIS_REGISTER_XMM1)});  // unaligned is fine
    a(ZYDIS_MNEMONIC_MOVHPS, {M(8, ZYDIS_REGISTER_NONE, kBuf + 0x40), R(ZYDIS_REGISTER_XMM1)});
    a(ZYDIS_MNEMONIC_PCMPEQB, {R(ZYDIS_REGISTER_XMM4), M(16, ZYDIS_REGISTER_NONE, kBuf)});
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(m.st().xmm[1], (Xmm{0x1111111111111111, 0x2222222222222222}));
    EXPECT_EQ(m.st().xmm[2], (Xmm{0x11111111, 0}));
    EXPECT_EQ(m.st().xmm[3], (Xmm{0x2222222222222222, 0}));
    EXPECT_EQ(m.peek<uint64_t>(kBuf + 0x21), 0x1111111111111111u);
    EXPECT_EQ(m.peek<uint64_t>(kBuf + 0x29), 0x2222222222222222u);
    EXPECT_EQ(m.peek<uint64_t>(kBuf + 0x40), 0x2222222222222222u);
}

TEST_F(EmuSse, MisalignedMovdqaIsGeneralProtection) {
    recording_handler(kVecGP);
    a(ZYDIS_MNEMONIC_MOVDQA, {R(ZYDIS_REGISTER_XMM1), M(16, ZYDIS_REGISTER_NONE, kBuf + 8)});
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(recorded(), kVecGP);
}

TEST_F(EmuSse, DisabledSseIsUndefinedAndTaskSwitchedIsNm) {
    recording_handler(kVecUD);
    recording_handler(kVecNM);
    a(ZYDIS_MNEMONIC_PXOR, {R(ZYDIS_REGISTER_XMM0), R(ZYDIS_REGISTER_XMM0)});
    m.st().cr4 &= ~cr4::OSFXSR;
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(recorded(), kVecUD);
    m.st().cr4 |= cr4::OSFXSR;
    m.st().cr0 |= cr0::TS;
    m.st().gpr[kRsp] = Machine::kStackTop;
    ASSERT_EQ(m.run(a.code).kind, ExitKind::Halt);
    EXPECT_EQ(recorded(), kVecNM);
}

TEST_F(EmuSse, MxcsrAndFxsaveRoundTrip) {
    recording_handler(kVecGP);
    m.poke<uint32_t>(kBuf, 0x1fa0);
    m.st().xmm[7] = Xmm{0x0123456789abcdef, 0xfedcba9876543210};
    m.st().xmm[15] = Xmm{15, 15};
    a(ZYDIS_MNEMONIC_LDMXCSR, {M(4, ZYDIS_REGISTER_NONE, kBuf)});
    a(ZYDIS_MNEMONIC_FNINIT);
    a(ZYDIS_MNEMONIC_FXSAVE64, {M(512, ZYDIS_REGISTER_NONE, kBuf + 0x200)});
    a(ZYDIS_MNEMONIC_PXOR, {R(ZYDIS_REGISTER_XMM7), R(ZYDIS_REGISTER_XMM7)});
    a(ZYDIS_MNEMONIC_PXOR, {R(ZYDIS_REGISTER_XMM15), R(ZYDIS_REGISTER_XMM15)});
    a(ZYDIS_MNEMONIC_FXRSTOR64, {M(512, ZYDIS_REGISTER_NONE, kBuf + 0x200)});
    a(ZYDIS_MNEMONIC_STMXCSR, {M(4, ZYDIS_REGISTER_NONE, kBuf + 4)});
    a(ZYDIS_MNEMONIC_FNSTCW, {M(2, ZYDIS_REGISTER_NONE, kBuf + 8)});
    m.poke<uint32_t>(kBuf + 12, 0x10000);  // reserved MXCSR bit
    a(ZYDIS_MNEMONIC_LDMXCSR, {M(4, ZYDIS_REGISTER_NONE, kBuf + 12)});
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(m.st().xmm[7], (Xmm{0x0123456789abcdef, 0xfedcba9876543210}));
    EXPECT_EQ(m.st().xmm[15], (Xmm{15, 15}));
    EXPECT_EQ(m.peek<uint32_t>(kBuf + 4), 0x1fa0u);
    EXPECT_EQ(m.peek<uint16_t>(kBuf + 8), 0x37fu);
    EXPECT_EQ(m.peek<uint32_t>(kBuf + 0x200 + 24), 0x1fa0u);  // MXCSR in the image
    EXPECT_EQ(m.peek<uint64_t>(kBuf + 0x200 + 160 + 7 * 16), 0x0123456789abcdefu);
    EXPECT_EQ(recorded(), kVecGP);  // the last LDMXCSR
    EXPECT_EQ(m.st().mxcsr, 0x1fa0u);
}

TEST_F(EmuSse, UnmaskedFloatingPointExceptionIsXm) {
    recording_handler(kVecXM);
    const double one = 1.0, zero = 0.0;
    m.poke<double>(kBuf + 3, one);  // scalar memory operands need no alignment
    m.poke<double>(kBuf + 16, zero);
    m.poke<uint32_t>(kBuf + 32, 0x1f80 & ~(1u << 9));  // unmask divide-by-zero
    a(ZYDIS_MNEMONIC_MOVSD, {R(ZYDIS_REGISTER_XMM0), M(8, ZYDIS_REGISTER_NONE, kBuf + 3)});
    a(ZYDIS_MNEMONIC_ADDSD, {R(ZYDIS_REGISTER_XMM0), M(8, ZYDIS_REGISTER_NONE, kBuf + 3)});  // 2.0
    a(ZYDIS_MNEMONIC_DIVSD, {R(ZYDIS_REGISTER_XMM0), M(8, ZYDIS_REGISTER_NONE, kBuf + 16)});  // masked: +inf
    a(ZYDIS_MNEMONIC_MOVQ, {R(ZYDIS_REGISTER_RBX), R(ZYDIS_REGISTER_XMM0)});
    a(ZYDIS_MNEMONIC_ADDSD, {R(ZYDIS_REGISTER_XMM0), M(8, ZYDIS_REGISTER_NONE, kBuf + 3)});
    a(ZYDIS_MNEMONIC_LDMXCSR, {M(4, ZYDIS_REGISTER_NONE, kBuf + 32)});
    a(ZYDIS_MNEMONIC_MOVSD, {R(ZYDIS_REGISTER_XMM1), M(8, ZYDIS_REGISTER_NONE, kBuf + 3)});
    const uint64_t div = a.here();
    a(ZYDIS_MNEMONIC_DIVSD, {R(ZYDIS_REGISTER_XMM1), M(8, ZYDIS_REGISTER_NONE, kBuf + 16)});  // unmasked: #XM
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(m.st().gpr[kRbx], 0x7ff0000000000000u);  // +inf
    EXPECT_EQ(recorded(), kVecXM);
    EXPECT_EQ(m.peek<uint64_t>(m.st().gpr[kRsp]), div);
    EXPECT_EQ(m.st().xmm[1].lo, 0x3ff0000000000000u);  // destination unchanged
    EXPECT_NE(m.st().mxcsr & (1u << 2), 0u);            // ZE flag set
}

}  // namespace
}  // namespace popek::hv::emu::test
