// Bad guests: random bytes executed as 64-bit kernel code must only ever
// produce guest exceptions and exits, never crash or hang the engine.
#include <gtest/gtest.h>

#include <random>

#include "emu_env.hpp"

namespace popek::hv::emu::test {
namespace {

TEST(EmuRobustness, RandomCodeNeverCrashesTheEngine) {
    std::mt19937_64 rng(0x0ddba11);
    uint64_t exceptions = 0, instructions = 0;
    for (int n = 0; n < 2000; ++n) {
        Machine m;  // fresh each time: random stores may hit the page tables or the IDT
        Asm h(Machine::kHandlers);
        h(ZYDIS_MNEMONIC_HLT);
        m.load(Machine::kHandlers, h.code);
        for (uint8_t v = 0; v < 32; ++v) m.set_gate(v, Machine::kHandlers);
        std::vector<uint8_t> code(512);
        for (auto& b : code) b = static_cast<uint8_t>(rng());
        for (auto& r : m.st().gpr) r = rng() % 2 ? rng() : Machine::kData + (rng() % 0x10000);
        m.st().gpr[kRsp] = Machine::kStackTop;
        m.load(Machine::kCode, code);
        m.st().rip = Machine::kCode;
        for (int exits = 0; exits < 50; ++exits) {
            const RunExit e = m.resume(5000);
            if (e.kind != ExitKind::Io && e.kind != ExitKind::Interrupted) break;
        }
        exceptions += m.cpu().stats().exceptions;
        instructions += m.cpu().stats().instructions;
    }
    EXPECT_GT(exceptions, 100u);  // the random code did reach exceptions (mostly #UD, #GP, #PF)
    EXPECT_GT(instructions, 1000u);
}

}  // namespace
}  // namespace popek::hv::emu::test
