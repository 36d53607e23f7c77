// x87 arithmetic, loads, stores, compares, constants, transcendentals and
// stack control, run on the host's own x87 unit so that results, rounding,
// precision control, condition codes and exception flags are the hardware's
// (as SSE floating point runs under the guest's MXCSR).
//
// Each instruction runs in a tiny fixed stub: the guest's x87 state is
// loaded with FXRSTOR, the instruction's two bytes (D8..DF and its ModRM)
// execute, FXSAVE stores the new state and PUSHFQ the flags (FCOMI and
// FCMOVcc use them). The stubs are assembled once into this file's text,
// one per register form (ModRM C0..FF) and one per memory form (its /reg
// field, with the operand at [RSI], a host buffer the handler fills from
// guest memory or copies back to it). Only encodings Zydis decoded as one of
// the mnemonics registered below ever reach a stub, so no guest byte runs
// on the host that is not a valid x87 instruction. Around each stub the
// host's own x87/SSE state is saved and restored.
//
// Exceptions: a waiting instruction first checks for a pending unmasked
// exception (#MF). Unmasked exceptions the instruction itself raises get the
// hardware's response (no store, ES set) and are reported as #MF by the next
// waiting instruction, as on a real CPU. FLDENV/FRSTOR/FNSTENV/FNSAVE, the
// control instructions and FXSAVE live in C++ (exec_fpu.cpp and below).
#include <cstring>

#include "hv/emu/sse.hpp"

// The stubs: 8 opcodes x (64 register forms + 8 memory forms), 16 bytes each.
// In: RDI = 16-byte aligned FXSAVE image, RSI = memory operand, RCX = RFLAGS
// to run with. Out: RAX = RFLAGS after the instruction.
asm(R"(
    .pushsection .text
    .balign 16
    .globl popek_emu_x87_stubs
    .hidden popek_emu_x87_stubs
    .type popek_emu_x87_stubs, @function
popek_emu_x87_stubs:
    .macro popek_x87_stub op, modrm
    .balign 16
    push %rcx
    popfq
    fxrstor64 (%rdi)
    .byte \op, \modrm
    fxsave64 (%rdi)
    pushfq
    pop %rax
    ret
    .endm
    .macro popek_x87_opcode op
    .set popek_x87_m, 0xc0
    .rept 64
    popek_x87_stub \op, popek_x87_m
    .set popek_x87_m, popek_x87_m + 1
    .endr
    .set popek_x87_m, 0x06
    .rept 8
    popek_x87_stub \op, popek_x87_m
    .set popek_x87_m, popek_x87_m + 8
    .endr
    .endm
    popek_x87_opcode 0xd8
    popek_x87_opcode 0xd9
    popek_x87_opcode 0xda
    popek_x87_opcode 0xdb
    popek_x87_opcode 0xdc
    popek_x87_opcode 0xdd
    popek_x87_opcode 0xde
    popek_x87_opcode 0xdf
    .size popek_emu_x87_stubs, . - popek_emu_x87_stubs
    .purgem popek_x87_stub
    .purgem popek_x87_opcode
    .popsection
)");

extern "C" char popek_emu_x87_stubs[];

