// Segment descriptors: reading them from the GDT/LDT and turning them into
// the hidden descriptor caches (hv::Segment).
#pragma once

#include <cstdint>

#include "hv/emu/engine.hpp"

namespace popek::hv::emu {

// Descriptor-type bits (the 4-bit type field of code/data descriptors).
namespace desc {
inline constexpr uint8_t Accessed = 1, Writable = 2, Readable = 2, Conforming = 4, Code = 8;
inline constexpr uint8_t TssAvailable = 9, TssBusy = 11, Ldt = 2, IntGate = 14, TrapGate = 15;
}  // namespace desc

Segment segment_from_descriptor(uint16_t selector, uint64_t d);
// A flat 4 GiB segment (what SYSCALL/SYSRET load).
Segment flat_segment(uint16_t selector, uint8_t type, uint8_t dpl, bool code64);

// Reads the 8-byte descriptor of `selector` (GDT or LDT); raises #GP(selector) if outside the table.
bool read_descriptor(Engine& e, uint16_t selector, uint64_t& d, uint64_t* addr = nullptr);
// Sets the accessed bit in the descriptor at linear address `addr` if it is clear.
bool mark_accessed(Engine& e, uint64_t addr, uint64_t d);

}  // namespace popek::hv::emu
