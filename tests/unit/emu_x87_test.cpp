// x87 on the emulation engine. A differential test runs random sequences of
// x87 instructions (every arithmetic, load/store, compare, constant,
// transcendental and stack instruction, register and memory forms) natively
// and on the engine from the same x87 state (random registers of every class,
// TOP, tags, precision and rounding control), flags and memory, and compares
// the x87 part of the FXSAVE image (FCW, FSW, tags, ST0-7), the flags and
// the memory buffer. Directed tests cover FNSTENV/FLDENV/FNSAVE/FRSTOR,
// delayed #MF for unmasked exceptions, and #NM.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstring>
#include <random>
#include <string>

#include "emu_env.hpp"

namespace popek::hv::emu::test {
namespace {

struct alignas(16) Fx {
    uint8_t b[512];
};

struct X87Run {
    Fx image;           // in: initial x87 state; out: FXSAVE after the sequence
    uint64_t rflags;    // in and out
    uint8_t mem[256];   // memory operands at [rbp + 0..255]
};

// Native side: an executable page running the sequence between FXRSTOR of
// the initial image and FXSAVE of the result; the host's x87/SSE state is
// saved around it.
class NativeX87 {
public:
    NativeX87() {
        page_ = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    }
    ~NativeX87() {
        if (page_ != MAP_FAILED) ::munmap(page_, kSize);
    }
    NativeX87(const NativeX87&) = delete;
    NativeX87& operator=(const NativeX87&) = delete;
    [[nodiscard]] bool ok() const { return page_ != MAP_FAILED; }

    // fn(rdi = X87Run*, rsi = host save area)
    void run(const std::vector<uint8_t>& body, X87Run& r) {
        Asm a(0);
        a(ZYDIS_MNEMONIC_PUSH, {R(ZYDIS_REGISTER_RBP)});
        a(ZYDIS_MNEMONIC_PUSH, {R(ZYDIS_REGISTER_RBX)});
        a(ZYDIS_MNEMONIC_FXSAVE64, {M(512, ZYDIS_REGISTER_RSI)});
        a(ZYDIS_MNEMONIC_PUSH, {R(ZYDIS_REGISTER_RSI)});
        a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RBX), R(ZYDIS_REGISTER_RDI)});
        a(ZYDIS_MNEMONIC_LEA, {R(ZYDIS_REGISTER_RBP), M(8, ZYDIS_REGISTER_RDI, offsetof(X87Run, mem))});
        a(ZYDIS_MNEMONIC_FXRSTOR64, {M(512, ZYDIS_REGISTER_RDI)});
        a(ZYDIS_MNEMONIC_PUSH, {M(8, ZYDIS_REGISTER_RDI, offsetof(X87Run, rflags))});
        a(ZYDIS_MNEMONIC_POPFQ);
        a.code.insert(a.code.end(), body.begin(), body.end());
        a(ZYDIS_MNEMONIC_FXSAVE64, {M(512, ZYDIS_REGISTER_RBX)});
        a(ZYDIS_MNEMONIC_PUSHFQ);
        a(ZYDIS_MNEMONIC_POP, {M(8, ZYDIS_REGISTER_RBX, offsetof(X87Run, rflags))});
        a(ZYDIS_MNEMONIC_POP, {R(ZYDIS_REGISTER_RSI)});
        a(ZYDIS_MNEMONIC_FXRSTOR64, {M(512, ZYDIS_REGISTER_RSI)});
        a(ZYDIS_MNEMONIC_POP, {R(ZYDIS_REGISTER_RBX)});
        a(ZYDIS_MNEMONIC_POP, {R(ZYDIS_REGISTER_RBP)});
        a(ZYDIS_MNEMONIC_RET);
        ASSERT_LE(a.code.size(), kSize);
        std::memcpy(page_, a.code.data(), a.code.size());
        __builtin___clear_cache(static_cast<char*>(page_), static_cast<char*>(page_) + a.code.size());
        void (*fn)(X87Run*, Fx*) = nullptr;
        std::memcpy(&fn, &page_, sizeof fn);
        Fx host{};
        fn(&r, &host);
    }

private:
    static constexpr size_t kSize = 4096;
    void* page_ = MAP_FAILED;
};

std::string disassemble(const std::vector<uint8_t>& code) {
    std::string out;
    size_t off = 0;
    while (off < code.size()) {
        ZydisDisassembledInstruction d;
        if (!ZYAN_SUCCESS(ZydisDisassembleIntel(ZYDIS_MACHINE_MODE_LONG_64, off, code.data() + off, code.size() - off, &d))) {
            break;
        }
        out += "  " + std::string(d.text) + "\n";
        off += d.info.length;
    }
    return out;
}

