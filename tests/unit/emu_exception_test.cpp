// Exceptions and interrupts on the emulation engine: #UD, #PF (error code
// and CR2), #GP from a bad MSR and from ring 3, #DE, INT n and IRETQ, IST
// stacks, SYSCALL/SYSRET, external interrupts and the STI shadow, triple
// faults, and port I/O exits.
#include <gtest/gtest.h>

#include "emu_env.hpp"

namespace popek::hv::emu::test {
namespace {

constexpr uint64_t kRecord = Machine::kData + 0x800;  // handlers store the vector here

class EmuException : public ::testing::Test {
protected:
    Asm a{Machine::kCode};
    Machine m;

    // A handler that records `vector` and CR2, then halts on its stack frame.
    void recording_handler(uint8_t vector, unsigned ist = 0) {
        const uint64_t at = Machine::kHandlers + vector * 0x40u;
        Asm h(at);
        h(ZYDIS_MNEMONIC_MOV, {M(8, ZYDIS_REGISTER_NONE, kRecord), I(vector)});
        h(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_R15), R(ZYDIS_REGISTER_CR2)});
        h(ZYDIS_MNEMONIC_MOV, {M(8, ZYDIS_REGISTER_NONE, kRecord + 8), R(ZYDIS_REGISTER_R15)});
        h(ZYDIS_MNEMONIC_HLT);
        m.load(at, h.code);
        m.set_gate(vector, at, ist);
    }
    // The interrupt frame the handler halted on: [error,] RIP, CS, RFLAGS, RSP, SS.
    uint64_t frame(unsigned slot) { return m.peek<uint64_t>(m.st().gpr[kRsp] + slot * 8); }
    uint64_t recorded() { return m.peek<uint64_t>(kRecord); }
    RunExit run() { return m.run(a.code); }
};

TEST_F(EmuException, UndefinedOpcodeRaisesUdThroughTheIdt) {
    recording_handler(kVecUD);
    a(ZYDIS_MNEMONIC_NOP);
    const uint64_t bad = a.here();
    a.bytes({0x0f, 0x0b});  // UD2
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(recorded(), kVecUD);
    EXPECT_EQ(frame(0), bad);  // no error code: RIP on top, pointing at the faulting instruction
    EXPECT_EQ(frame(1), Machine::kKernelCs);
    EXPECT_EQ(frame(3), Machine::kStackTop);

    // An opcode that does not exist in 64-bit mode (0x06, PUSH ES) too.
    m.poke<uint64_t>(kRecord, 0);
    m.st().gpr[kRsp] = Machine::kStackTop;
    ASSERT_EQ(m.run({0x06}).kind, ExitKind::Halt);
    EXPECT_EQ(recorded(), kVecUD);
    EXPECT_EQ(frame(0), Machine::kCode);
}

TEST_F(EmuException, PageFaultErrorCodesAndCr2) {
    recording_handler(kVecPF);
    const uint64_t va = Machine::kData + 0x3000;
    m.set_pte(va, 0);  // not present
    a(ZYDIS_MNEMONIC_MOV, {M(4, ZYDIS_REGISTER_NONE, static_cast<int64_t>(va + 0x10)), I(1)});
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(recorded(), kVecPF);
    EXPECT_EQ(m.peek<uint64_t>(kRecord + 8), va + 0x10);  // CR2
    EXPECT_EQ(frame(0), pf::W);                          // not present, write, supervisor
    EXPECT_EQ(frame(1), Machine::kCode);

    // Read-only page, CR0.WP set: a supervisor write is a protection fault.
    m.set_pte(va, va | 0x5);
    m.cpu().mmu().flush_all();
    m.st().gpr[kRsp] = Machine::kStackTop;
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(frame(0), pf::P | pf::W);

    // Reserved bit set in the PTE.
    m.set_pte(va, va | 0x7 | (1ULL << 51));
    m.cpu().mmu().flush_all();
    m.st().gpr[kRsp] = Machine::kStackTop;
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(frame(0), pf::P | pf::W | pf::RSVD);
}

TEST_F(EmuException, BadMsrIsGeneralProtection) {
    recording_handler(kVecGP);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_ECX), I(0x12345)});
    a(ZYDIS_MNEMONIC_RDMSR);
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(recorded(), kVecGP);
    EXPECT_EQ(frame(0), 0u);
    EXPECT_EQ(frame(1), Machine::kCode + 5);
}

