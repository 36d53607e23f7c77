// Random instruction sequences for the differential test (emu_diff_test.cpp):
// integer sequences that track which flags are undefined, and SSE2 sequences.
#pragma once

#include <cstring>
#include <random>

#include "emu_env.hpp"

namespace popek::hv::emu::test {

using F = uint64_t;
constexpr F CF = rflags::CF, PF = rflags::PF, AF = rflags::AF, ZF = rflags::ZF, SF = rflags::SF, OF = rflags::OF;
constexpr F ALL = rflags::Arith;

// One generated instruction (or a few, for forms that need set-up).
struct Piece {
    std::vector<uint8_t> bytes;
    F reads = 0;  // flags whose values it depends on
    F def = 0;    // flags it writes with defined values
    F undef = 0;  // flags it leaves undefined
};

class Generator {
public:
    // `keep_rbp`: never use RBP (it points at the memory operands' buffer).
    explicit Generator(uint64_t seed, bool keep_rbp = false) : rng_(seed), keep_rbp_(keep_rbp) {}
    [[nodiscard]] static bool uses_memory() { return false; }

    uint64_t value() {
        switch (pick(8)) {
        case 0: return 0;
        case 1: return ~0ULL;
        case 2: return 1ULL << pick(64);
        case 3: return (1ULL << 63) - pick(3);
        case 4: return pick(256);
        case 5: return static_cast<uint64_t>(-static_cast<int64_t>(pick(256)));
        default: return rng_();
        }
    }

    // XMM contents: random bits, or lanes of interesting floats and doubles.
    Xmm xmm_value() {
        static constexpr uint32_t kFloats[] = {0, 0x80000000, 0x3f800000, 0xbfc00000, 0x7f800000, 0xff800000,
                                               0x7fc00000, 0x7fa00000, 0x00000001, 0x007fffff, 0x00800000,
                                               0x7f7fffff, 0x4f000000, 0xcf000000, 0x5f000000, 0x3effffff};
        static constexpr uint64_t kDoubles[] = {0, 1ULL << 63, 0x3ff0000000000000, 0xbff8000000000000,
                                                0x7ff0000000000000, 0xfff0000000000000, 0x7ff8000000000000,
                                                0x7ff4000000000000, 1, 0x000fffffffffffff, 0x0010000000000000,
                                                0x7fefffffffffffff, 0x41e0000000000000, 0xc3e0000000000000,
                                                0x43e0000000000000, 0x3fdfffffffffffff};
        Xmm x{value(), value()};
        switch (pick(3)) {
        case 0: {
            uint32_t l[4];
            for (auto& f : l) f = pick(3) ? kFloats[pick(16)] : static_cast<uint32_t>(rng_());
            std::memcpy(static_cast<void*>(&x), l, 16);
            break;
        }
        case 1:
            x.lo = pick(3) ? kDoubles[pick(16)] : rng_();
            x.hi = pick(3) ? kDoubles[pick(16)] : rng_();
            break;
        default: break;
        }
        return x;
    }

    // A random piece that does not read a flag in `unknown`.
    Piece piece(F unknown) {
        for (;;) {
            Piece p;
            if (make(p) && (p.reads & unknown) == 0) return p;
        }
    }

private:
    unsigned pick(unsigned n) { return static_cast<unsigned>(rng_() % n); }

    // A GPR other than RSP (and its byte SPL), `size` bytes.
public:
    ZydisRegister reg(unsigned size) {
        unsigned idx = keep_rbp_ ? pick(14) : pick(15);
        if (idx >= 4) idx += keep_rbp_ ? 2 : 1;
        switch (size) {
        case 8: return static_cast<ZydisRegister>(ZYDIS_REGISTER_RAX + idx);
        case 4: return static_cast<ZydisRegister>(ZYDIS_REGISTER_EAX + idx);
        case 2: return static_cast<ZydisRegister>(ZYDIS_REGISTER_AX + idx);
        default: {
            unsigned n = keep_rbp_ ? pick(18) : pick(19);  // AL..BH, then (BPL) SIL.. R15B, skipping SPL
            if (n >= 8) n += keep_rbp_ ? 2 : 1;
            return static_cast<ZydisRegister>(ZYDIS_REGISTER_AL + n);
        }
        }
    }

private:
    unsigned size() { return 1u << pick(4); }
    unsigned size_wide() { return 2u << pick(3); }
    int64_t imm(unsigned sz) {
        const uint64_t v = value();
        if (sz == 1) return static_cast<int8_t>(v);
        if (sz == 2) return static_cast<int16_t>(v);
        return static_cast<int32_t>(v);
    }