std::string hex(const uint8_t* p, size_t n) {
    std::string s;
    char b[4];
    for (size_t k = n; k-- > 0;) {
        std::snprintf(b, sizeof b, "%02x", p[k]);
        s += b;
    }
    return s;
}

class X87Generator {
public:
    explicit X87Generator(uint64_t seed) : rng_(seed) {}

    // One instruction's bytes.
    std::vector<uint8_t> piece() {
        if (pick(3) == 0) return memory_form();
        return register_form();
    }

    // A random 80-bit value of a random class.
    void value(uint8_t* out) {
        long double v = 0;
        uint64_t mant = 0;
        uint16_t se = 0;
        switch (pick(10)) {
        case 0: v = static_cast<long double>(static_cast<int64_t>(rng_()) >> pick(64)); break;
        case 1: v = static_cast<long double>(static_cast<int32_t>(pick(2001)) - 1000); break;
        case 2: v = static_cast<long double>(rng_()) / static_cast<long double>(rng_() | 1); break;
        case 3: v = pick(2) ? 0.0L : -0.0L; break;
        case 4:  // infinities and NaNs
            mant = (1ULL << 63) | (pick(2) ? 0 : (rng_() >> 1));
            se = static_cast<uint16_t>(0x7fff | (pick(2) << 15));
            std::memcpy(out, &mant, 8);
            std::memcpy(out + 8, &se, 2);
            return;
        case 5:  // denormals and pseudo-denormals
            mant = rng_() >> pick(64);
            se = static_cast<uint16_t>(pick(2) << 15);
            std::memcpy(out, &mant, 8);
            std::memcpy(out + 8, &se, 2);
            return;
        case 6:  // anything, unnormals included
            mant = rng_();
            se = static_cast<uint16_t>(rng_());
            std::memcpy(out, &mant, 8);
            std::memcpy(out + 8, &se, 2);
            return;
        case 7: v = static_cast<long double>(std::ldexp(static_cast<double>(rng_() >> 11), static_cast<int>(pick(200)) - 100)); break;
        default: v = static_cast<long double>(static_cast<double>(rng_() >> 11) * 1e-6); break;
        }
        if (pick(2) != 0) v = -v;
        std::memcpy(out, &v, 10);
    }

    uint64_t bits() { return rng_(); }
    unsigned pick(unsigned n) { return static_cast<unsigned>(rng_() % n); }

private:
    std::vector<uint8_t> register_form() {
        // Register forms the engine implements (ModRM C0..FF), by opcode.
        static constexpr struct {
            uint8_t op, lo, hi;
        } kRanges[] = {
            {0xd8, 0xc0, 0xff}, {0xd9, 0xc0, 0xd0}, {0xd9, 0xd8, 0xdf}, {0xd9, 0xe0, 0xe1}, {0xd9, 0xe4, 0xe5},
            {0xd9, 0xe8, 0xee}, {0xd9, 0xf0, 0xff}, {0xda, 0xc0, 0xdf}, {0xda, 0xe9, 0xe9}, {0xdb, 0xc0, 0xdf},
            {0xdb, 0xe2, 0xe3}, {0xdb, 0xe8, 0xf7}, {0xdc, 0xc0, 0xff}, {0xdd, 0xc0, 0xc7}, {0xdd, 0xd0, 0xef},
            {0xde, 0xc0, 0xcf}, {0xde, 0xd9, 0xd9}, {0xde, 0xe0, 0xff}, {0xdf, 0xc0, 0xc7}, {0xdf, 0xe0, 0xe0},
            {0xdf, 0xe8, 0xf7},
            // Aliases: FCOM/FCOMP (DC D0-DF, DE D0-D7), FXCH (DD C8-CF, DF C8-CF), FSTP (DF D0-DF),
            // and the 8087/287 no-ops FENI, FDISI, FSETPM (DB E0, E1, E4).
            {0xdc, 0xd0, 0xdf}, {0xde, 0xd0, 0xd7}, {0xdd, 0xc8, 0xcf}, {0xdf, 0xc8, 0xdf}, {0xdb, 0xe0, 0xe1},
            {0xdb, 0xe4, 0xe4},
        };
        const auto& r = kRanges[pick(sizeof kRanges / sizeof kRanges[0])];
        return {r.op, static_cast<uint8_t>(r.lo + pick(static_cast<unsigned>(r.hi - r.lo + 1)))};
    }
    std::vector<uint8_t> memory_form() {
        // (opcode, /reg) of the data forms, plus FNSTCW and FNSTSW m16.
        static constexpr struct {
            uint8_t op, reg;
        } kForms[] = {
            {0xd8, 0}, {0xd8, 1}, {0xd8, 2}, {0xd8, 3}, {0xd8, 4}, {0xd8, 5}, {0xd8, 6}, {0xd8, 7}, {0xd9, 0},
            {0xd9, 2}, {0xd9, 3}, {0xd9, 7}, {0xda, 0}, {0xda, 1}, {0xda, 2}, {0xda, 3}, {0xda, 4}, {0xda, 5},
            {0xda, 6}, {0xda, 7}, {0xdb, 0}, {0xdb, 1}, {0xdb, 2}, {0xdb, 3}, {0xdb, 5}, {0xdb, 7}, {0xdc, 0},
            {0xdc, 1}, {0xdc, 2}, {0xdc, 3}, {0xdc, 4}, {0xdc, 5}, {0xdc, 6}, {0xdc, 7}, {0xdd, 0}, {0xdd, 1},
            {0xdd, 2}, {0xdd, 3}, {0xdd, 7}, {0xde, 0}, {0xde, 1}, {0xde, 2}, {0xde, 3}, {0xde, 4}, {0xde, 5},
            {0xde, 6}, {0xde, 7}, {0xdf, 0}, {0xdf, 1}, {0xdf, 2}, {0xdf, 3}, {0xdf, 4}, {0xdf, 5}, {0xdf, 6},
            {0xdf, 7},
        };
        const auto& f = kForms[pick(sizeof kForms / sizeof kForms[0])];
        // [rbp + disp8] with a positive displacement.
        return {f.op, static_cast<uint8_t>(0x45 | (f.reg << 3)), static_cast<uint8_t>(pick(128))};
    }