TEST_F(EmuException, KnownMsrsReadBackAndEferIsChecked) {
    recording_handler(kVecGP);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_ECX), I(static_cast<int32_t>(msr::LSTAR))});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EAX), I(0x1000)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EDX), I(-1)});
    a(ZYDIS_MNEMONIC_WRMSR);
    a(ZYDIS_MNEMONIC_XOR, {R(ZYDIS_REGISTER_EAX), R(ZYDIS_REGISTER_EAX)});
    a(ZYDIS_MNEMONIC_RDMSR);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_R8), R(ZYDIS_REGISTER_RDX)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_ECX), I(static_cast<int32_t>(msr::EFER))});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EAX), I(1 << 20)});  // reserved bit
    a(ZYDIS_MNEMONIC_XOR, {R(ZYDIS_REGISTER_EDX), R(ZYDIS_REGISTER_EDX)});
    const uint64_t bad = a.here();
    a(ZYDIS_MNEMONIC_WRMSR);
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(m.st().msrs.lstar, 0xffffffff00001000u);
    EXPECT_EQ(m.st().gpr[kR8], 0xffffffffu);
    EXPECT_EQ(recorded(), kVecGP);
    EXPECT_EQ(frame(1), bad);
}

TEST_F(EmuException, DivideErrorPointsAtTheDivide) {
    recording_handler(kVecDE);
    a(ZYDIS_MNEMONIC_XOR, {R(ZYDIS_REGISTER_ECX), R(ZYDIS_REGISTER_ECX)});
    const uint64_t div = a.here();
    a(ZYDIS_MNEMONIC_DIV, {R(ZYDIS_REGISTER_RCX)});
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(recorded(), kVecDE);
    EXPECT_EQ(frame(0), div);
}

TEST_F(EmuException, IntNAndIretqReturnToTheNextInstruction) {
    Asm h(Machine::kHandlers);
    h(ZYDIS_MNEMONIC_ADD, {R(ZYDIS_REGISTER_RAX), I(100)});
    h(ZYDIS_MNEMONIC_IRETQ);
    m.load(Machine::kHandlers, h.code);
    m.set_gate(0x80, Machine::kHandlers, 0, 3);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EAX), I(1)});
    a(ZYDIS_MNEMONIC_STI);
    a(ZYDIS_MNEMONIC_INT, {I(0x80)});
    a(ZYDIS_MNEMONIC_PUSHFQ);
    a(ZYDIS_MNEMONIC_POP, {R(ZYDIS_REGISTER_RBX)});
    a(ZYDIS_MNEMONIC_CLI);
    a(ZYDIS_MNEMONIC_HLT);
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(m.st().gpr[kRax], 101u);
    EXPECT_EQ(m.st().gpr[kRsp], Machine::kStackTop);
    EXPECT_NE(m.st().gpr[kRbx] & rflags::IF, 0u);  // IRETQ restored IF
}

TEST_F(EmuException, IstStackIsUsed) {
    recording_handler(kVecBP, 1);
    a(ZYDIS_MNEMONIC_INT3);
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(recorded(), kVecBP);
    EXPECT_EQ(m.st().gpr[kRsp], Machine::kIstTop - 40);
    EXPECT_EQ(frame(0), Machine::kCode + 1);  // INT3 is a trap: the next instruction
}

