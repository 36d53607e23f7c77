// Two engines (two vCPUs) on the same guest memory, on two threads: LOCK
// prefixed instructions must be atomic against each other and against plain
// stores (a spinlock released by a MOV).
#include <gtest/gtest.h>

#include <thread>

#include "emu_env.hpp"

namespace popek::hv::emu::test {
namespace {

TEST(EmuSmp, LockedInstructionsAreAtomicAcrossEngines) {
    Machine m;
    constexpr int64_t kIterations = 100000;
    const uint64_t counter = Machine::kData, sum = Machine::kData + 8, lock = Machine::kData + 16,
                   guarded = Machine::kData + 24, bits = Machine::kData + 32;
    Asm a(Machine::kCode);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_ECX), I(kIterations)});
    const uint64_t loop = a.here();
    a(ZYDIS_MNEMONIC_INC, {M(8, ZYDIS_REGISTER_NONE, static_cast<int64_t>(counter))}, ZYDIS_ATTRIB_HAS_LOCK);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EAX), I(3)});
    a(ZYDIS_MNEMONIC_XADD, {M(8, ZYDIS_REGISTER_NONE, static_cast<int64_t>(sum)), R(ZYDIS_REGISTER_RAX)},
      ZYDIS_ATTRIB_HAS_LOCK);
    a(ZYDIS_MNEMONIC_BTC, {M(8, ZYDIS_REGISTER_NONE, static_cast<int64_t>(bits)), I(5)}, ZYDIS_ATTRIB_HAS_LOCK);
    const uint64_t acquire = a.here();
    a(ZYDIS_MNEMONIC_XOR, {R(ZYDIS_REGISTER_EAX), R(ZYDIS_REGISTER_EAX)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EDX), I(1)});
    a(ZYDIS_MNEMONIC_CMPXCHG, {M(4, ZYDIS_REGISTER_NONE, static_cast<int64_t>(lock)), R(ZYDIS_REGISTER_EDX)},
      ZYDIS_ATTRIB_HAS_LOCK);
    a(ZYDIS_MNEMONIC_JNZ, {I(static_cast<int64_t>(acquire))});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RBX), M(8, ZYDIS_REGISTER_NONE, static_cast<int64_t>(guarded))});
    a(ZYDIS_MNEMONIC_ADD, {R(ZYDIS_REGISTER_RBX), I(1)});
    a(ZYDIS_MNEMONIC_MOV, {M(8, ZYDIS_REGISTER_NONE, static_cast<int64_t>(guarded)), R(ZYDIS_REGISTER_RBX)});
    a(ZYDIS_MNEMONIC_MOV, {M(4, ZYDIS_REGISTER_NONE, static_cast<int64_t>(lock)), I(0)});  // release
    a(ZYDIS_MNEMONIC_DEC, {R(ZYDIS_REGISTER_ECX)});
    a(ZYDIS_MNEMONIC_JNZ, {I(static_cast<int64_t>(loop))});
    a(ZYDIS_MNEMONIC_HLT);
    m.load(Machine::kCode, a.code);

    Engine second(m.mem());
    second.s = m.st();
    second.s.gpr[kRsp] = Machine::kStackTop - 0x4000;
    second.state_changed();
    m.st().rip = second.s.rip = Machine::kCode;

    // At most 100M instructions each: a lost update can leave the spinlock held forever.
    const auto run = [](Engine& e) {
        RunExit x;
        for (int n = 0; n < 100; ++n) {
            x = e.run(1'000'000);
            if (x.kind != ExitKind::Interrupted) break;
        }
        return x.kind;
    };
    ExitKind k2 = ExitKind::Interrupted;
    std::thread t([&] { k2 = run(second); });
    const ExitKind k1 = run(m.cpu());
    t.join();
    EXPECT_EQ(k1, ExitKind::Halt);
    EXPECT_EQ(k2, ExitKind::Halt);
    EXPECT_EQ(m.peek<uint64_t>(counter), 2u * kIterations);
    EXPECT_EQ(m.peek<uint64_t>(sum), 6u * kIterations);
    EXPECT_EQ(m.peek<uint64_t>(guarded), 2u * kIterations);
    EXPECT_EQ(m.peek<uint64_t>(bits), 0u);  // an even number of toggles
    EXPECT_EQ(m.peek<uint32_t>(lock), 0u);
}

}  // namespace
}  // namespace popek::hv::emu::test
