#include "hv/emu/block_cache.hpp"

#include "hv/emu/phys_memory.hpp"

namespace popek::hv::emu {

bool BlockCache::insert(std::unique_ptr<Block> block) {
    const uint64_t k = key(block->gpa, block->mode);
    const uint64_t page = block->gpa & kPageMask;
    auto& keys = by_page_[page];
    const bool first = keys.empty();
    keys.push_back(k);
    auto& slot = blocks_[k];
    if (slot) {
        graveyard_.push_back(std::move(slot));
        ++generation_;  // whoever remembered the old block must look again
    }
    slot = std::move(block);
    return first;
}

size_t BlockCache::invalidate_page(uint64_t gpa) {
    auto it = by_page_.find(gpa & kPageMask);
    if (it == by_page_.end()) return 0;
    size_t n = 0;
    for (uint64_t k : it->second) {
        auto b = blocks_.find(k);
        if (b == blocks_.end()) continue;
        graveyard_.push_back(std::move(b->second));
        blocks_.erase(b);
        ++n;
    }
    by_page_.erase(it);
    ++generation_;
    invalidations_ += n;
    return n;
}

void BlockCache::clear() {
    for (auto& [k, b] : blocks_) graveyard_.push_back(std::move(b));
    blocks_.clear();
    by_page_.clear();
    ++generation_;
}

}  // namespace popek::hv::emu