    std::mt19937_64 rng_;
};

// Loads an FXSAVE image's x87 part into the engine.
void load_x87(CpuState& s, const Fx& img) {
    std::memcpy(&s.x87.fcw, img.b + 0, 2);
    std::memcpy(&s.x87.fsw, img.b + 2, 2);
    s.x87.ftw = img.b[4];
    for (size_t k = 0; k < 8; ++k) std::memcpy(s.x87.st[k].data(), img.b + 32 + k * 16, 10);
}

TEST(EmuX87, RandomSequencesMatchTheHostCpu) {
    NativeX87 native;
    ASSERT_TRUE(native.ok());
    Machine m;
    X87Generator gen(0x6a09e667f3bcc908ULL);
    constexpr uint64_t kImage = Machine::kData + 0x400;
    int failures = 0;
    for (int n = 0; n < 20000 && failures < 5; ++n) {
        std::vector<uint8_t> code;
        const int length = 1 + static_cast<int>(gen.pick(8));
        for (int k = 0; k < length; ++k) {
            const auto p = gen.piece();
            code.insert(code.end(), p.begin(), p.end());
        }
        X87Run init{};
        // All exceptions masked (an unmasked one would fault natively); random
        // precision and rounding control, TOP, condition codes, sticky flags and tags.
        const uint16_t pc = static_cast<uint16_t>(gen.pick(3) == 0 ? 0 : 2 + gen.pick(2));
        const uint16_t fcw = static_cast<uint16_t>(0x7f | (pc << 8) | (gen.pick(4) << 10));
        const uint16_t fsw = static_cast<uint16_t>((gen.bits() & 0x473f & ~0x80u) | (gen.pick(8) << 11));
        std::memcpy(init.image.b + 0, &fcw, 2);
        std::memcpy(init.image.b + 2, &fsw, 2);
        init.image.b[4] = static_cast<uint8_t>(gen.bits());
        const uint32_t mxcsr = 0x1f80;
        std::memcpy(init.image.b + 24, &mxcsr, 4);
        for (size_t k = 0; k < 8; ++k) gen.value(init.image.b + 32 + k * 16);
        for (size_t k = 0; k < sizeof init.mem; k += 10) {
            if (gen.pick(2) == 0) {
                uint8_t v[10];
                gen.value(v);
                std::memcpy(init.mem + k, v, std::min<size_t>(10, sizeof init.mem - k));
            } else {
                for (size_t j = k; j < k + 10 && j < sizeof init.mem; ++j) init.mem[j] = static_cast<uint8_t>(gen.bits());
            }
        }
        init.rflags = (gen.bits() & rflags::Arith) | rflags::Fixed1 | rflags::IF;

        X87Run host = init;
        native.run(code, host);

        CpuState& s = m.st();
        load_x87(s, init.image);
        s.gpr[kRbp] = Machine::kData;
        s.gpr[kRbx] = kImage;
        s.gpr[kRsp] = Machine::kStackTop;
        s.rflags = init.rflags;
        std::memcpy(m.ram(Machine::kData), init.mem, sizeof init.mem);
        std::vector<uint8_t> program = code;
        program.insert(program.end(), {0x48, 0x0f, 0xae, 0x03});  // FXSAVE64 [rbx]
        program.push_back(0xf4);                                  // HLT
        const RunExit e = m.run(program);
        ASSERT_EQ(e.kind, ExitKind::Halt) << disassemble(code);
        const uint8_t* emu = m.ram(kImage);

        std::string diff;
        char line[200];
        if (std::memcmp(emu, host.image.b, 5) != 0) {
            std::snprintf(line, sizeof line, "  fcw/fsw/ftw: engine %s host %s\n", hex(emu, 5).c_str(),
                          hex(host.image.b, 5).c_str());
            diff += line;
        }
        for (size_t k = 0; k < 8; ++k) {
            if (std::memcmp(emu + 32 + k * 16, host.image.b + 32 + k * 16, 10) == 0) continue;
            std::snprintf(line, sizeof line, "  st%zu: engine %s host %s\n", k, hex(emu + 32 + k * 16, 10).c_str(),
                          hex(host.image.b + 32 + k * 16, 10).c_str());
            diff += line;
        }
        if (((s.rflags ^ host.rflags) & rflags::Arith) != 0) {
            std::snprintf(line, sizeof line, "  flags: engine %#llx host %#llx\n",
                          static_cast<unsigned long long>(s.rflags & rflags::Arith),
                          static_cast<unsigned long long>(host.rflags & rflags::Arith));
            diff += line;
        }
        for (unsigned k = 0; k < sizeof host.mem; ++k) {
            if (m.ram(Machine::kData)[k] == host.mem[k]) continue;
            std::snprintf(line, sizeof line, "  mem[%u]: engine %#x host %#x\n", k, m.ram(Machine::kData)[k],
                          host.mem[k]);
            diff += line;
        }
        if (!diff.empty()) {
            ++failures;
            ADD_FAILURE() << "sequence " << n << " differs:\n" << disassemble(code) << diff;
        }
    }
}