    bool emit(Piece& p, ZydisMnemonic m, std::initializer_list<AsmOp> ops) {
        Asm a(0);
        ZydisEncoderRequest req;
        std::memset(&req, 0, sizeof req);
        req.machine_mode = ZYDIS_MACHINE_MODE_LONG_64;
        req.mnemonic = m;
        req.operand_count = static_cast<ZyanU8>(ops.size());
        size_t k = 0;
        for (const AsmOp& o : ops) req.operands[k++] = o.z;
        uint8_t buf[ZYDIS_MAX_INSTRUCTION_LENGTH];
        ZyanUSize len = sizeof buf;
        if (!ZYAN_SUCCESS(ZydisEncoderEncodeInstruction(&req, buf, &len))) return false;  // e.g. AH with REX
        p.bytes.insert(p.bytes.end(), buf, buf + len);
        return true;
    }

    static F cc_reads(unsigned cc) {
        static constexpr F kReads[8] = {OF, CF, ZF, CF | ZF, SF, PF, SF | OF, ZF | SF | OF};
        return kReads[cc >> 1];
    }

    bool make(Piece& p) {
        static constexpr ZydisMnemonic kAlu[] = {ZYDIS_MNEMONIC_ADD, ZYDIS_MNEMONIC_ADC, ZYDIS_MNEMONIC_SUB,
                                                 ZYDIS_MNEMONIC_SBB, ZYDIS_MNEMONIC_CMP, ZYDIS_MNEMONIC_AND,
                                                 ZYDIS_MNEMONIC_OR,  ZYDIS_MNEMONIC_XOR, ZYDIS_MNEMONIC_TEST};
        static constexpr ZydisMnemonic kShift[] = {ZYDIS_MNEMONIC_SHL, ZYDIS_MNEMONIC_SHR, ZYDIS_MNEMONIC_SAR,
                                                   ZYDIS_MNEMONIC_ROL, ZYDIS_MNEMONIC_ROR, ZYDIS_MNEMONIC_RCL,
                                                   ZYDIS_MNEMONIC_RCR};
        const unsigned kind = pick(22);
        const unsigned sz = size();
        switch (kind) {
        case 0:
        case 1: {  // ALU reg, reg / reg, imm
            const unsigned op = pick(9);
            const ZydisMnemonic m = kAlu[op];
            const bool ok = kind == 0 ? emit(p, m, {R(reg(sz)), R(reg(sz))}) : emit(p, m, {R(reg(sz)), I(imm(sz))});
            p.reads = (op == 1 || op == 3) ? CF : 0;
            p.def = op >= 5 ? ALL & ~AF : ALL;
            p.undef = op >= 5 ? AF : 0;
            return ok;
        }
        case 2: {  // INC DEC NEG NOT
            const unsigned op = pick(4);
            static constexpr ZydisMnemonic kUn[] = {ZYDIS_MNEMONIC_INC, ZYDIS_MNEMONIC_DEC, ZYDIS_MNEMONIC_NEG,
                                                    ZYDIS_MNEMONIC_NOT};
            p.def = op < 2 ? ALL & ~CF : op == 2 ? ALL : 0;
            return emit(p, kUn[op], {R(reg(sz))});
        }
        case 3:
        case 4: {  // shifts and rotates by an immediate or by CL
            const unsigned op = pick(7);
            const unsigned count = pick(4) == 0 ? 1 : pick(70);
            const unsigned c = count & (sz == 8 ? 63 : 31), bits = sz * 8;
            bool ok = true;
            if (kind == 3) {
                ok = emit(p, kShift[op], {R(reg(sz)), I(count)});
            } else {
                ok = emit(p, ZYDIS_MNEMONIC_MOV, {R(ZYDIS_REGISTER_CL), I(static_cast<int8_t>(count))}) &&
                     emit(p, kShift[op], {R(reg(sz)), R(ZYDIS_REGISTER_CL)});
            }
            if (c == 0) return ok;
            if (op <= 2) {
                p.def = ALL;
                p.undef = AF | (c > 1 ? OF : 0) | (op < 2 && c >= bits ? CF : 0);
            } else {
                p.def = CF | OF;
                p.undef = c != 1 ? OF : 0;
                p.reads = op >= 5 ? CF : 0;
            }
            return ok;
        }
        case 5: {  // SHLD/SHRD
            const unsigned s2 = size_wide();
            const unsigned c = pick(64) & (s2 == 8 ? 63 : 31);
            if (s2 == 2 && c > 16) return false;  // result undefined
            if (c != 0) {
                p.def = ALL;
                p.undef = AF | (c > 1 ? OF : 0);
            }
            return emit(p, pick(2) ? ZYDIS_MNEMONIC_SHLD : ZYDIS_MNEMONIC_SHRD, {R(reg(s2)), R(reg(s2)), I(c)});
        }
        case 6: {  // MUL / IMUL, all forms
            p.def = CF | OF;
            p.undef = SF | ZF | AF | PF;
            const unsigned form = pick(4), s2 = size_wide();
            if (form == 0) return emit(p, ZYDIS_MNEMONIC_MUL, {R(reg(sz))});
            if (form == 1) return emit(p, ZYDIS_MNEMONIC_IMUL, {R(reg(sz))});
            if (form == 2) return emit(p, ZYDIS_MNEMONIC_IMUL, {R(reg(s2)), R(reg(s2))});
            return emit(p, ZYDIS_MNEMONIC_IMUL, {R(reg(s2)), R(reg(s2)), I(imm(s2))});
        }
        case 7: {  // DIV / IDIV with set-up that rules out #DE
            p.undef = ALL;
            ZydisRegister d = reg(sz);
            const ZydisRegister full = ZydisRegisterGetLargestEnclosing(ZYDIS_MACHINE_MODE_LONG_64, d);
            if (full == ZYDIS_REGISTER_RAX || full == ZYDIS_REGISTER_RDX) return false;
            const bool is_signed = pick(2) != 0;
            bool ok = true;
            if (!is_signed) {
                ok = sz == 1 ? emit(p, ZYDIS_MNEMONIC_AND, {R(ZYDIS_REGISTER_EAX), I(0xff)})
                             : emit(p, ZYDIS_MNEMONIC_XOR, {R(ZYDIS_REGISTER_EDX), R(ZYDIS_REGISTER_EDX)});
                ok = ok && emit(p, ZYDIS_MNEMONIC_OR, {R(d), I(1)}) && emit(p, ZYDIS_MNEMONIC_DIV, {R(d)});
            } else {
                static constexpr ZydisMnemonic kExt[] = {ZYDIS_MNEMONIC_CBW, ZYDIS_MNEMONIC_CWD, ZYDIS_MNEMONIC_CDQ,
                                                         ZYDIS_MNEMONIC_CQO};
                ok = emit(p, kExt[__builtin_ctz(sz)], {}) && emit(p, ZYDIS_MNEMONIC_AND, {R(d), I(0x7f)}) &&
                     emit(p, ZYDIS_MNEMONIC_OR, {R(d), I(2)}) && emit(p, ZYDIS_MNEMONIC_IDIV, {R(d)});
            }
            return ok;
        }
        case 8: {  // BT family
            static constexpr ZydisMnemonic kBt[] = {ZYDIS_MNEMONIC_BT, ZYDIS_MNEMONIC_BTS, ZYDIS_MNEMONIC_BTR,
                                                    ZYDIS_MNEMONIC_BTC};
            const unsigned s2 = size_wide();
            p.def = CF;
            p.undef = OF | SF | AF | PF;
            if (pick(2)) return emit(p, kBt[pick(4)], {R(reg(s2)), R(reg(s2))});
            return emit(p, kBt[pick(4)], {R(reg(s2)), I(pick(64))});
        }
        case 9: {  // bit scans and counts
            const unsigned s2 = size_wide(), op = pick(5);
            static constexpr ZydisMnemonic kScan[] = {ZYDIS_MNEMONIC_BSF, ZYDIS_MNEMONIC_BSR, ZYDIS_MNEMONIC_TZCNT,
                                                      ZYDIS_MNEMONIC_LZCNT, ZYDIS_MNEMONIC_POPCNT};
            p.def = op < 2 ? ZF : op < 4 ? CF | ZF : ALL;
            p.undef = op < 2 ? CF | OF | SF | AF | PF : op < 4 ? OF | SF | AF | PF : 0;
            return emit(p, kScan[op], {R(reg(s2)), R(reg(s2))});
        }
        case 10: {  // MOVZX / MOVSX / MOVSXD
            const unsigned s2 = size_wide();
            const unsigned from = pick(2) ? 1 : 2;
            if (from >= s2) return emit(p, ZYDIS_MNEMONIC_MOVSXD, {R(reg(8)), R(reg(4))});
            return emit(p, pick(2) ? ZYDIS_MNEMONIC_MOVZX : ZYDIS_MNEMONIC_MOVSX, {R(reg(s2)), R(reg(from))});
        }
        case 11: return pick(2) ? emit(p, ZYDIS_MNEMONIC_MOV, {R(reg(sz)), R(reg(sz))})
                                : emit(p, ZYDIS_MNEMONIC_XCHG, {R(reg(sz)), R(reg(sz))});
        case 12: {  // CMOVcc / SETcc
            const unsigned cc = pick(16);
            p.reads = cc_reads(cc);
            if (pick(2)) {
                static constexpr ZydisMnemonic kSet[] = {ZYDIS_MNEMONIC_SETO, ZYDIS_MNEMONIC_SETNO, ZYDIS_MNEMONIC_SETB,
                                                         ZYDIS_MNEMONIC_SETNB, ZYDIS_MNEMONIC_SETZ, ZYDIS_MNEMONIC_SETNZ,
                                                         ZYDIS_MNEMONIC_SETBE, ZYDIS_MNEMONIC_SETNBE, ZYDIS_MNEMONIC_SETS,
                                                         ZYDIS_MNEMONIC_SETNS, ZYDIS_MNEMONIC_SETP, ZYDIS_MNEMONIC_SETNP,
                                                         ZYDIS_MNEMONIC_SETL, ZYDIS_MNEMONIC_SETNL, ZYDIS_MNEMONIC_SETLE,
                                                         ZYDIS_MNEMONIC_SETNLE};
                return emit(p, kSet[cc], {R(reg(1))});
            }
            static constexpr ZydisMnemonic kCmov[] = {
                ZYDIS_MNEMONIC_CMOVO,  ZYDIS_MNEMONIC_CMOVNO, ZYDIS_MNEMONIC_CMOVB,  ZYDIS_MNEMONIC_CMOVNB,
                ZYDIS_MNEMONIC_CMOVZ,  ZYDIS_MNEMONIC_CMOVNZ, ZYDIS_MNEMONIC_CMOVBE, ZYDIS_MNEMONIC_CMOVNBE,
                ZYDIS_MNEMONIC_CMOVS,  ZYDIS_MNEMONIC_CMOVNS, ZYDIS_MNEMONIC_CMOVP,  ZYDIS_MNEMONIC_CMOVNP,
                ZYDIS_MNEMONIC_CMOVL,  ZYDIS_MNEMONIC_CMOVNL, ZYDIS_MNEMONIC_CMOVLE, ZYDIS_MNEMONIC_CMOVNLE};
            const unsigned s2 = size_wide();
            return emit(p, kCmov[cc], {R(reg(s2)), R(reg(s2))});
        }
        case 13: {  // BSWAP, CBW family
            if (pick(2)) return emit(p, ZYDIS_MNEMONIC_BSWAP, {R(reg(pick(2) ? 4 : 8))});
            static constexpr ZydisMnemonic kExt[] = {ZYDIS_MNEMONIC_CBW, ZYDIS_MNEMONIC_CWDE, ZYDIS_MNEMONIC_CDQE,
                                                     ZYDIS_MNEMONIC_CWD, ZYDIS_MNEMONIC_CDQ,  ZYDIS_MNEMONIC_CQO};
            return emit(p, kExt[pick(6)], {});
        }
        case 14: {  // LEA
            const unsigned s2 = size_wide();
            const ZydisRegister base = reg(8), index = reg(8);
            const auto disp = static_cast<int32_t>(value());
            return emit(p, ZYDIS_MNEMONIC_LEA, {R(reg(s2)), M(0, base, disp, index, static_cast<uint8_t>(1u << pick(4)))});
        }
        case 15:  // CMPXCHG / XADD
            p.def = ALL;
            return emit(p, pick(2) ? ZYDIS_MNEMONIC_CMPXCHG : ZYDIS_MNEMONIC_XADD, {R(reg(sz)), R(reg(sz))});
        case 16:  // LAHF / SAHF
            if (pick(2)) {
                p.reads = SF | ZF | AF | PF | CF;
                return emit(p, ZYDIS_MNEMONIC_LAHF, {});
            }
            p.def = SF | ZF | AF | PF | CF;
            return emit(p, ZYDIS_MNEMONIC_SAHF, {});
        case 17: {  // CLC STC CMC
            const unsigned op = pick(3);
            p.def = CF;
            p.reads = op == 2 ? CF : 0;
            return emit(p, op == 0 ? ZYDIS_MNEMONIC_CLC : op == 1 ? ZYDIS_MNEMONIC_STC : ZYDIS_MNEMONIC_CMC, {});
        }
        case 18: {  // Jcc over one instruction: both paths must agree
            const unsigned cc = pick(16);
            p.reads = cc_reads(cc);
            p.def = ALL;
            const ZydisRegister r = reg(8);
            // jcc +3 ; add r, imm8 (3 or 4 bytes) -- encode the skip by hand
            Piece body;
            if (!emit(body, ZYDIS_MNEMONIC_ADD, {R(r), I(static_cast<int8_t>(pick(100) + 1))})) return false;
            p.bytes = {static_cast<uint8_t>(0x70 + cc), static_cast<uint8_t>(body.bytes.size())};
            p.bytes.insert(p.bytes.end(), body.bytes.begin(), body.bytes.end());
            // Whether the ADD ran decides the flags; afterwards force them defined.
            return emit(p, ZYDIS_MNEMONIC_CMP, {R(reg(8)), R(reg(8))});
        }
        case 19: {  // BMI1
            const unsigned s2 = pick(2) ? 8 : 4, op = pick(5);
            static constexpr ZydisMnemonic kBmi[] = {ZYDIS_MNEMONIC_ANDN, ZYDIS_MNEMONIC_BEXTR, ZYDIS_MNEMONIC_BLSI,
                                                     ZYDIS_MNEMONIC_BLSMSK, ZYDIS_MNEMONIC_BLSR};
            p.def = ALL;
            p.undef = AF | PF | (op == 1 ? SF : 0);
            if (op < 2) return emit(p, kBmi[op], {R(reg(s2)), R(reg(s2)), R(reg(s2))});
            return emit(p, kBmi[op], {R(reg(s2)), R(reg(s2))});
        }
        default:
            return emit(p, ZYDIS_MNEMONIC_MOV, {R(reg(sz)), I(imm(sz))});
        }
    }

