// Differential test: random short sequences of integer instructions run on
// the host CPU (natively, in an executable page of this process) and on the
// engine from the same registers and flags; every GPR and every flag the SDM
// defines after the sequence must match. Flags an instruction leaves
// undefined are masked until a later instruction defines them again, and an
// instruction that would read such a flag is not generated.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstring>
#include <random>
#include <string>

#include "emu_diff_mem.hpp"
#include "emu_env.hpp"

namespace popek::hv::emu::test {
namespace {

struct State {
    uint64_t gpr[16];
    uint64_t rflags;
    Xmm xmm[16];
    uint32_t mxcsr;
    uint8_t mem[256];  // memory operands: [rbp + 0..255]
};
constexpr int32_t kXmmOffset = 136;
constexpr int32_t kMxcsrOffset = kXmmOffset + 16 * 16;

// Host side: an executable page with the sequence between a prologue that
// loads every GPR (but RSP) and RFLAGS from a State and an epilogue that stores them.
class HostRunner {
public:
    HostRunner() {
        page_ = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    }
    ~HostRunner() {
        if (page_ != MAP_FAILED) ::munmap(page_, kSize);
    }
    HostRunner(const HostRunner&) = delete;
    HostRunner& operator=(const HostRunner&) = delete;
    [[nodiscard]] bool ok() const { return page_ != MAP_FAILED; }

    void run(const std::vector<uint8_t>& body, State& st) {
        Asm a(0);
        static constexpr ZydisRegister kSaved[] = {ZYDIS_REGISTER_RBX, ZYDIS_REGISTER_RBP, ZYDIS_REGISTER_R12,
                                                   ZYDIS_REGISTER_R13, ZYDIS_REGISTER_R14, ZYDIS_REGISTER_R15};
        for (ZydisRegister r : kSaved) a(ZYDIS_MNEMONIC_PUSH, {R(r)});
        a(ZYDIS_MNEMONIC_PUSH, {R(ZYDIS_REGISTER_RDI)});
        a(ZYDIS_MNEMONIC_SUB, {R(ZYDIS_REGISTER_RSP), I(8)});
        a(ZYDIS_MNEMONIC_STMXCSR, {M(4, ZYDIS_REGISTER_RSP)});  // the host's, restored at the end
        a(ZYDIS_MNEMONIC_LDMXCSR, {M(4, ZYDIS_REGISTER_RDI, kMxcsrOffset)});
        a(ZYDIS_MNEMONIC_PUSH, {M(8, ZYDIS_REGISTER_RDI, 128)});
        a(ZYDIS_MNEMONIC_POPFQ);
        for (int k = 0; k < 16; ++k) {
            a(ZYDIS_MNEMONIC_MOVDQU, {R(static_cast<ZydisRegister>(ZYDIS_REGISTER_XMM0 + k)),
                                      M(16, ZYDIS_REGISTER_RDI, kXmmOffset + k * 16)});
        }
        for (unsigned k = 0; k < 16; ++k) {
            if (k == kRsp || k == kRdi) continue;
            a(ZYDIS_MNEMONIC_MOV, {R(static_cast<ZydisRegister>(ZYDIS_REGISTER_RAX + k)), M(8, ZYDIS_REGISTER_RDI, k * 8)});
        }
        a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RDI), M(8, ZYDIS_REGISTER_RDI, kRdi * 8)});
        a.code.insert(a.code.end(), body.begin(), body.end());
        a(ZYDIS_MNEMONIC_PUSHFQ);
        a(ZYDIS_MNEMONIC_PUSH, {R(ZYDIS_REGISTER_RAX)});
        a(ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_RAX), M(8, ZYDIS_REGISTER_RSP, 24)});
        a(ZYDIS_MNEMONIC_STMXCSR, {M(4, ZYDIS_REGISTER_RAX, kMxcsrOffset)});
        a(ZYDIS_MNEMONIC_LDMXCSR, {M(4, ZYDIS_REGISTER_RSP, 16)});
        for (int k = 0; k < 16; ++k) {
            a(ZYDIS_MNEMONIC_MOVDQU, {M(16, ZYDIS_REGISTER_RAX, kXmmOffset + k * 16),
                                      R(static_cast<ZydisRegister>(ZYDIS_REGISTER_XMM0 + k))});
        }
        for (unsigned k = 1; k < 16; ++k) {
            if (k == kRsp) continue;
            a(ZYDIS_MNEMONIC_MOV, {M(8, ZYDIS_REGISTER_RAX, k * 8), R(static_cast<ZydisRegister>(ZYDIS_REGISTER_RAX + k))});
        }
        a(ZYDIS_MNEMONIC_POP, {R(ZYDIS_REGISTER_RBX)});
        a(ZYDIS_MNEMONIC_MOV, {M(8, ZYDIS_REGISTER_RAX, 0), R(ZYDIS_REGISTER_RBX)});
        a(ZYDIS_MNEMONIC_POP, {R(ZYDIS_REGISTER_RBX)});
        a(ZYDIS_MNEMONIC_MOV, {M(8, ZYDIS_REGISTER_RAX, 128), R(ZYDIS_REGISTER_RBX)});
        a(ZYDIS_MNEMONIC_ADD, {R(ZYDIS_REGISTER_RSP), I(8)});
        a(ZYDIS_MNEMONIC_POP, {R(ZYDIS_REGISTER_RDI)});
        for (int k = 5; k >= 0; --k) a(ZYDIS_MNEMONIC_POP, {R(kSaved[k])});
        a(ZYDIS_MNEMONIC_RET);
        ASSERT_LE(a.code.size(), kSize);
        std::memcpy(page_, a.code.data(), a.code.size());
        __builtin___clear_cache(static_cast<char*>(page_), static_cast<char*>(page_) + a.code.size());
        void (*fn)(State*) = nullptr;
        std::memcpy(&fn, &page_, sizeof fn);
        fn(&st);
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

