// Zydis-based decoding of guest code into pre-decoded Insns, and the table
// that binds each mnemonic to its handler.
#pragma once

#include <Zydis/Zydis.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "hv/emu/insn.hpp"

namespace popek::hv::emu {

struct HandlerInfo {
    Handler exec = nullptr;
    bool ends_block = false;  // control flow, or changes what the next bytes decode to
};

class HandlerTable {
public:
    HandlerTable() : table_(ZYDIS_MNEMONIC_MAX_VALUE + 1) {}
    void set(ZydisMnemonic m, Handler h, bool ends_block = false) {
        table_[static_cast<size_t>(m)] = HandlerInfo{h, ends_block};
    }
    [[nodiscard]] const HandlerInfo& get(ZydisMnemonic m) const { return table_[static_cast<size_t>(m)]; }

private:
    std::vector<HandlerInfo> table_;
};

// Fills the table with every instruction the engine implements (dispatch.cpp).
void register_handlers(HandlerTable&);

enum class DecodeStatus : uint8_t { Ok, Invalid, NeedMore };

class Decoder {
public:
    Decoder();
    // Decodes one instruction from `bytes` (at most `avail` valid). Invalid
    // encodings and unimplemented instructions decode to #UD handlers.
    DecodeStatus decode(const uint8_t* bytes, size_t avail, CodeMode mode, Insn& out) const;
    // The handler that raises #UD (for bytes that do not decode).
    [[nodiscard]] static Handler undefined_handler();

private:
    std::array<ZydisDecoder, 4> zydis_{};  // indexed by CodeMode
    HandlerTable handlers_;
};

}  // namespace popek::hv::emu
