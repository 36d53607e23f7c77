// Pre-decoded instructions and basic blocks: what the decoder produces once
// per guest-physical block and the interpreter (or, later, a translator)
// consumes. Everything here is independent of the block's virtual address,
// so a block cached by guest-physical address is valid wherever it is mapped.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace popek::hv::emu {

class Engine;
struct Insn;

// What a handler tells the block loop.
enum class Flow : uint8_t {
    Next,   // done: RIP ← next_rip
    Fault,  // an exception is pending; RIP still at this instruction
    Exit,   // return to the caller (I/O, HLT, ...); RIP already where it resumes
};

// The semantics of one instruction. A translator can call these as helpers.
using Handler = Flow (*)(Engine&, const Insn&);

inline constexpr uint8_t kNoReg = 0xff;
inline constexpr uint8_t kRipBase = 0xfe;

enum class OpKind : uint8_t { None, Gpr, Mem, Imm, Rel, Sreg, Cr, Dr, Xmm, Mmx, Ptr, Other };

struct Operand {
    OpKind kind = OpKind::None;
    uint8_t size = 0;       // bytes (16 for XMM, 10 for descriptor-table pseudo-descriptors)
    uint8_t reg = kNoReg;   // Gpr/Sreg/Cr/Dr/Xmm number; Mem: base register, kNoReg or kRipBase
    bool high8 = false;     // AH, CH, DH, BH
    uint8_t index = kNoReg; // Mem
    uint8_t scale = 0;      // Mem: log2
    uint8_t seg = 3;        // Mem: segment (Sreg numbering)
    int64_t value = 0;      // Mem: displacement; Imm: value as the instruction extends it; Rel: offset;
                            // Ptr: selector << 32 | offset
};

namespace insn_flags {
inline constexpr uint8_t Rep = 1, Repne = 2, Lock = 4, SegOverride = 8, EndsBlock = 16, Far = 32;
}

struct Insn {
    Handler exec = nullptr;
    uint16_t mnemonic = 0;  // ZydisMnemonic
    uint8_t length = 0;
    uint8_t opsize = 0;     // operand size in bytes
    uint8_t addrsize = 0;   // address size in bytes
    uint8_t flags = 0;      // insn_flags
    uint8_t cond = 0;       // condition code 0..15 of Jcc/SETcc/CMOVcc (x86 numbering); x87 (D8..DF): ModRM
    uint8_t seg = 3;        // segment of implicit memory operands (string source): DS or the override
    uint8_t nops = 0;       // visible operands
    uint8_t opcode = 0;     // Zydis opcode byte (distinguishes forms where needed)
    std::array<Operand, 3> op{};
};

// The CPU mode a block was decoded for (part of the cache key).
enum class CodeMode : uint8_t { Long64 = 0, Prot32 = 1, Prot16 = 2, Real16 = 3 };

struct Block {
    uint64_t gpa = 0;       // first byte
    uint32_t bytes = 0;     // total length (never crosses the 4K page of gpa, except an uncached block)
    CodeMode mode = CodeMode::Long64;
    bool cached = true;     // false for an instruction spanning two pages (decoded every time)
    std::vector<Insn> insns;
    uint64_t executions = 0;  // for a translator to pick hot blocks
};

}  // namespace popek::hv::emu
