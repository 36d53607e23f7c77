// Each exec_*.cpp registers the instructions it implements.
#pragma once

#include "hv/emu/decoder.hpp"
#include "hv/emu/engine.hpp"
#include "hv/emu/flags.hpp"

namespace popek::hv::emu {

void register_alu(HandlerTable&);      // exec_alu.cpp: ADD..CMP, INC/DEC/NEG/NOT, MUL/IMUL/DIV/IDIV
void register_move(HandlerTable&);     // exec_move.cpp: MOV family, XCHG/CMPXCHG/XADD, SETcc/CMOVcc, flag ops
void register_bits(HandlerTable&);     // exec_bits.cpp: shifts, rotates, SHLD/SHRD, BT*, BSF/BSR, counts
void register_flow(HandlerTable&);     // exec_flow.cpp: jumps, calls, returns, stack ops
void register_string(HandlerTable&);   // exec_string.cpp: string instructions, IN/OUT
void register_system(HandlerTable&);   // exec_system.cpp: CRs, DRs, MSRs, CPUID, TSC, HLT, CLI/STI
void register_segment(HandlerTable&);  // segments.cpp: descriptor tables, segment loads, SYSCALL/SYSRET, IRET, INT
void register_interrupts(HandlerTable&);  // interrupts.cpp: INT n, IRET, SYSCALL/SYSRET, SWAPGS, far RET
void register_sse(HandlerTable&);      // exec_sse.cpp: SSE/SSE2 moves and integer ops, FXSAVE, x87 control
void register_x87(HandlerTable&);      // exec_x87.cpp: x87 arithmetic, loads/stores, FNSTENV/FLDENV/FNSAVE/FRSTOR

// String MOVSD/CMPSD (the SSE2 scalar instructions share their mnemonics).
Flow exec_string_movsd(Engine& e, const Insn& i);
Flow exec_string_cmpsd(Engine& e, const Insn& i);

// MOV to/from control and debug registers (Zydis calls them MOV too).
Flow exec_mov_cr(Engine& e, const Insn& i);
Flow exec_mov_dr(Engine& e, const Insn& i);

// Far RET, JMP and CALL (Zydis gives them the near mnemonics, flagged Far).
Flow exec_far_return(Engine& e, const Insn& i);
Flow exec_far_transfer(Engine& e, const Insn& i);

// Segment-register load with the protected-mode descriptor checks (segments.cpp).
bool load_segment(Engine& e, uint8_t sreg, uint16_t selector);

// The engine's CPUID and MSRs (cpuid_msr.cpp).
void cpuid(const CpuState& s, uint32_t leaf, uint32_t subleaf, uint32_t out[4]);
bool read_msr(Engine& e, uint32_t index, uint64_t& value);   // false: #GP
bool write_msr(Engine& e, uint32_t index, uint64_t value);   // false: #GP

}  // namespace popek::hv::emu
