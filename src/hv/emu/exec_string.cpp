// String instructions with REP/REPE/REPNE, and port I/O (IN, OUT, INS,
// OUTS), which returns to the caller as an I/O exit.
#include <cstring>

#include "hv/emu/handlers.hpp"

namespace popek::hv::emu {

namespace {

using namespace alu;

// Iterations a REP instruction runs per execution before it yields (it
// re-executes itself), so interrupts and the run budget still get a turn.
constexpr unsigned kRepChunk = 4096;

enum class Str { Movs, Stos, Lods, Cmps, Scas };

unsigned element_size(const Insn& i) { return (i.opcode & 1) != 0 ? i.opsize : 1; }

// Port I/O is at most 32 bits wide: REX.W is ignored.
unsigned io_size(unsigned size) { return size > 4 ? 4 : size; }

template <Str k>
Flow string_op(Engine& e, const Insn& i) {
    const unsigned elem = element_size(i);
    const unsigned as = i.addrsize;
    const uint64_t am = mask(as);
    const bool rep = (i.flags & (insn_flags::Rep | insn_flags::Repne)) != 0;
    const uint64_t step = (e.s.rflags & rflags::DF) != 0 ? -static_cast<uint64_t>(elem) : elem;
    auto& g = e.s.gpr;
    if (rep && (g[kRcx] & am) == 0) return Flow::Next;
    for (unsigned n = 0;; ++n) {
        uint64_t a = 0, b = 0, fl = 0;
        switch (k) {
        case Str::Movs:
            if (!e.read_mem(i.seg, g[kRsi] & am, elem, a) || !e.write_mem(kEs, g[kRdi] & am, elem, a)) {
                return Flow::Fault;
            }
            e.set_gpr(kRsi, as, g[kRsi] + step);
            e.set_gpr(kRdi, as, g[kRdi] + step);
            break;
        case Str::Stos:
            if (!e.write_mem(kEs, g[kRdi] & am, elem, g[kRax] & mask(elem))) return Flow::Fault;
            e.set_gpr(kRdi, as, g[kRdi] + step);
            break;
        case Str::Lods:
            if (!e.read_mem(i.seg, g[kRsi] & am, elem, a)) return Flow::Fault;
            e.set_gpr(kRax, elem, a);
            e.set_gpr(kRsi, as, g[kRsi] + step);
            break;
        case Str::Cmps:
            if (!e.read_mem(i.seg, g[kRsi] & am, elem, a) || !e.read_mem(kEs, g[kRdi] & am, elem, b)) {
                return Flow::Fault;
            }
            sub(a, b, 0, elem, fl);
            set_arith(e.s, fl);
            e.set_gpr(kRsi, as, g[kRsi] + step);
            e.set_gpr(kRdi, as, g[kRdi] + step);
            break;
        case Str::Scas:
            if (!e.read_mem(kEs, g[kRdi] & am, elem, b)) return Flow::Fault;
            sub(g[kRax], b, 0, elem, fl);
            set_arith(e.s, fl);
            e.set_gpr(kRdi, as, g[kRdi] + step);
            break;
        }
        if (!rep) return Flow::Next;
        const uint64_t rcx = (g[kRcx] - 1) & am;
        e.set_gpr(kRcx, as, rcx);
        if (rcx == 0) return Flow::Next;
        if (k == Str::Cmps || k == Str::Scas) {
            const bool zf = (e.s.rflags & rflags::ZF) != 0;
            if ((i.flags & insn_flags::Rep) != 0 && !zf) return Flow::Next;
            if ((i.flags & insn_flags::Repne) != 0 && zf) return Flow::Next;
        }
        if (n + 1 == kRepChunk || e.mmio_writes_queued()) {
            e.next_rip = e.s.rip;  // continue later (after the caller saw the MMIO write)
            return Flow::Next;
        }
    }
}

uint16_t io_port(Engine& e, const Operand& o) {
    return static_cast<uint16_t>(o.kind == OpKind::Imm ? static_cast<uint64_t>(o.value) : e.s.gpr[kRdx]);
}

Flow exec_in(Engine& e, const Insn& i) {
    const unsigned size = io_size(i.op[0].size);
    const uint16_t port = io_port(e, i.op[1]);
    if (!e.io_allowed(port, size)) return Flow::Fault;
    e.pending_in = Engine::PendingIn{true, false, false, static_cast<uint8_t>(size), i.addrsize, e.s.rip, e.next_rip};
    e.set_exit(RunExit{ExitKind::Io, port, static_cast<uint8_t>(size), false, e.io_data(), 0});
    return Flow::Exit;
}

Flow exec_out(Engine& e, const Insn& i) {
    const unsigned size = io_size(i.op[1].size);
    const uint16_t port = io_port(e, i.op[0]);
    if (!e.io_allowed(port, size)) return Flow::Fault;
    const uint64_t v = e.s.gpr[kRax];
    std::memcpy(e.io_data(), &v, 8);
    e.set_exit(RunExit{ExitKind::Io, port, static_cast<uint8_t>(size), true, e.io_data(), 0});
    return Flow::Exit;
}

Flow exec_ins(Engine& e, const Insn& i) {
    const unsigned elem = io_size(element_size(i));
    const uint64_t am = mask(i.addrsize);
    const bool rep = (i.flags & (insn_flags::Rep | insn_flags::Repne)) != 0;
    const auto port = static_cast<uint16_t>(e.s.gpr[kRdx]);
    if (!e.io_allowed(port, elem)) return Flow::Fault;
    if (rep && (e.s.gpr[kRcx] & am) == 0) return Flow::Next;
    uint64_t la = 0;
    if (!e.linear(kEs, e.s.gpr[kRdi] & am, la) || !e.probe_write(la, elem, e.user_mode())) return Flow::Fault;
    e.pending_in = Engine::PendingIn{true, true, rep, static_cast<uint8_t>(elem), i.addrsize, e.s.rip, e.next_rip};
    e.next_rip = e.s.rip;  // the completion decides where to continue
    e.set_exit(RunExit{ExitKind::Io, port, static_cast<uint8_t>(elem), false, e.io_data(), 0});
    return Flow::Exit;
}

Flow exec_outs(Engine& e, const Insn& i) {
    const unsigned elem = io_size(element_size(i));
    const unsigned as = i.addrsize;
    const uint64_t am = mask(as);
    const bool rep = (i.flags & (insn_flags::Rep | insn_flags::Repne)) != 0;
    const auto port = static_cast<uint16_t>(e.s.gpr[kRdx]);
    if (!e.io_allowed(port, elem)) return Flow::Fault;
    if (rep && (e.s.gpr[kRcx] & am) == 0) return Flow::Next;
    uint64_t v = 0;
    if (!e.read_mem(i.seg, e.s.gpr[kRsi] & am, elem, v)) return Flow::Fault;
    const uint64_t step = (e.s.rflags & rflags::DF) != 0 ? -static_cast<uint64_t>(elem) : elem;
    e.set_gpr(kRsi, as, e.s.gpr[kRsi] + step);
    if (rep) {
        const uint64_t rcx = (e.s.gpr[kRcx] - 1) & am;
        e.set_gpr(kRcx, as, rcx);
        if (rcx != 0) e.next_rip = e.s.rip;
    }
    std::memcpy(e.io_data(), &v, 8);
    e.set_exit(RunExit{ExitKind::Io, port, static_cast<uint8_t>(elem), true, e.io_data(), 0});
    return Flow::Exit;
}

}  // namespace

// MOVSD and CMPSD share their mnemonic with SSE2 scalar-double instructions.
Flow exec_string_movsd(Engine& e, const Insn& i) { return string_op<Str::Movs>(e, i); }
Flow exec_string_cmpsd(Engine& e, const Insn& i) { return string_op<Str::Cmps>(e, i); }

void register_string(HandlerTable& t) {
    for (ZydisMnemonic m : {ZYDIS_MNEMONIC_MOVSB, ZYDIS_MNEMONIC_MOVSW, ZYDIS_MNEMONIC_MOVSQ}) t.set(m, string_op<Str::Movs>);
    for (ZydisMnemonic m : {ZYDIS_MNEMONIC_STOSB, ZYDIS_MNEMONIC_STOSW, ZYDIS_MNEMONIC_STOSD, ZYDIS_MNEMONIC_STOSQ}) {
        t.set(m, string_op<Str::Stos>);
    }
    for (ZydisMnemonic m : {ZYDIS_MNEMONIC_LODSB, ZYDIS_MNEMONIC_LODSW, ZYDIS_MNEMONIC_LODSD, ZYDIS_MNEMONIC_LODSQ}) {
        t.set(m, string_op<Str::Lods>);
    }
    for (ZydisMnemonic m : {ZYDIS_MNEMONIC_CMPSB, ZYDIS_MNEMONIC_CMPSW, ZYDIS_MNEMONIC_CMPSQ}) t.set(m, string_op<Str::Cmps>);
    for (ZydisMnemonic m : {ZYDIS_MNEMONIC_SCASB, ZYDIS_MNEMONIC_SCASW, ZYDIS_MNEMONIC_SCASD, ZYDIS_MNEMONIC_SCASQ}) {
        t.set(m, string_op<Str::Scas>);
    }
    t.set(ZYDIS_MNEMONIC_IN, exec_in, true);
    t.set(ZYDIS_MNEMONIC_OUT, exec_out, true);
    for (ZydisMnemonic m : {ZYDIS_MNEMONIC_INSB, ZYDIS_MNEMONIC_INSW, ZYDIS_MNEMONIC_INSD}) t.set(m, exec_ins, true);
    for (ZydisMnemonic m : {ZYDIS_MNEMONIC_OUTSB, ZYDIS_MNEMONIC_OUTSW, ZYDIS_MNEMONIC_OUTSD}) t.set(m, exec_outs, true);
}

}  // namespace popek::hv::emu