TEST_F(EmuException, RingThreeSyscallSysretAndGeneralProtectionOnHlt) {
    recording_handler(kVecGP);
    // Kernel: LSTAR entry adds 1 to RAX and returns with SYSRETQ.
    const uint64_t entry = Machine::kHandlers + 0x800;
    Asm k(entry);
    k(ZYDIS_MNEMONIC_ADD, {R(ZYDIS_REGISTER_EAX), I(1)});
    k(ZYDIS_MNEMONIC_SYSRET, {}, 0);
    k.code.insert(k.code.begin() + static_cast<long>(k.code.size()) - 2, 0x48);  // REX.W: SYSRETQ
    m.load(entry, k.code);
    m.st().msrs.lstar = entry;
    m.st().msrs.star = (0x23ULL << 48) | (0x10ULL << 32);
    m.st().msrs.sfmask = rflags::IF;
    // User: SYSCALL, keep the result, then HLT (privileged: #GP).
    const uint64_t user = Machine::kCode + 0x400;
    Asm u(user);
    u(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EAX), I(41)});
    u(ZYDIS_MNEMONIC_SYSCALL);
    u(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EBX), R(ZYDIS_REGISTER_EAX)});
    const uint64_t hlt = u.here();
    u(ZYDIS_MNEMONIC_HLT);
    m.load(user, u.code);
    // Kernel: IRETQ to ring 3.
    a(ZYDIS_MNEMONIC_PUSH, {I(Machine::kUserDs)});
    a(ZYDIS_MNEMONIC_PUSH, {I(Machine::kStackTop - 0x1000)});
    a(ZYDIS_MNEMONIC_PUSH, {I(0x202)});
    a(ZYDIS_MNEMONIC_PUSH, {I(Machine::kUserCs)});
    a(ZYDIS_MNEMONIC_PUSH, {I(static_cast<int64_t>(user))});
    a(ZYDIS_MNEMONIC_IRETQ);
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(m.st().gpr[kRbx], 42u);
    EXPECT_EQ(recorded(), kVecGP);
    EXPECT_EQ(cpl(m.st()), 0u);
    EXPECT_EQ(m.st().gpr[kRsp], Machine::kRsp0 - 48);  // ring change: RSP0 from the TSS
    EXPECT_EQ(frame(0), 0u);
    EXPECT_EQ(frame(1), hlt);
    EXPECT_EQ(frame(2), Machine::kUserCs);
    EXPECT_EQ(frame(4), Machine::kStackTop - 0x1000);
    EXPECT_EQ(frame(5), Machine::kUserDs);
}

TEST_F(EmuException, UserAccessToSupervisorPageFaults) {
    recording_handler(kVecPF);
    const uint64_t va = Machine::kData + 0x5000;
    m.set_pte(va, va | 0x3);  // supervisor only
    const uint64_t user = Machine::kCode + 0x400;
    Asm u(user);
    u(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RAX), M(8, ZYDIS_REGISTER_NONE, static_cast<int64_t>(va))});
    m.load(user, u.code);
    a(ZYDIS_MNEMONIC_PUSH, {I(Machine::kUserDs)});
    a(ZYDIS_MNEMONIC_PUSH, {I(Machine::kStackTop - 0x1000)});
    a(ZYDIS_MNEMONIC_PUSH, {I(0x2)});
    a(ZYDIS_MNEMONIC_PUSH, {I(Machine::kUserCs)});
    a(ZYDIS_MNEMONIC_PUSH, {I(static_cast<int64_t>(user))});
    a(ZYDIS_MNEMONIC_IRETQ);
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(recorded(), kVecPF);
    EXPECT_EQ(frame(0), pf::P | pf::U);
    EXPECT_EQ(m.peek<uint64_t>(kRecord + 8), va);
}

TEST_F(EmuException, ExternalInterruptWaitsForIfAndTheStiShadow) {
    recording_handler(0x20);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EAX), I(1)});
    a(ZYDIS_MNEMONIC_STI);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EBX), I(2)});  // runs in the STI shadow
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_ECX), I(3)});
    a(ZYDIS_MNEMONIC_HLT);
    m.load(Machine::kCode, a.code);
    m.st().rip = Machine::kCode;
    m.cpu().raise_irq(0x20);
    ASSERT_EQ(m.resume().kind, ExitKind::Halt);
    EXPECT_EQ(recorded(), 0x20u);
    EXPECT_EQ(m.st().gpr[kRbx], 2u);   // the shadowed instruction ran first
    EXPECT_EQ(frame(0), Machine::kCode + 5 + 1 + 5);  // interrupted before MOV ECX
    EXPECT_EQ(frame(2) & rflags::IF, rflags::IF);
    EXPECT_EQ(m.st().rflags & rflags::IF, 0u);  // interrupt gate
}

TEST_F(EmuException, HaltWakesOnInterrupt) {
    recording_handler(0x30);
    a(ZYDIS_MNEMONIC_STI);
    a(ZYDIS_MNEMONIC_HLT);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EAX), I(7)});
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(m.st().rip, Machine::kCode + 2);
    m.cpu().raise_irq(0x30);
    ASSERT_EQ(m.resume().kind, ExitKind::Halt);
    EXPECT_EQ(recorded(), 0x30u);
    EXPECT_EQ(frame(0), Machine::kCode + 2);
}

