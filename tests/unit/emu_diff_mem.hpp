// Memory-operand sequences for the differential test: the integer
// instructions with a memory destination or source in a 256-byte buffer
// that RBP points at (on the host and in the guest), with and without LOCK.
#pragma once

#include "emu_diff_gen.hpp"

namespace popek::hv::emu::test {

class MemGenerator {
public:
    explicit MemGenerator(uint64_t seed) : rng_(seed), regs_(seed ^ 0xabcdef, true) {}
    [[nodiscard]] static bool uses_memory() { return true; }
    uint64_t value() { return regs_.value(); }
    Xmm xmm_value() { return regs_.xmm_value(); }

    Piece piece(F unknown) {
        for (;;) {
            Piece p;
            if (pick(4) == 0) return regs_.piece(unknown);  // register forms in between
            if (make(p) && (p.reads & unknown) == 0) return p;
        }
    }

private:
    unsigned pick(unsigned n) { return static_cast<unsigned>(rng_() % n); }
    // [rbp + disp]: anywhere for plain accesses, naturally aligned for locked ones.
    AsmOp mem(unsigned size, bool aligned) {
        unsigned disp = pick(256 - size + 1);
        if (aligned) disp &= ~(size - 1);
        return M(static_cast<uint16_t>(size), ZYDIS_REGISTER_RBP, disp);
    }
    static bool emit(Piece& p, ZydisMnemonic m, std::initializer_list<AsmOp> ops, bool lock = false) {
        ZydisEncoderRequest req;
        std::memset(&req, 0, sizeof req);
        req.machine_mode = ZYDIS_MACHINE_MODE_LONG_64;
        req.mnemonic = m;
        req.prefixes = lock ? ZYDIS_ATTRIB_HAS_LOCK : 0;
        req.operand_count = static_cast<ZyanU8>(ops.size());
        size_t k = 0;
        for (const AsmOp& o : ops) req.operands[k++] = o.z;
        uint8_t buf[ZYDIS_MAX_INSTRUCTION_LENGTH];
        ZyanUSize len = sizeof buf;
        if (!ZYAN_SUCCESS(ZydisEncoderEncodeInstruction(&req, buf, &len))) return false;
        p.bytes.insert(p.bytes.end(), buf, buf + len);
        return true;
    }
    int64_t imm(unsigned sz) {
        const uint64_t v = value();
        if (sz == 1) return static_cast<int8_t>(v);
        if (sz == 2) return static_cast<int16_t>(v);
        return static_cast<int32_t>(v);
    }

