// Decoded basic blocks cached by guest-physical address (and code mode). A
// block never crosses a 4K page, so invalidating a written code page drops
// exactly the blocks decoded from it. A translator would hang its native code
// off the same Block.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "hv/emu/insn.hpp"

namespace popek::hv::emu {

class BlockCache {
public:
    [[nodiscard]] Block* find(uint64_t gpa, CodeMode mode) const {
        auto it = blocks_.find(key(gpa, mode));
        return it == blocks_.end() ? nullptr : it->second.get();
    }
    // Takes ownership; returns true if this is the first block in its page
    // (the caller then marks the page as holding code).
    bool insert(std::unique_ptr<Block> block);
    // Drops every block decoded from the page holding `gpa`; returns how many.
    size_t invalidate_page(uint64_t gpa);
    void clear();

    [[nodiscard]] size_t size() const { return blocks_.size(); }
    // Bumped whenever blocks are dropped, so the block being executed can
    // notice that it was invalidated under it (self-modifying code).
    [[nodiscard]] uint64_t generation() const { return generation_; }
    [[nodiscard]] uint64_t invalidations() const { return invalidations_; }

private:
    static uint64_t key(uint64_t gpa, CodeMode mode) {
        return gpa | (static_cast<uint64_t>(mode) << 60);
    }

    std::unordered_map<uint64_t, std::unique_ptr<Block>> blocks_;
    std::unordered_map<uint64_t, std::vector<uint64_t>> by_page_;  // page gpa -> block keys
    // Dropped blocks stay alive until clear() or the next run: the interpreter
    // may still be executing one of them.
    std::vector<std::unique_ptr<Block>> graveyard_;
    uint64_t generation_ = 0;
    uint64_t invalidations_ = 0;

public:
    // Frees blocks dropped earlier; call when no block is executing.
    void collect() { graveyard_.clear(); }
};

}  // namespace popek::hv::emu
