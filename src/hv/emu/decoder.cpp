#include "hv/emu/decoder.hpp"

#include "hv/emu/cpu.hpp"
#include "hv/emu/engine.hpp"

namespace popek::hv::emu {

namespace {

Flow exec_undefined(Engine& e, const Insn&) { return e.raise(kVecUD); }

// An instruction Zydis knows but the engine does not implement: #UD too, and
// the engine remembers its mnemonic so reports can say what was missing.
Flow exec_unimplemented(Engine& e, const Insn& i) {
    e.note_unimplemented(i.mnemonic);
    return e.raise(kVecUD);
}

uint8_t seg_number(ZydisRegister r) {
    if (r >= ZYDIS_REGISTER_ES && r <= ZYDIS_REGISTER_GS) {
        return static_cast<uint8_t>(r - ZYDIS_REGISTER_ES);
    }
    return kDs;
}

uint8_t gpr_number(ZydisRegister r) {
    if (r >= ZYDIS_REGISTER_RAX && r <= ZYDIS_REGISTER_R15) return static_cast<uint8_t>(r - ZYDIS_REGISTER_RAX);
    if (r >= ZYDIS_REGISTER_EAX && r <= ZYDIS_REGISTER_R15D) return static_cast<uint8_t>(r - ZYDIS_REGISTER_EAX);
    if (r >= ZYDIS_REGISTER_AX && r <= ZYDIS_REGISTER_R15W) return static_cast<uint8_t>(r - ZYDIS_REGISTER_AX);
    return kNoReg;
}

// Converts one Zydis operand; false if the engine cannot represent it.
bool convert_operand(const ZydisDecodedOperand& z, Operand& o) {
    o.size = static_cast<uint8_t>((z.size + 7) / 8);
    switch (z.type) {
    case ZYDIS_OPERAND_TYPE_REGISTER: {
        const ZydisRegister r = z.reg.value;
        if (r >= ZYDIS_REGISTER_AL && r <= ZYDIS_REGISTER_R15B) {
            o.kind = OpKind::Gpr;
            const int n = r - ZYDIS_REGISTER_AL;
            if (n < 4) {
                o.reg = static_cast<uint8_t>(n);
            } else if (n < 8) {
                o.reg = static_cast<uint8_t>(n - 4);
                o.high8 = true;
            } else {
                o.reg = static_cast<uint8_t>(n - 4);
            }
            return true;
        }
        if (uint8_t g = gpr_number(r); g != kNoReg) {
            o.kind = OpKind::Gpr;
            o.reg = g;
            return true;
        }
        if (r >= ZYDIS_REGISTER_ES && r <= ZYDIS_REGISTER_GS) {
            o.kind = OpKind::Sreg;
            o.reg = seg_number(r);
            return true;
        }
        if (r >= ZYDIS_REGISTER_CR0 && r <= ZYDIS_REGISTER_CR15) {
            o.kind = OpKind::Cr;
            o.reg = static_cast<uint8_t>(r - ZYDIS_REGISTER_CR0);
            return true;
        }
        if (r >= ZYDIS_REGISTER_DR0 && r <= ZYDIS_REGISTER_DR15) {
            o.kind = OpKind::Dr;
            o.reg = static_cast<uint8_t>(r - ZYDIS_REGISTER_DR0);
            return true;
        }
        if (r >= ZYDIS_REGISTER_XMM0 && r <= ZYDIS_REGISTER_XMM15) {
            o.kind = OpKind::Xmm;
            o.reg = static_cast<uint8_t>(r - ZYDIS_REGISTER_XMM0);
            return true;
        }
        if (r >= ZYDIS_REGISTER_MM0 && r <= ZYDIS_REGISTER_MM7) {
            o.kind = OpKind::Mmx;
            o.reg = static_cast<uint8_t>(r - ZYDIS_REGISTER_MM0);
            return true;
        }
        o.kind = OpKind::Other;
        return true;
    }
    case ZYDIS_OPERAND_TYPE_MEMORY: {
        o.kind = OpKind::Mem;
        o.seg = seg_number(z.mem.segment);
        if (z.mem.base == ZYDIS_REGISTER_RIP || z.mem.base == ZYDIS_REGISTER_EIP) {
            o.reg = kRipBase;
        } else if (z.mem.base != ZYDIS_REGISTER_NONE) {
            o.reg = gpr_number(z.mem.base);
            if (o.reg == kNoReg) return false;
        }
        if (z.mem.index != ZYDIS_REGISTER_NONE) {
            o.index = gpr_number(z.mem.index);
            if (o.index == kNoReg) return false;  // VSIB
        }
        o.scale = z.mem.scale == 8 ? 3 : z.mem.scale == 4 ? 2 : z.mem.scale == 2 ? 1 : 0;
        o.value = z.mem.disp.has_displacement ? z.mem.disp.value : 0;
        return true;
    }
    case ZYDIS_OPERAND_TYPE_IMMEDIATE:
        o.kind = z.imm.is_relative ? OpKind::Rel : OpKind::Imm;
        o.value = z.imm.is_signed ? z.imm.value.s : static_cast<int64_t>(z.imm.value.u);
        return true;
    case ZYDIS_OPERAND_TYPE_POINTER:  // far JMP/CALL ptr16:16/32 (not valid in 64-bit mode)
        o.kind = OpKind::Ptr;
        o.value = static_cast<int64_t>((static_cast<uint64_t>(z.ptr.segment) << 32) | z.ptr.offset);
        return true;
    default:
        return false;
    }
}

}  // namespace

Handler Decoder::undefined_handler() { return exec_undefined; }

Decoder::Decoder() {
    ZydisDecoderInit(&zydis_[0], ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
    ZydisDecoderInit(&zydis_[1], ZYDIS_MACHINE_MODE_LEGACY_32, ZYDIS_STACK_WIDTH_32);
    ZydisDecoderInit(&zydis_[2], ZYDIS_MACHINE_MODE_LEGACY_16, ZYDIS_STACK_WIDTH_16);
    ZydisDecoderInit(&zydis_[3], ZYDIS_MACHINE_MODE_REAL_16, ZYDIS_STACK_WIDTH_16);
    register_handlers(handlers_);
}

DecodeStatus Decoder::decode(const uint8_t* bytes, size_t avail, CodeMode mode, Insn& out) const {
    ZydisDecodedInstruction zi;
    ZydisDecodedOperand zo[ZYDIS_MAX_OPERAND_COUNT];
    const ZyanStatus st = ZydisDecoderDecodeFull(&zydis_[static_cast<size_t>(mode)], bytes, avail, &zi, zo);
    out = Insn{};
    if (st == ZYDIS_STATUS_NO_MORE_DATA && avail < ZYDIS_MAX_INSTRUCTION_LENGTH) return DecodeStatus::NeedMore;
    if (!ZYAN_SUCCESS(st)) {
        out.exec = exec_undefined;
        out.length = 1;
        out.flags = insn_flags::EndsBlock;
        return DecodeStatus::Invalid;
    }
    out.mnemonic = static_cast<uint16_t>(zi.mnemonic);
    out.length = zi.length;
    out.opsize = static_cast<uint8_t>(zi.operand_width / 8);
    out.addrsize = static_cast<uint8_t>(zi.address_width / 8);
    out.opcode = zi.opcode;
    out.cond = static_cast<uint8_t>(zi.opcode & 0xf);
    // x87 instructions (D8..DF) keep their ModRM byte there instead: it selects the form.
    if (zi.opcode_map == ZYDIS_OPCODE_MAP_DEFAULT && zi.opcode >= 0xd8 && zi.opcode <= 0xdf &&
        (zi.attributes & ZYDIS_ATTRIB_HAS_MODRM) != 0) {
        out.cond = static_cast<uint8_t>((zi.raw.modrm.mod << 6) | (zi.raw.modrm.reg << 3) | zi.raw.modrm.rm);
    }
    const ZydisInstructionAttributes a = zi.attributes;
    if (a & ZYDIS_ATTRIB_HAS_REP || a & ZYDIS_ATTRIB_HAS_REPE) out.flags |= insn_flags::Rep;
    if (a & ZYDIS_ATTRIB_HAS_REPNE) out.flags |= insn_flags::Repne;
    if (a & ZYDIS_ATTRIB_HAS_LOCK) out.flags |= insn_flags::Lock;
    if (zi.meta.branch_type == ZYDIS_BRANCH_TYPE_FAR) out.flags |= insn_flags::Far;
    out.seg = kDs;
    static constexpr std::array<std::pair<ZydisInstructionAttributes, uint8_t>, 6> kSegAttr{{
        {ZYDIS_ATTRIB_HAS_SEGMENT_ES, kEs}, {ZYDIS_ATTRIB_HAS_SEGMENT_CS, kCs},
        {ZYDIS_ATTRIB_HAS_SEGMENT_SS, kSs}, {ZYDIS_ATTRIB_HAS_SEGMENT_DS, kDs},
        {ZYDIS_ATTRIB_HAS_SEGMENT_FS, kFs}, {ZYDIS_ATTRIB_HAS_SEGMENT_GS, kGs}}};
    for (const auto& [attr, seg] : kSegAttr) {
        if (a & attr) {
            out.seg = seg;
            out.flags |= insn_flags::SegOverride;
        }
    }

    const HandlerInfo& h = handlers_.get(zi.mnemonic);
    out.exec = h.exec != nullptr ? h.exec : exec_unimplemented;
    if (h.ends_block || h.exec == nullptr) out.flags |= insn_flags::EndsBlock;

    uint8_t n = 0;
    for (uint8_t k = 0; k < zi.operand_count_visible; ++k) {
        if (n == out.op.size() || !convert_operand(zo[k], out.op[n])) {
            out.exec = exec_unimplemented;
            out.flags |= insn_flags::EndsBlock;
            return DecodeStatus::Ok;
        }
        // Control, debug and segment registers change how the following bytes run.
        const OpKind kind = out.op[n].kind;
        if (kind == OpKind::Cr || kind == OpKind::Dr || kind == OpKind::Sreg) out.flags |= insn_flags::EndsBlock;
        ++n;
    }
    out.nops = n;
    return DecodeStatus::Ok;
}

}  // namespace popek::hv::emu