    bool make(Piece& p) {
        static constexpr ZydisMnemonic kAlu[] = {ZYDIS_MNEMONIC_ADD, ZYDIS_MNEMONIC_ADC, ZYDIS_MNEMONIC_SUB,
                                                 ZYDIS_MNEMONIC_SBB, ZYDIS_MNEMONIC_AND, ZYDIS_MNEMONIC_OR,
                                                 ZYDIS_MNEMONIC_XOR, ZYDIS_MNEMONIC_CMP, ZYDIS_MNEMONIC_TEST};
        const unsigned sz = 1u << pick(4), wide = 2u << pick(3);
        const bool lock = pick(2) != 0;
        switch (pick(9)) {
        case 0: {  // ALU with a memory destination or source
            const unsigned op = pick(9);
            const bool rmw = op < 7;
            p.reads = (op == 1 || op == 3) ? CF : 0;
            p.def = op >= 4 && op != 7 ? ALL & ~AF : ALL;
            p.undef = op >= 4 && op != 7 ? AF : 0;
            switch (pick(3)) {
            case 0: return emit(p, kAlu[op], {mem(sz, rmw && lock), R(regs_.reg(sz))}, rmw && lock);
            case 1: return emit(p, kAlu[op], {mem(sz, rmw && lock), I(imm(sz))}, rmw && lock);
            default: return op != 8 && emit(p, kAlu[op], {R(regs_.reg(sz)), mem(sz, false)});
            }
        }
        case 1: {  // INC DEC NEG NOT
            static constexpr ZydisMnemonic kUn[] = {ZYDIS_MNEMONIC_INC, ZYDIS_MNEMONIC_DEC, ZYDIS_MNEMONIC_NEG,
                                                    ZYDIS_MNEMONIC_NOT};
            const unsigned op = pick(4);
            p.def = op < 2 ? ALL & ~CF : op == 2 ? ALL : 0;
            return emit(p, kUn[op], {mem(sz, lock)}, lock);
        }
        case 2: {  // shifts and rotates of memory by an immediate
            static constexpr ZydisMnemonic kSh[] = {ZYDIS_MNEMONIC_SHL, ZYDIS_MNEMONIC_SHR, ZYDIS_MNEMONIC_SAR,
                                                    ZYDIS_MNEMONIC_ROL, ZYDIS_MNEMONIC_ROR};
            const unsigned op = pick(5), count = pick(40), c = count & (sz == 8 ? 63 : 31), bits = sz * 8;
            if (c != 0) {
                p.def = op < 3 ? ALL : CF | OF;
                p.undef = op < 3 ? AF | (c > 1 ? OF : 0) | (op < 2 && c >= bits ? CF : 0) : (c != 1 ? OF : 0);
            }
            return emit(p, kSh[op], {mem(sz, false), I(count)});
        }
        case 3: {  // XCHG, XADD, CMPXCHG with memory
            const unsigned op = pick(3);
            if (op == 0) return emit(p, ZYDIS_MNEMONIC_XCHG, {mem(sz, true), R(regs_.reg(sz))});
            p.def = ALL;
            return emit(p, op == 1 ? ZYDIS_MNEMONIC_XADD : ZYDIS_MNEMONIC_CMPXCHG, {mem(sz, lock), R(regs_.reg(sz))},
                        lock);
        }
        case 4: {  // BT family on memory with an immediate bit number
            static constexpr ZydisMnemonic kBt[] = {ZYDIS_MNEMONIC_BT, ZYDIS_MNEMONIC_BTS, ZYDIS_MNEMONIC_BTR,
                                                    ZYDIS_MNEMONIC_BTC};
            const unsigned op = pick(4);
            p.def = CF;
            p.undef = OF | SF | AF | PF;
            return emit(p, kBt[op], {mem(wide, op != 0 && lock), I(pick(64))}, op != 0 && lock);
        }
        case 5: {  // moves to, from and within memory sizes
            switch (pick(4)) {
            case 0: return emit(p, ZYDIS_MNEMONIC_MOV, {mem(sz, false), R(regs_.reg(sz))});
            case 1: return emit(p, ZYDIS_MNEMONIC_MOV, {R(regs_.reg(sz)), mem(sz, false)});
            case 2: return emit(p, ZYDIS_MNEMONIC_MOV, {mem(sz, false), I(imm(sz))});
            default: {
                const unsigned from = pick(2) ? 1 : 2;
                if (from >= wide) return false;
                return emit(p, pick(2) ? ZYDIS_MNEMONIC_MOVZX : ZYDIS_MNEMONIC_MOVSX, {R(regs_.reg(wide)), mem(from, false)});
            }
            }
        }
        case 6: {  // multiplies with a memory source
            p.def = CF | OF;
            p.undef = SF | ZF | AF | PF;
            if (pick(2)) return emit(p, pick(2) ? ZYDIS_MNEMONIC_MUL : ZYDIS_MNEMONIC_IMUL, {mem(sz, false)});
            return emit(p, ZYDIS_MNEMONIC_IMUL, {R(regs_.reg(wide)), mem(wide, false)});
        }
        case 7: {  // SHLD/SHRD into memory
            const unsigned c = pick(64) & (wide == 8 ? 63 : 31);
            if (wide == 2 && c > 16) return false;
            if (c != 0) {
                p.def = ALL;
                p.undef = AF | (c > 1 ? OF : 0);
            }
            return emit(p, pick(2) ? ZYDIS_MNEMONIC_SHLD : ZYDIS_MNEMONIC_SHRD, {mem(wide, false), R(regs_.reg(wide)), I(c)});
        }
        default: {  // SETcc into memory, CMOVcc from memory
            static constexpr ZydisMnemonic kSet[] = {ZYDIS_MNEMONIC_SETB, ZYDIS_MNEMONIC_SETNZ, ZYDIS_MNEMONIC_SETL};
            static constexpr ZydisMnemonic kCmov[] = {ZYDIS_MNEMONIC_CMOVB, ZYDIS_MNEMONIC_CMOVNZ, ZYDIS_MNEMONIC_CMOVL};
            static constexpr F kReads[] = {CF, ZF, SF | OF};
            const unsigned cc = pick(3);
            p.reads = kReads[cc];
            if (pick(2)) return emit(p, kSet[cc], {mem(1, false)});
            return emit(p, kCmov[cc], {R(regs_.reg(wide)), mem(wide, false)});
        }
        }
    }

    std::mt19937_64 rng_;
    Generator regs_;
};

}  // namespace popek::hv::emu::test