    std::mt19937_64 rng_;
    bool keep_rbp_;
};

// SSE2 integer and move instructions between XMM registers (and GPRs).
class SseGenerator {
public:
    explicit SseGenerator(uint64_t seed) : rng_(seed) {}
    [[nodiscard]] static bool uses_memory() { return false; }
    uint64_t value() { return base_.value(); }
    Xmm xmm_value() { return base_.xmm_value(); }

    Piece piece(F) {
        for (;;) {
            Piece p;
            if (make(p)) return p;
        }
    }

private:
    unsigned pick(unsigned n) { return static_cast<unsigned>(rng_() % n); }
    ZydisRegister xmm() { return static_cast<ZydisRegister>(ZYDIS_REGISTER_XMM0 + pick(16)); }
    ZydisRegister gpr(unsigned size) {
        unsigned idx = pick(15);
        if (idx >= 4) ++idx;
        return static_cast<ZydisRegister>((size == 8 ? ZYDIS_REGISTER_RAX : ZYDIS_REGISTER_EAX) + idx);
    }
    static bool emit(Piece& p, ZydisMnemonic m, std::initializer_list<AsmOp> ops) {
        ZydisEncoderRequest req;
        std::memset(&req, 0, sizeof req);
        req.machine_mode = ZYDIS_MACHINE_MODE_LONG_64;
        req.mnemonic = m;
        req.operand_count = static_cast<ZyanU8>(ops.size());
        size_t k = 0;
        for (const AsmOp& o : ops) req.operands[k++] = o.z;
        uint8_t buf[ZYDIS_MAX_INSTRUCTION_LENGTH];
        ZyanUSize len = sizeof buf;
        if (!ZYAN_SUCCESS(ZydisEncoderEncodeInstruction(&req, buf, &len))) return false;
        p.bytes.insert(p.bytes.end(), buf, buf + len);
        return true;
    }

