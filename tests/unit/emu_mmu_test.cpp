// The software MMU and the block cache: accessed/dirty bits, NX, CR0.WP,
// large pages, TLB staleness until INVLPG or a CR3 write (global pages
// survive CR3 writes), and self-modifying code.
#include <gtest/gtest.h>

#include "emu_env.hpp"

namespace popek::hv::emu::test {
namespace {

constexpr uint64_t kRecord = Machine::kData + 0x800;

class EmuMmu : public ::testing::Test {
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
    uint64_t frame(unsigned slot) { return m.peek<uint64_t>(m.st().gpr[kRsp] + slot * 8); }
};

constexpr uint64_t kA = 1ULL << 5, kD = 1ULL << 6;

TEST_F(EmuMmu, AccessedAndDirtyBits) {
    const uint64_t r = Machine::kData + 0x1000, w = Machine::kData + 0x2000;
    m.set_pte(r, r | 0x7);
    m.set_pte(w, w | 0x7);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RAX), M(8, ZYDIS_REGISTER_NONE, static_cast<int64_t>(r))});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RAX), M(8, ZYDIS_REGISTER_NONE, static_cast<int64_t>(w))});
    a(ZYDIS_MNEMONIC_MOV, {M(8, ZYDIS_REGISTER_NONE, static_cast<int64_t>(w)), R(ZYDIS_REGISTER_RAX)});
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(m.pte(r) & (kA | kD), kA);
    EXPECT_EQ(m.pte(w) & (kA | kD), kA | kD);  // D set by the write after a read filled the TLB
    EXPECT_NE(m.peek<uint64_t>(Machine::kPml4) & kA, 0u);
    EXPECT_NE(m.peek<uint64_t>(Machine::kPd) & kA, 0u);
}

TEST_F(EmuMmu, StaleTranslationUntilInvlpg) {
    const uint64_t va = Machine::kData + 0x4000, p1 = Machine::kData + 0x6000, p2 = Machine::kData + 0x7000;
    m.poke<uint64_t>(p1, 111);
    m.poke<uint64_t>(p2, 222);
    m.set_pte(va, p1 | 0x7);
    const auto pte_addr = static_cast<int64_t>(Machine::kPt + (va >> 12) * 8);
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RAX), M(8, ZYDIS_REGISTER_NONE, static_cast<int64_t>(va))});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RCX), I(static_cast<int64_t>(p2 | 0x7))});
    a(ZYDIS_MNEMONIC_MOV, {M(8, ZYDIS_REGISTER_NONE, pte_addr), R(ZYDIS_REGISTER_RCX)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RBX), M(8, ZYDIS_REGISTER_NONE, static_cast<int64_t>(va))});  // stale
    a(ZYDIS_MNEMONIC_INVLPG, {M(1, ZYDIS_REGISTER_NONE, static_cast<int64_t>(va))});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RDX), M(8, ZYDIS_REGISTER_NONE, static_cast<int64_t>(va))});
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(m.st().gpr[kRax], 111u);
    EXPECT_EQ(m.st().gpr[kRbx], 111u);
    EXPECT_EQ(m.st().gpr[kRdx], 222u);
}

TEST_F(EmuMmu, Cr3WriteFlushesAllButGlobalPages) {
    const uint64_t va = Machine::kData + 0x4000, vg = Machine::kData + 0x5000;
    const uint64_t p1 = Machine::kData + 0x6000, p2 = Machine::kData + 0x7000;
    m.poke<uint64_t>(p1, 111);
    m.poke<uint64_t>(p2, 222);
    m.set_pte(va, p1 | 0x7);
    m.set_pte(vg, p1 | 0x7 | 0x100);  // global
    const auto pte = [&](uint64_t v) { return static_cast<int64_t>(Machine::kPt + (v >> 12) * 8); };
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RAX), M(8, ZYDIS_REGISTER_NONE, static_cast<int64_t>(va))});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RAX), M(8, ZYDIS_REGISTER_NONE, static_cast<int64_t>(vg))});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RCX), I(static_cast<int64_t>(p2 | 0x7))});
    a(ZYDIS_MNEMONIC_MOV, {M(8, ZYDIS_REGISTER_NONE, pte(va)), R(ZYDIS_REGISTER_RCX)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RCX), I(static_cast<int64_t>(p2 | 0x7 | 0x100))});
    a(ZYDIS_MNEMONIC_MOV, {M(8, ZYDIS_REGISTER_NONE, pte(vg)), R(ZYDIS_REGISTER_RCX)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RCX), R(ZYDIS_REGISTER_CR3)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_CR3), R(ZYDIS_REGISTER_RCX)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RBX), M(8, ZYDIS_REGISTER_NONE, static_cast<int64_t>(va))});  // fresh
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RDX), M(8, ZYDIS_REGISTER_NONE, static_cast<int64_t>(vg))});  // stale
    // Toggling CR4.PGE flushes global entries too.
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RCX), R(ZYDIS_REGISTER_CR4)});
    a(ZYDIS_MNEMONIC_BTR, {R(ZYDIS_REGISTER_RCX), I(7)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_CR4), R(ZYDIS_REGISTER_RCX)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RSI), M(8, ZYDIS_REGISTER_NONE, static_cast<int64_t>(vg))});
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(m.st().gpr[kRbx], 222u);
    EXPECT_EQ(m.st().gpr[kRdx], 111u);
    EXPECT_EQ(m.st().gpr[kRsi], 222u);
}