TEST_F(EmuException, TripleFaultShutsDown) {
    m.st().idtr.limit = 0;  // every delivery faults
    a.bytes({0x0f, 0x0b});
    const RunExit e = run();
    EXPECT_EQ(e.kind, ExitKind::Shutdown);
}

TEST_F(EmuException, PortIoExitsAndCompletes) {
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_DX), I(0x3f8)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_AL), I('A')});
    a(ZYDIS_MNEMONIC_OUT, {R(ZYDIS_REGISTER_DX), R(ZYDIS_REGISTER_AL)});
    a(ZYDIS_MNEMONIC_IN, {R(ZYDIS_REGISTER_EAX), R(ZYDIS_REGISTER_DX)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RSI), I(Machine::kData)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_ECX), I(3)});
    a(ZYDIS_MNEMONIC_OUTSB, {}, ZYDIS_ATTRIB_HAS_REP);
    a(ZYDIS_MNEMONIC_HLT);
    m.poke<uint32_t>(Machine::kData, 0x00636261);  // "abc"
    RunExit e = run();
    ASSERT_EQ(e.kind, ExitKind::Io);
    EXPECT_TRUE(e.is_write);
    EXPECT_EQ(e.addr, 0x3f8);
    EXPECT_EQ(e.size, 1);
    EXPECT_EQ(e.data[0], 'A');
    e = m.resume();
    ASSERT_EQ(e.kind, ExitKind::Io);
    EXPECT_FALSE(e.is_write);
    EXPECT_EQ(e.size, 4);
    const uint32_t value = 0x12345678;
    std::memcpy(e.data, &value, 4);
    std::string sent;
    for (e = m.resume(); e.kind == ExitKind::Io; e = m.resume()) sent += static_cast<char>(e.data[0]);
    EXPECT_EQ(e.kind, ExitKind::Halt);
    EXPECT_EQ(m.st().gpr[kRax], 0x12345678u);
    EXPECT_EQ(sent, "abc");
    EXPECT_EQ(m.st().gpr[kRcx], 0u);
}

TEST_F(EmuException, RexWDoesNotWidenPortIo) {
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EDX), I(0x80)});
    a.bytes({0x48, 0xef});  // REX.W OUT DX, EAX: still 32 bits
    a(ZYDIS_MNEMONIC_HLT);
    const RunExit e = run();
    ASSERT_EQ(e.kind, ExitKind::Io);
    EXPECT_EQ(e.size, 4);
    EXPECT_EQ(e.addr, 0x80);
}

TEST_F(EmuException, NmiIgnoresIfAndWaitsForIret) {
    const uint64_t counter = kRecord + 16;
    Asm h(Machine::kHandlers);
    h(ZYDIS_MNEMONIC_INC, {M(8, ZYDIS_REGISTER_NONE, static_cast<int64_t>(counter))});
    h(ZYDIS_MNEMONIC_HLT);
    h(ZYDIS_MNEMONIC_IRETQ);
    m.load(Machine::kHandlers, h.code);
    m.set_gate(kVecNMI, Machine::kHandlers);
    a(ZYDIS_MNEMONIC_CLI);
    a(ZYDIS_MNEMONIC_NOP);
    a(ZYDIS_MNEMONIC_HLT);
    m.load(Machine::kCode, a.code);
    m.st().rip = Machine::kCode;
    m.cpu().raise_nmi();
    ASSERT_EQ(m.resume().kind, ExitKind::Halt);  // in the handler, despite IF=0
    EXPECT_EQ(m.peek<uint64_t>(counter), 1u);
    m.cpu().raise_nmi();  // blocked until the handler's IRET
    ASSERT_EQ(m.resume().kind, ExitKind::Halt);
    EXPECT_EQ(m.peek<uint64_t>(counter), 1u);
    EXPECT_TRUE(m.cpu().nmi_blocked());
    m.st().halted = false;  // let the handler reach its IRETQ
    ASSERT_EQ(m.resume().kind, ExitKind::Halt);
    EXPECT_EQ(m.peek<uint64_t>(counter), 2u);  // the second NMI came right after the IRET
}

}  // namespace
}  // namespace popek::hv::emu::test