    bool make(Piece& p) {
        static constexpr ZydisMnemonic kBinary[] = {
            ZYDIS_MNEMONIC_PXOR,      ZYDIS_MNEMONIC_POR,       ZYDIS_MNEMONIC_PAND,      ZYDIS_MNEMONIC_PANDN,
            ZYDIS_MNEMONIC_XORPS,     ZYDIS_MNEMONIC_ORPS,      ZYDIS_MNEMONIC_ANDPS,     ZYDIS_MNEMONIC_ANDNPD,
            ZYDIS_MNEMONIC_PCMPEQB,   ZYDIS_MNEMONIC_PCMPEQW,   ZYDIS_MNEMONIC_PCMPEQD,   ZYDIS_MNEMONIC_PCMPGTB,
            ZYDIS_MNEMONIC_PCMPGTW,   ZYDIS_MNEMONIC_PCMPGTD,   ZYDIS_MNEMONIC_PADDB,     ZYDIS_MNEMONIC_PADDW,
            ZYDIS_MNEMONIC_PADDD,     ZYDIS_MNEMONIC_PADDQ,     ZYDIS_MNEMONIC_PSUBB,     ZYDIS_MNEMONIC_PSUBW,
            ZYDIS_MNEMONIC_PSUBD,     ZYDIS_MNEMONIC_PSUBQ,     ZYDIS_MNEMONIC_PADDUSB,   ZYDIS_MNEMONIC_PADDUSW,
            ZYDIS_MNEMONIC_PSUBUSB,   ZYDIS_MNEMONIC_PSUBUSW,   ZYDIS_MNEMONIC_PADDSB,    ZYDIS_MNEMONIC_PADDSW,
            ZYDIS_MNEMONIC_PSUBSB,    ZYDIS_MNEMONIC_PSUBSW,    ZYDIS_MNEMONIC_PMINUB,    ZYDIS_MNEMONIC_PMAXUB,
            ZYDIS_MNEMONIC_PMINSW,    ZYDIS_MNEMONIC_PMAXSW,    ZYDIS_MNEMONIC_PMULLW,    ZYDIS_MNEMONIC_PMULHW,
            ZYDIS_MNEMONIC_PMULHUW,   ZYDIS_MNEMONIC_PMULUDQ,   ZYDIS_MNEMONIC_PAVGB,     ZYDIS_MNEMONIC_PAVGW,
            ZYDIS_MNEMONIC_PSADBW,    ZYDIS_MNEMONIC_PUNPCKLBW, ZYDIS_MNEMONIC_PUNPCKLWD, ZYDIS_MNEMONIC_PUNPCKLDQ,
            ZYDIS_MNEMONIC_PUNPCKLQDQ, ZYDIS_MNEMONIC_PUNPCKHBW, ZYDIS_MNEMONIC_PUNPCKHWD, ZYDIS_MNEMONIC_PUNPCKHDQ,
            ZYDIS_MNEMONIC_PUNPCKHQDQ, ZYDIS_MNEMONIC_UNPCKLPS, ZYDIS_MNEMONIC_UNPCKHPD,  ZYDIS_MNEMONIC_PACKUSWB,
            ZYDIS_MNEMONIC_PACKSSWB,  ZYDIS_MNEMONIC_PACKSSDW,  ZYDIS_MNEMONIC_MOVDQA,    ZYDIS_MNEMONIC_MOVDQU,
            ZYDIS_MNEMONIC_MOVAPS,    ZYDIS_MNEMONIC_MOVUPS,    ZYDIS_MNEMONIC_MOVQ,      ZYDIS_MNEMONIC_MOVSS,
            ZYDIS_MNEMONIC_MOVSD,     ZYDIS_MNEMONIC_MOVHLPS,   ZYDIS_MNEMONIC_MOVLHPS,   ZYDIS_MNEMONIC_PSLLW,
            ZYDIS_MNEMONIC_PSRLD,     ZYDIS_MNEMONIC_PSRAW,     ZYDIS_MNEMONIC_PSRLQ};
        static constexpr ZydisMnemonic kShiftImm[] = {ZYDIS_MNEMONIC_PSLLW, ZYDIS_MNEMONIC_PSLLD, ZYDIS_MNEMONIC_PSLLQ,
                                                      ZYDIS_MNEMONIC_PSRLW, ZYDIS_MNEMONIC_PSRLD, ZYDIS_MNEMONIC_PSRLQ,
                                                      ZYDIS_MNEMONIC_PSRAW, ZYDIS_MNEMONIC_PSRAD, ZYDIS_MNEMONIC_PSLLDQ,
                                                      ZYDIS_MNEMONIC_PSRLDQ};
        static constexpr ZydisMnemonic kShuffle[] = {ZYDIS_MNEMONIC_PSHUFD, ZYDIS_MNEMONIC_PSHUFLW, ZYDIS_MNEMONIC_PSHUFHW,
                                                     ZYDIS_MNEMONIC_SHUFPS};
        static constexpr ZydisMnemonic kFloat[] = {
            ZYDIS_MNEMONIC_ADDSS,    ZYDIS_MNEMONIC_ADDPS,     ZYDIS_MNEMONIC_ADDSD,    ZYDIS_MNEMONIC_ADDPD,
            ZYDIS_MNEMONIC_SUBSS,    ZYDIS_MNEMONIC_SUBPS,     ZYDIS_MNEMONIC_SUBSD,    ZYDIS_MNEMONIC_SUBPD,
            ZYDIS_MNEMONIC_MULSS,    ZYDIS_MNEMONIC_MULPS,     ZYDIS_MNEMONIC_MULSD,    ZYDIS_MNEMONIC_MULPD,
            ZYDIS_MNEMONIC_DIVSS,    ZYDIS_MNEMONIC_DIVPS,     ZYDIS_MNEMONIC_DIVSD,    ZYDIS_MNEMONIC_DIVPD,
            ZYDIS_MNEMONIC_MINSS,    ZYDIS_MNEMONIC_MINPS,     ZYDIS_MNEMONIC_MINSD,    ZYDIS_MNEMONIC_MINPD,
            ZYDIS_MNEMONIC_MAXSS,    ZYDIS_MNEMONIC_MAXPS,     ZYDIS_MNEMONIC_MAXSD,    ZYDIS_MNEMONIC_MAXPD,
            ZYDIS_MNEMONIC_SQRTSS,   ZYDIS_MNEMONIC_SQRTPS,    ZYDIS_MNEMONIC_SQRTSD,   ZYDIS_MNEMONIC_SQRTPD,
            ZYDIS_MNEMONIC_RCPSS,    ZYDIS_MNEMONIC_RSQRTPS,   ZYDIS_MNEMONIC_CVTSS2SD, ZYDIS_MNEMONIC_CVTSD2SS,
            ZYDIS_MNEMONIC_CVTPS2PD, ZYDIS_MNEMONIC_CVTPD2PS,  ZYDIS_MNEMONIC_CVTDQ2PS, ZYDIS_MNEMONIC_CVTPS2DQ,
            ZYDIS_MNEMONIC_CVTTPS2DQ, ZYDIS_MNEMONIC_CVTDQ2PD, ZYDIS_MNEMONIC_CVTPD2DQ, ZYDIS_MNEMONIC_CVTTPD2DQ};
        static constexpr ZydisMnemonic kCompare[] = {ZYDIS_MNEMONIC_CMPSS, ZYDIS_MNEMONIC_CMPPS, ZYDIS_MNEMONIC_CMPSD,
                                                     ZYDIS_MNEMONIC_CMPPD};
        static constexpr ZydisMnemonic kFlags[] = {ZYDIS_MNEMONIC_COMISS, ZYDIS_MNEMONIC_COMISD, ZYDIS_MNEMONIC_UCOMISS,
                                                   ZYDIS_MNEMONIC_UCOMISD};
        static constexpr ZydisMnemonic kToInt[] = {ZYDIS_MNEMONIC_CVTSS2SI, ZYDIS_MNEMONIC_CVTTSS2SI,
                                                   ZYDIS_MNEMONIC_CVTSD2SI, ZYDIS_MNEMONIC_CVTTSD2SI};
        switch (pick(12)) {
        case 8:
        case 9: return emit(p, kFloat[pick(sizeof kFloat / sizeof kFloat[0])], {R(xmm()), R(xmm())});
        case 10: return emit(p, kCompare[pick(4)], {R(xmm()), R(xmm()), I(pick(8))}) ||
                        emit(p, ZYDIS_MNEMONIC_SHUFPD, {R(xmm()), R(xmm()), I(pick(4))});
        case 11: {
            const unsigned size = pick(2) ? 8 : 4;
            switch (pick(3)) {
            case 0:
                p.def = ALL;
                return emit(p, kFlags[pick(4)], {R(xmm()), R(xmm())});
            case 1: return emit(p, kToInt[pick(4)], {R(gpr(size)), R(xmm())});
            default:
                return emit(p, pick(2) ? ZYDIS_MNEMONIC_CVTSI2SS : ZYDIS_MNEMONIC_CVTSI2SD, {R(xmm()), R(gpr(size))});
            }
        }
        case 0:
        case 1:
        case 2: return emit(p, kBinary[pick(sizeof kBinary / sizeof kBinary[0])], {R(xmm()), R(xmm())});
        case 3: return emit(p, kShiftImm[pick(10)], {R(xmm()), I(pick(3) == 0 ? pick(256) : pick(20))});
        case 4: return emit(p, kShuffle[pick(4)], {R(xmm()), R(xmm()), I(pick(256))});
        case 5: {
            const unsigned size = pick(2) ? 8 : 4;
            const ZydisMnemonic m = size == 8 ? ZYDIS_MNEMONIC_MOVQ : ZYDIS_MNEMONIC_MOVD;
            return pick(2) ? emit(p, m, {R(xmm()), R(gpr(size))}) : emit(p, m, {R(gpr(size)), R(xmm())});
        }
        case 6: return pick(2) ? emit(p, ZYDIS_MNEMONIC_PMOVMSKB, {R(gpr(4)), R(xmm())})
                               : emit(p, ZYDIS_MNEMONIC_MOVMSKPS, {R(gpr(4)), R(xmm())});
        default: return pick(2) ? emit(p, ZYDIS_MNEMONIC_PINSRW, {R(xmm()), R(gpr(4)), I(pick(8))})
                                : emit(p, ZYDIS_MNEMONIC_PEXTRW, {R(gpr(4)), R(xmm()), I(pick(8))});
        }
    }

    std::mt19937_64 rng_;
    Generator base_{0x5eed};
};

}  // namespace popek::hv::emu::test