class EmuX87Directed : public ::testing::Test {
protected:
    static constexpr uint64_t kRecord = Machine::kData + 0x800;
    Asm a{Machine::kCode};
    Machine m;
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

TEST_F(EmuX87Directed, ArithmeticAndStoresGiveExactResults) {
    m.poke<double>(Machine::kData, 3.0);
    a(ZYDIS_MNEMONIC_FNINIT);
    a(ZYDIS_MNEMONIC_FLD1);
    a(ZYDIS_MNEMONIC_FLD, {M(8, ZYDIS_REGISTER_NONE, Machine::kData)});
    a(ZYDIS_MNEMONIC_FDIVP, {R(ZYDIS_REGISTER_ST1), R(ZYDIS_REGISTER_ST0)});  // 1/3 in 64-bit precision
    a(ZYDIS_MNEMONIC_FSTP, {M(10, ZYDIS_REGISTER_NONE, Machine::kData + 16)});
    a(ZYDIS_MNEMONIC_FLDPI);
    a(ZYDIS_MNEMONIC_FISTP, {M(4, ZYDIS_REGISTER_NONE, Machine::kData + 32)});
    a(ZYDIS_MNEMONIC_FNSTSW, {R(ZYDIS_REGISTER_AX)});
    a(ZYDIS_MNEMONIC_HLT);
    ASSERT_EQ(m.run(a.code).kind, ExitKind::Halt);
    long double third = 0;
    std::memcpy(&third, m.ram(Machine::kData + 16), 10);
    volatile long double one = 1.0L, three = 3.0L;
    EXPECT_EQ(third, one / three);
    EXPECT_EQ(m.peek<int32_t>(Machine::kData + 32), 3);
    EXPECT_EQ(m.st().gpr[kRax] & 0x3800, 0u) << "the stack is empty again (TOP 0)";
    EXPECT_EQ(m.st().gpr[kRax] & 0x20, 0x20u) << "PE from 1/3 and from rounding pi";
    EXPECT_EQ(m.st().x87.ftw, 0);
}

TEST_F(EmuX87Directed, EnvironmentAndStateRoundTrip) {
    // FNSAVE stores the state and reinitialises; FRSTOR brings it back. FNSTENV's
    // full tag word classifies the registers: valid (1.0), zero (0.0), the rest empty.
    a(ZYDIS_MNEMONIC_FNINIT);
    a(ZYDIS_MNEMONIC_FLDZ);
    a(ZYDIS_MNEMONIC_FLD1);
    a(ZYDIS_MNEMONIC_FNSTENV, {M(28, ZYDIS_REGISTER_NONE, Machine::kData)});
    a(ZYDIS_MNEMONIC_FNSAVE, {M(108, ZYDIS_REGISTER_NONE, Machine::kData + 64)});
    a(ZYDIS_MNEMONIC_FNSTSW, {R(ZYDIS_REGISTER_AX)});
    a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_EBX), I(0)});
    a(ZYDIS_MNEMONIC_FRSTOR, {M(108, ZYDIS_REGISTER_NONE, Machine::kData + 64)});
    a(ZYDIS_MNEMONIC_FADDP, {R(ZYDIS_REGISTER_ST1), R(ZYDIS_REGISTER_ST0)});
    a(ZYDIS_MNEMONIC_FISTP, {M(4, ZYDIS_REGISTER_NONE, Machine::kData + 200)});
    a(ZYDIS_MNEMONIC_HLT);
    ASSERT_EQ(m.run(a.code).kind, ExitKind::Halt);
    EXPECT_EQ(m.peek<uint32_t>(Machine::kData + 0), 0xffff037fu);  // FCW
    EXPECT_EQ(m.peek<uint32_t>(Machine::kData + 4), 0xffff3000u);  // FSW: TOP 6
    EXPECT_EQ(m.peek<uint32_t>(Machine::kData + 8), 0xffff4fffu);  // R7 zero, R6 valid, rest empty
    EXPECT_EQ(m.st().gpr[kRax] & 0xffff, 0u) << "FNSAVE reinitialises";
    EXPECT_EQ(m.peek<int32_t>(Machine::kData + 200), 1);
    EXPECT_EQ(m.st().x87.ftw, 0);
    EXPECT_EQ(m.st().x87.fcw, 0x37f);
    // FLDENV of the saved environment restores tags and TOP.
    Asm b{Machine::kCode};
    b(ZYDIS_MNEMONIC_FLDENV, {M(28, ZYDIS_REGISTER_NONE, Machine::kData)});
    b(ZYDIS_MNEMONIC_HLT);
    ASSERT_EQ(m.run(b.code).kind, ExitKind::Halt);
    EXPECT_EQ(m.st().x87.ftw, 0xc0);
    EXPECT_EQ(m.st().x87.fsw & 0x3800, 0x3000);
}