// Runs `sequences` generated sequences on both CPUs and reports the first few that differ.
template <class Gen>
void run_differential(Gen& gen, int sequences, int length) {
    HostRunner host;
    ASSERT_TRUE(host.ok());
    Machine m;
    int failures = 0;
    for (int n = 0; n < sequences && failures < 5; ++n) {
        std::vector<uint8_t> code;
        F unknown = 0;
        for (int k = 0; k < length; ++k) {
            const Piece p = gen.piece(unknown);
            code.insert(code.end(), p.bytes.begin(), p.bytes.end());
            unknown = (unknown & ~p.def) | p.undef;
        }
        State init{};
        for (auto& r : init.gpr) r = gen.value();
        for (auto& x : init.xmm) x = gen.xmm_value();
        init.rflags = (gen.value() & ALL) | rflags::Fixed1 | rflags::IF;
        // Every exception masked; random rounding, flush-to-zero and sticky flags.
        init.mxcsr = static_cast<uint32_t>(0x1f80 | (gen.value() & 0xe03f));
        for (auto& b : init.mem) b = static_cast<uint8_t>(gen.value());
        const bool memory = gen.uses_memory();

        State native = init;
        if (memory) native.gpr[kRbp] = reinterpret_cast<uint64_t>(&native.mem[0]);
        host.run(code, native);

        CpuState& s = m.st();
        for (unsigned k = 0; k < 16; ++k) {
            s.gpr[k] = init.gpr[k];
            s.xmm[k] = init.xmm[k];
        }
        s.mxcsr = init.mxcsr;
        if (memory) {
            s.gpr[kRbp] = Machine::kData;
            std::memcpy(m.ram(Machine::kData), init.mem, sizeof init.mem);
        }
        s.gpr[kRsp] = Machine::kStackTop;
        s.rflags = init.rflags;
        std::vector<uint8_t> program = code;
        program.push_back(0xf4);  // HLT
        const RunExit e = m.run(program);
        ASSERT_EQ(e.kind, ExitKind::Halt) << disassemble(code);

        const F mask = ALL & ~unknown;
        std::string diff;
        char line[128];
        for (unsigned k = 0; k < 16; ++k) {
            if (k == kRsp || (memory && k == kRbp) || s.gpr[k] == native.gpr[k]) continue;
            std::snprintf(line, sizeof line, "  r%u: engine %#llx host %#llx\n", k,
                          static_cast<unsigned long long>(s.gpr[k]), static_cast<unsigned long long>(native.gpr[k]));
            diff += line;
        }
        for (unsigned k = 0; k < 16; ++k) {
            if (s.xmm[k] == native.xmm[k]) continue;
            std::snprintf(line, sizeof line, "  xmm%u: engine %016llx%016llx host %016llx%016llx\n", k,
                          static_cast<unsigned long long>(s.xmm[k].hi), static_cast<unsigned long long>(s.xmm[k].lo),
                          static_cast<unsigned long long>(native.xmm[k].hi),
                          static_cast<unsigned long long>(native.xmm[k].lo));
            diff += line;
        }
        if (memory && std::memcmp(m.ram(Machine::kData), native.mem, sizeof native.mem) != 0) {
            for (unsigned k = 0; k < sizeof native.mem; ++k) {
                if (m.ram(Machine::kData)[k] == native.mem[k]) continue;
                std::snprintf(line, sizeof line, "  mem[%u]: engine %#x host %#x\n", k, m.ram(Machine::kData)[k],
                              native.mem[k]);
                diff += line;
            }
        }
        if (s.mxcsr != native.mxcsr) {
            std::snprintf(line, sizeof line, "  mxcsr: engine %#x host %#x\n", s.mxcsr, native.mxcsr);
            diff += line;
        }
        if (((s.rflags ^ native.rflags) & mask) != 0) {
            std::snprintf(line, sizeof line, "  flags: engine %#llx host %#llx (compared %#llx)\n",
                          static_cast<unsigned long long>(s.rflags & mask),
                          static_cast<unsigned long long>(native.rflags & mask), static_cast<unsigned long long>(mask));
            diff += line;
        }
        if (!diff.empty()) {
            ++failures;
            ADD_FAILURE() << "sequence " << n << " differs:\n" << disassemble(code) << diff;
        }
    }
}

TEST(EmuDifferential, RandomIntegerSequencesMatchTheHostCpu) {
    Generator gen(0x9e3779b97f4a7c15ULL);
    run_differential(gen, 20000, 8);
}

TEST(EmuDifferential, RandomMemoryOperandSequencesMatchTheHostCpu) {
    MemGenerator gen(0x853c49e6748fea9bULL);
    run_differential(gen, 10000, 8);
}

TEST(EmuDifferential, RandomSseSequencesMatchTheHostCpu) {
    SseGenerator gen(0x2545f4914f6cdd1dULL);
    run_differential(gen, 10000, 8);
}

}  // namespace
}  // namespace popek::hv::emu::test