TEST_F(EmuMmu, NoExecuteFaultsWithInstructionFetchBit) {
    recording_handler(kVecPF);
    const uint64_t va = Machine::kData + 0x8000;
    m.set_pte(va, va | 0x7 | (1ULL << 63));
    m.poke<uint8_t>(va, 0xc3);  // RET (never reached)
    a(ZYDIS_MNEMONIC_CALL, {I(static_cast<int64_t>(va))});
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(m.peek<uint64_t>(kRecord), kVecPF);
    EXPECT_EQ(frame(0), pf::P | pf::ID);
    EXPECT_EQ(frame(1), va);  // the fault is at the target
    EXPECT_EQ(m.st().cr2, va);
}

TEST_F(EmuMmu, WriteProtectOffLetsTheKernelWriteReadOnlyPages) {
    const uint64_t va = Machine::kData + 0x9000;
    m.set_pte(va, va | 0x5 | kD);
    m.st().cr0 &= ~cr0::WP;
    m.cpu().state_changed();
    a(ZYDIS_MNEMONIC_MOV, {M(8, ZYDIS_REGISTER_NONE, static_cast<int64_t>(va)), I(77)});
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(m.peek<uint64_t>(va), 77u);
}

TEST_F(EmuMmu, TwoMegabyteAndOneGigabytePages) {
    // PDPT[1]: a 1 GiB page at 1 GiB mapping physical 0.
    m.poke<uint64_t>(Machine::kPdpt + 8, 0x0 | 0x7 | 0x80);
    m.poke<uint64_t>(0x300010, 0x5151);  // inside the 2M page at 2 MiB
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RAX), M(8, ZYDIS_REGISTER_NONE, 0x300010)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RCX), I(0x40300010)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RBX), M(8, ZYDIS_REGISTER_RCX)});
    // INVLPG anywhere in the large page drops its 4K pieces: remap and observe.
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RDX), I(0x40000000 | 0x7 | 0x80)});
    a(ZYDIS_MNEMONIC_MOV, {M(8, ZYDIS_REGISTER_NONE, Machine::kPdpt + 8), R(ZYDIS_REGISTER_RDX)});
    a(ZYDIS_MNEMONIC_INVLPG, {M(1, ZYDIS_REGISTER_NONE, 0x40000000)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RSI), M(8, ZYDIS_REGISTER_RCX)});
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(m.st().gpr[kRax], 0x5151u);
    EXPECT_EQ(m.st().gpr[kRbx], 0x5151u);
    EXPECT_EQ(m.st().gpr[kRsi], ~0ULL);  // physical 1 GiB + 3 MiB is not RAM: reads all ones
}

TEST_F(EmuMmu, SelfModifyingCodeInTheSameBlock) {
    // The store patches the immediate of the MOV right after it.
    a(ZYDIS_MNEMONIC_MOV, {M(1, ZYDIS_REGISTER_RIP, 2 + 0), I(0x42)});  // rip-relative: patched below
    const size_t store_at = 0;
    const size_t mov_at = a.code.size();
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EAX), I(0x11)});
    // Fix the displacement: target = the imm32 of the MOV EAX (its byte 1), relative to the store's end.
    const int32_t disp = static_cast<int32_t>(mov_at + 1 - mov_at);
    std::memcpy(&a.code[store_at + 2], &disp, 4);
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(m.st().gpr[kRax], 0x42u);
    EXPECT_GE(m.cpu().blocks().invalidations(), 1u);
}