TEST_F(EmuX87Directed, UnmaskedExceptionRaisesMfAtTheNextWaitingInstruction) {
    recording_handler(kVecMF);
    m.poke<uint16_t>(Machine::kData, 0x37b);  // ZE unmasked
    a(ZYDIS_MNEMONIC_FNINIT);
    a(ZYDIS_MNEMONIC_FLDCW, {M(2, ZYDIS_REGISTER_NONE, Machine::kData)});
    a(ZYDIS_MNEMONIC_FLD1);
    a(ZYDIS_MNEMONIC_FLDZ);
    a(ZYDIS_MNEMONIC_FDIVP, {R(ZYDIS_REGISTER_ST1), R(ZYDIS_REGISTER_ST0)});  // 1/0: unmasked, ST(1) kept, no pop
    a(ZYDIS_MNEMONIC_FNSTSW, {R(ZYDIS_REGISTER_AX)});                         // non-waiting
    const uint64_t waiting = a.here();
    a(ZYDIS_MNEMONIC_FWAIT);
    a(ZYDIS_MNEMONIC_HLT);
    ASSERT_EQ(m.run(a.code).kind, ExitKind::Halt);
    EXPECT_EQ(recorded(), kVecMF);
    EXPECT_EQ(m.peek<uint64_t>(m.st().gpr[kRsp]), waiting);
    const uint64_t sw = m.st().gpr[kRax] & 0xffff;
    EXPECT_EQ(sw & 0x8084, 0x8084u) << "B, ES and ZE";
    EXPECT_EQ(sw & 0x3800, 0x3000u) << "FDIVP did not pop";
    EXPECT_EQ(m.st().x87.ftw, 0xc0);
}

TEST_F(EmuX87Directed, X87WithTaskSwitchedRaisesNm) {
    recording_handler(kVecNM);
    m.st().cr0 |= cr0::TS;
    a(ZYDIS_MNEMONIC_FLD1);
    a(ZYDIS_MNEMONIC_HLT);
    ASSERT_EQ(m.run(a.code).kind, ExitKind::Halt);
    EXPECT_EQ(recorded(), kVecNM);
}

}  // namespace
}  // namespace popek::hv::emu::test