namespace popek::hv::emu {

namespace {

constexpr uint16_t kFswTop = 0x3800, kFswEs = 0x80, kFswB = 0x8000;
constexpr size_t kStubBytes = 16, kStubsPerOpcode = 72;

// An FXSAVE image (legacy area only) as the stub reads and writes it.
struct alignas(16) FxImage {
    uint8_t b[512];
};

// x87 instructions: #NM with CR0.EM or CR0.TS.
bool x87_available(Engine& e) {
    if ((e.s.cr0 & (cr0::EM | cr0::TS)) != 0) {
        e.raise(kVecNM);
        return false;
    }
    return true;
}

// An unmasked exception is pending: the next waiting instruction raises #MF.
bool exception_pending(const X87& f) { return (f.fsw & kFswEs) != 0 || (f.fsw & ~f.fcw & 0x3f) != 0; }

// Runs the stub for x87 opcode `op` (D8..DF) with `modrm` on the guest's x87
// state; `mem` is the memory operand's host buffer (memory forms).
void run_native(Engine& e, uint8_t op, uint8_t modrm, uint8_t* mem) {
    X87& f = e.s.x87;
    FxImage img{};
    std::memcpy(img.b + 0, &f.fcw, 2);
    // No unmasked exception is pending here; ES/B summarise only that.
    const uint16_t fsw = static_cast<uint16_t>(f.fsw & ~(kFswEs | kFswB));
    std::memcpy(img.b + 2, &fsw, 2);
    img.b[4] = f.ftw;
    const uint32_t mxcsr = 0x1f80;
    std::memcpy(img.b + 24, &mxcsr, 4);
    for (size_t k = 0; k < 8; ++k) std::memcpy(img.b + 32 + k * 16, f.st[k].data(), 10);

    const size_t index = static_cast<size_t>(op - 0xd8) * kStubsPerOpcode +
                         (modrm >= 0xc0 ? static_cast<size_t>(modrm - 0xc0) : 64 + ((modrm >> 3) & 7u));
    char* stub = popek_emu_x87_stubs + index * kStubBytes;
    const uint64_t flags_in = (e.s.rflags & rflags::Arith) | rflags::Fixed1 | rflags::IF;
    FxImage host;
    uint64_t flags_out = 0;
    // The call skips the red zone; the host's x87, SSE and MXCSR state is
    // saved before and restored after, so only RAX and flags change.
    asm volatile(
        "fxsave64 (%[host])\n\t"
        "sub $128, %%rsp\n\t"
        "call *%[stub]\n\t"
        "add $128, %%rsp\n\t"
        "fxrstor64 (%[host])"
        : "=&a"(flags_out)
        : "D"(img.b), "S"(mem), "c"(flags_in), [stub] "r"(stub), [host] "r"(host.b)
        : "memory", "cc");

    std::memcpy(&f.fcw, img.b + 0, 2);
    std::memcpy(&f.fsw, img.b + 2, 2);
    f.ftw = img.b[4];
    for (size_t k = 0; k < 8; ++k) std::memcpy(f.st[k].data(), img.b + 32 + k * 16, 10);
    e.s.rflags = (e.s.rflags & ~rflags::Arith) | (flags_out & rflags::Arith);
}

// Memory forms: operand bytes and whether the instruction stores them, by opcode and /reg.
struct MemForm {
    uint8_t size;
    bool store;
};
MemForm mem_form(uint8_t op, unsigned reg) {
    switch (op) {
    case 0xd8: return {4, false};
    case 0xd9: return {4, reg >= 2};                        // FLD / FST / FSTP m32fp
    case 0xda: return {4, false};
    case 0xdb: return {static_cast<uint8_t>(reg >= 5 ? 10 : 4), reg != 0 && reg != 5};  // FILD/FISTTP/FIST/FISTP m32, FLD/FSTP m80
    case 0xdc: return {8, false};
    case 0xdd: return {8, reg != 0};                        // FLD / FISTTP / FST / FSTP m64
    case 0xde: return {2, false};
    default:                                                // DF: m16int, FBLD/FBSTP m80bcd, FILD/FISTP m64int
        if (reg == 4 || reg == 6) return {10, reg == 6};
        if (reg == 5 || reg == 7) return {8, reg == 7};
        return {2, reg != 0};
    }
}

const Operand* memory_operand(const Insn& i) {
    for (uint8_t k = 0; k < i.nops; ++k) {
        if (i.op[k].kind == OpKind::Mem) return &i.op[k];
    }
    return nullptr;
}

// The decoder keeps the ModRM byte of x87 instructions (D8..DF) in Insn::cond.
uint8_t modrm_of(const Insn& i) { return i.cond; }

Flow exec_x87(Engine& e, const Insn& i) {
    if (!x87_available(e)) return Flow::Fault;
    X87& f = e.s.x87;
    if (exception_pending(f)) return e.raise(kVecMF);
    const uint8_t op = i.opcode;
    const uint8_t modrm = modrm_of(i);
    if (op < 0xd8 || op > 0xdf) return e.raise(kVecUD);
    const uint16_t fop = static_cast<uint16_t>(((op & 7u) << 8) | modrm);
    if (modrm >= 0xc0) {
        run_native(e, op, modrm, nullptr);
        f.fop = fop;
        f.fip = e.s.rip;
        return Flow::Next;
    }
    const Operand* m = memory_operand(i);
    if (m == nullptr) return e.raise(kVecUD);
    const MemForm form = mem_form(op, (modrm >> 3) & 7u);
    const uint64_t off = e.ea(i, *m);
    uint8_t buf[16] = {};
    if (form.store) {
        uint64_t la = 0;
        if (!e.linear(m->seg, off, la) || !e.probe_write(la, form.size, e.user_mode())) return Flow::Fault;
    } else if (!e.read_bytes(m->seg, off, buf, form.size)) {
        return Flow::Fault;
    }
    run_native(e, op, modrm, buf);
    f.fop = fop;
    f.fip = e.s.rip;
    f.fdp = off;
    // Unmasked invalid, denormal, divide, overflow or underflow: nothing is stored.
    if (form.store && (f.fsw & ~f.fcw & 0x1f) == 0) {
        if (!e.write_bytes(m->seg, off, buf, form.size)) return Flow::Fault;
    }
    return Flow::Next;
}

// ---- environment and state images (32-bit protected-mode format) ----------

// The full tag word: per physical register 0 valid, 1 zero, 2 special, 3 empty.
uint16_t full_tag_word(const X87& f) {
    const unsigned top = (f.fsw & kFswTop) >> 11;
    uint16_t tw = 0;
    for (unsigned p = 0; p < 8; ++p) {
        unsigned tag = 3;
        if ((f.ftw >> p) & 1u) {
            const auto& r = f.st[(p - top) & 7u];
            uint64_t mant = 0;
            uint16_t se = 0;
            std::memcpy(&mant, r.data(), 8);
            std::memcpy(&se, r.data() + 8, 2);
            const unsigned exp = se & 0x7fffu;
            if (exp == 0x7fff) {
                tag = 2;
            } else if (exp == 0) {
                tag = mant == 0 ? 1 : 2;
            } else {
                tag = (mant >> 63) != 0 ? 0 : 2;
            }
        }
        tw = static_cast<uint16_t>(tw | (tag << (2 * p)));
    }
    return tw;
}

bool env_format_supported(Engine& e, const Insn& i) {
    if (i.opsize == 2) {  // the 16-bit formats
        e.note_unimplemented(i.mnemonic);
        e.raise(kVecUD);
        return false;
    }
    return true;
}

void store_env(const Engine& e, uint8_t* env) {
    const X87& f = e.s.x87;
    const auto put32 = [env](size_t at, uint32_t v) { std::memcpy(env + at, &v, 4); };
    put32(0, 0xffff0000u | f.fcw);
    put32(4, 0xffff0000u | f.fsw);
    put32(8, 0xffff0000u | full_tag_word(f));
    put32(12, static_cast<uint32_t>(f.fip));
    put32(16, e.s.seg[kCs].selector | (static_cast<uint32_t>(f.fop & 0x7ffu) << 16));
    put32(20, static_cast<uint32_t>(f.fdp));
    put32(24, 0xffff0000u);
}

// `keep_registers`: FLDENV (the physical registers keep their values under
// the new TOP); FRSTOR loads them afterwards in stack order.
void load_env(Engine& e, const uint8_t* env, bool keep_registers) {
    X87& f = e.s.x87;
    uint32_t v[7];
    std::memcpy(v, env, sizeof v);
    f.fcw = static_cast<uint16_t>(v[0]);
    if (keep_registers) x87_set_top(f, (v[1] >> 11) & 7u);
    f.fsw = static_cast<uint16_t>(v[1]);
    f.ftw = 0;
    for (unsigned p = 0; p < 8; ++p) {
        if (((v[2] >> (2 * p)) & 3u) != 3u) f.ftw = static_cast<uint8_t>(f.ftw | (1u << p));
    }
    f.fip = v[3];
    f.fop = static_cast<uint16_t>((v[4] >> 16) & 0x7ffu);
    f.fdp = v[5];
}

Flow exec_fnstenv(Engine& e, const Insn& i) {
    if (!x87_available(e) || !env_format_supported(e, i)) return Flow::Fault;
    uint8_t env[28];
    store_env(e, env);
    if (!e.write_bytes(i.op[0].seg, e.ea(i, i.op[0]), env, sizeof env)) return Flow::Fault;
    e.s.x87.fcw |= 0x3f;  // all exceptions masked afterwards
    return Flow::Next;
}

Flow exec_fldenv(Engine& e, const Insn& i) {
    if (!x87_available(e) || !env_format_supported(e, i)) return Flow::Fault;
    uint8_t env[28];
    if (!e.read_bytes(i.op[0].seg, e.ea(i, i.op[0]), env, sizeof env)) return Flow::Fault;
    load_env(e, env, true);
    return Flow::Next;
}

Flow exec_fnsave(Engine& e, const Insn& i) {
    if (!x87_available(e) || !env_format_supported(e, i)) return Flow::Fault;
    uint8_t area[108];
    store_env(e, area);
    X87& f = e.s.x87;
    for (size_t k = 0; k < 8; ++k) std::memcpy(area + 28 + k * 10, f.st[k].data(), 10);
    if (!e.write_bytes(i.op[0].seg, e.ea(i, i.op[0]), area, sizeof area)) return Flow::Fault;
    x87_set_top(f, 0);  // then FNINIT
    f.fcw = 0x37f;
    f.fsw = 0;
    f.ftw = 0;
    f.fop = 0;
    f.fip = f.fdp = 0;
    return Flow::Next;
}

Flow exec_frstor(Engine& e, const Insn& i) {
    if (!x87_available(e) || !env_format_supported(e, i)) return Flow::Fault;
    uint8_t area[108];
    if (!e.read_bytes(i.op[0].seg, e.ea(i, i.op[0]), area, sizeof area)) return Flow::Fault;
    load_env(e, area, false);
    X87& f = e.s.x87;
    for (size_t k = 0; k < 8; ++k) std::memcpy(f.st[k].data(), area + 28 + k * 10, 10);
    return Flow::Next;
}

// FENI, FDISI and FSETPM: 8087/287 controls that later x87 units execute as no-ops.
Flow exec_x87_legacy_nop(Engine& e, const Insn&) { return x87_available(e) ? Flow::Next : Flow::Fault; }

}  // namespace

void register_x87(HandlerTable& t) {
    static constexpr ZydisMnemonic kNative[] = {
        ZYDIS_MNEMONIC_FADD,    ZYDIS_MNEMONIC_FADDP,   ZYDIS_MNEMONIC_FIADD,   ZYDIS_MNEMONIC_FSUB,
        ZYDIS_MNEMONIC_FSUBP,   ZYDIS_MNEMONIC_FISUB,   ZYDIS_MNEMONIC_FSUBR,   ZYDIS_MNEMONIC_FSUBRP,
        ZYDIS_MNEMONIC_FISUBR,  ZYDIS_MNEMONIC_FMUL,    ZYDIS_MNEMONIC_FMULP,   ZYDIS_MNEMONIC_FIMUL,
        ZYDIS_MNEMONIC_FDIV,    ZYDIS_MNEMONIC_FDIVP,   ZYDIS_MNEMONIC_FIDIV,   ZYDIS_MNEMONIC_FDIVR,
        ZYDIS_MNEMONIC_FDIVRP,  ZYDIS_MNEMONIC_FIDIVR,  ZYDIS_MNEMONIC_FCOM,    ZYDIS_MNEMONIC_FCOMP,
        ZYDIS_MNEMONIC_FCOMPP,  ZYDIS_MNEMONIC_FICOM,   ZYDIS_MNEMONIC_FICOMP,  ZYDIS_MNEMONIC_FUCOM,
        ZYDIS_MNEMONIC_FUCOMP,  ZYDIS_MNEMONIC_FUCOMPP, ZYDIS_MNEMONIC_FCOMI,   ZYDIS_MNEMONIC_FCOMIP,
        ZYDIS_MNEMONIC_FUCOMI,  ZYDIS_MNEMONIC_FUCOMIP, ZYDIS_MNEMONIC_FTST,    ZYDIS_MNEMONIC_FXAM,
        ZYDIS_MNEMONIC_FLD,     ZYDIS_MNEMONIC_FILD,    ZYDIS_MNEMONIC_FBLD,    ZYDIS_MNEMONIC_FST,
        ZYDIS_MNEMONIC_FSTP,    ZYDIS_MNEMONIC_FSTPNCE, ZYDIS_MNEMONIC_FIST,    ZYDIS_MNEMONIC_FISTP,
        ZYDIS_MNEMONIC_FISTTP,  ZYDIS_MNEMONIC_FBSTP,   ZYDIS_MNEMONIC_FLD1,    ZYDIS_MNEMONIC_FLDL2T,
        ZYDIS_MNEMONIC_FLDL2E,  ZYDIS_MNEMONIC_FLDPI,   ZYDIS_MNEMONIC_FLDLG2,  ZYDIS_MNEMONIC_FLDLN2,
        ZYDIS_MNEMONIC_FLDZ,    ZYDIS_MNEMONIC_FCHS,    ZYDIS_MNEMONIC_FABS,    ZYDIS_MNEMONIC_FSQRT,
        ZYDIS_MNEMONIC_FRNDINT, ZYDIS_MNEMONIC_FSCALE,  ZYDIS_MNEMONIC_FXTRACT, ZYDIS_MNEMONIC_FPREM,
        ZYDIS_MNEMONIC_FPREM1,  ZYDIS_MNEMONIC_FXCH,    ZYDIS_MNEMONIC_FCMOVB,  ZYDIS_MNEMONIC_FCMOVE,
        ZYDIS_MNEMONIC_FCMOVBE, ZYDIS_MNEMONIC_FCMOVU,  ZYDIS_MNEMONIC_FCMOVNB, ZYDIS_MNEMONIC_FCMOVNE,
        ZYDIS_MNEMONIC_FCMOVNBE, ZYDIS_MNEMONIC_FCMOVNU, ZYDIS_MNEMONIC_FINCSTP, ZYDIS_MNEMONIC_FDECSTP,
        ZYDIS_MNEMONIC_FFREE,   ZYDIS_MNEMONIC_FFREEP,  ZYDIS_MNEMONIC_FNOP,    ZYDIS_MNEMONIC_F2XM1,
        ZYDIS_MNEMONIC_FYL2X,   ZYDIS_MNEMONIC_FYL2XP1, ZYDIS_MNEMONIC_FPTAN,   ZYDIS_MNEMONIC_FPATAN,
        ZYDIS_MNEMONIC_FSIN,    ZYDIS_MNEMONIC_FCOS,    ZYDIS_MNEMONIC_FSINCOS,
    };
    for (ZydisMnemonic m : kNative) t.set(m, exec_x87);
    t.set(ZYDIS_MNEMONIC_FNSTENV, exec_fnstenv);
    t.set(ZYDIS_MNEMONIC_FLDENV, exec_fldenv);
    t.set(ZYDIS_MNEMONIC_FNSAVE, exec_fnsave);
    t.set(ZYDIS_MNEMONIC_FRSTOR, exec_frstor);
    t.set(ZYDIS_MNEMONIC_FENI8087_NOP, exec_x87_legacy_nop);
    t.set(ZYDIS_MNEMONIC_FDISI8087_NOP, exec_x87_legacy_nop);
    t.set(ZYDIS_MNEMONIC_FSETPM287_NOP, exec_x87_legacy_nop);
}

}  // namespace popek::hv::emu