TEST_F(EmuMmu, CodeRewrittenBetweenRunsIsRedecoded) {
    // A loop body in its own page, rewritten by guest code between two calls.
    const uint64_t fn = Machine::kCode + 0x2000;
    Asm f(fn);
    f(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EAX), I(1)});
    f(ZYDIS_MNEMONIC_RET);
    m.load(fn, f.code);
    a(ZYDIS_MNEMONIC_CALL, {I(static_cast<int64_t>(fn))});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EBX), R(ZYDIS_REGISTER_EAX)});
    a(ZYDIS_MNEMONIC_MOV, {M(4, ZYDIS_REGISTER_NONE, static_cast<int64_t>(fn + 1)), I(2)});
    a(ZYDIS_MNEMONIC_CALL, {I(static_cast<int64_t>(fn))});
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(m.st().gpr[kRbx], 1u);
    EXPECT_EQ(m.st().gpr[kRax], 2u);
}

TEST_F(EmuMmu, InstructionSpanningTwoPages) {
    // MOV RAX, imm64 (10 bytes) straddling a page boundary; the next page is fetched too.
    Asm x(Machine::kCode + 0xffb);
    x(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RAX), I(0x1122334455667788)});
    x(ZYDIS_MNEMONIC_HLT);
    a(ZYDIS_MNEMONIC_JMP, {I(static_cast<int64_t>(Machine::kCode + 0xffb))});
    m.load(Machine::kCode + 0xffb, x.code);
    ASSERT_EQ(run().kind, ExitKind::Halt);
    EXPECT_EQ(m.st().gpr[kRax], 0x1122334455667788u);

    // With the second page not present the fetch faults there.
    recording_handler(kVecPF);
    m.set_pte(Machine::kCode + 0x1000, 0);
    m.cpu().mmu().flush_all();
    m.st().gpr[kRsp] = Machine::kStackTop;
    ASSERT_EQ(m.run(a.code).kind, ExitKind::Halt);
    EXPECT_EQ(m.peek<uint64_t>(kRecord), kVecPF);
    EXPECT_EQ(m.st().cr2, Machine::kCode + 0x1000);
    EXPECT_EQ(frame(0), pf::ID);
    EXPECT_EQ(frame(1), Machine::kCode + 0xffb);
}

TEST_F(EmuMmu, DirtyLogRecordsWrittenPagesAgainAfterEachHarvest) {
    const uint64_t wpage = Machine::kData + 0xa000, rpage = Machine::kData + 0xb000;
    const auto bit = [](const std::vector<uint64_t>& log, uint64_t gpa) {
        const uint64_t page = gpa / kPageSize;
        return page / 64 < log.size() && ((log[page / 64] >> (page % 64)) & 1) != 0;
    };
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RAX), M(8, ZYDIS_REGISTER_NONE, static_cast<int64_t>(rpage))});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RAX), M(8, ZYDIS_REGISTER_NONE, static_cast<int64_t>(wpage))});
    a(ZYDIS_MNEMONIC_MOV, {M(8, ZYDIS_REGISTER_NONE, static_cast<int64_t>(wpage)), R(ZYDIS_REGISTER_RAX)});
    a(ZYDIS_MNEMONIC_HLT);
    m.mem().set_dirty_logging(true);
    ASSERT_EQ(m.run(a.code).kind, ExitKind::Halt);
    std::vector<uint64_t> log = m.mem().take_dirty_log(0);
    EXPECT_TRUE(bit(log, wpage));
    EXPECT_FALSE(bit(log, rpage));
    EXPECT_TRUE(bit(log, Machine::kPt));  // the walker set accessed/dirty bits there
    EXPECT_FALSE(bit(log, Machine::kCode));  // loaded behind the engine's back: the writer logs that, as with KVM

    // Harvested: the same writes (TLB warm, page already dirty in the PTE) are logged again.
    m.cpu().dirty_log_cleared();
    m.st().rip = Machine::kCode;
    m.st().halted = false;
    ASSERT_EQ(m.resume().kind, ExitKind::Halt);
    log = m.mem().take_dirty_log(0);
    EXPECT_TRUE(bit(log, wpage));
    EXPECT_FALSE(bit(log, rpage));
}

}  // namespace
}  // namespace popek::hv::emu::test
