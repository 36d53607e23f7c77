#include "migration/compress/page_cache.hpp"

#include <cstring>

namespace popek::migration::compress {

const uint8_t* PageCache::find(uint64_t gpn) const {
    auto it = index_.find(gpn);
    return it == index_.end() ? nullptr : slots_[it->second].bytes->data();
}

void PageCache::unlink(uint32_t s) {
    Slot& slot = slots_[s];
    if (slot.older != kNone) slots_[slot.older].newer = slot.newer; else oldest_ = slot.newer;
    if (slot.newer != kNone) slots_[slot.newer].older = slot.older; else newest_ = slot.older;
    slot.older = slot.newer = kNone;
}

void PageCache::push_newest(uint32_t s) {
    slots_[s].older = newest_;
    slots_[s].newer = kNone;
    if (newest_ != kNone) slots_[newest_].newer = s; else oldest_ = s;
    newest_ = s;
}

void PageCache::insert(uint64_t gpn, ConstPage page) {
    if (capacity_ == 0) return;
    uint32_t s;
    if (auto it = index_.find(gpn); it != index_.end()) {
        s = it->second;
        unlink(s);
    } else if (slots_.size() < capacity_) {
        s = static_cast<uint32_t>(slots_.size());
        slots_.push_back(Slot{gpn, kNone, kNone, std::make_unique<std::array<uint8_t, kPageSize>>()});
        index_.emplace(gpn, s);
    } else {
        s = oldest_;
        unlink(s);
        index_.erase(slots_[s].gpn);
        ++evictions_;
        slots_[s].gpn = gpn;
        index_.emplace(gpn, s);
    }
    std::memmove(slots_[s].bytes->data(), page.data(), kPageSize);  // page may be this slot
    push_newest(s);
}

void PageCache::clear() {
    slots_.clear();
    index_.clear();
    oldest_ = newest_ = kNone;
}

std::vector<uint64_t> PageCache::page_numbers() const {
    std::vector<uint64_t> out;
    out.reserve(index_.size());
    for (uint32_t s = oldest_; s != kNone; s = slots_[s].newer) out.push_back(slots_[s].gpn);
    return out;
}

}  // namespace popek::migration::compress
