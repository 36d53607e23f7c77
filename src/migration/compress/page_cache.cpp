#include "migration/compress/page_cache.hpp"

#include <cstring>

namespace popek::migration::compress {

PageCache::PageCache(size_t capacity_pages, size_t stripes)
    : capacity_(capacity_pages < kNone ? capacity_pages : kNone - 1), stripes_(stripes == 0 ? 1 : stripes) {
    const size_t n = stripes_.size();
    for (size_t i = 0; i < n; ++i) stripes_[i].capacity = capacity_ / n + (i < capacity_ % n ? 1 : 0);
}

const uint8_t* PageCache::find(uint64_t gpn) const {
    auto it = index_.find(gpn);
    return it == index_.end() ? nullptr : slots_[it->second].bytes->data();
}

void PageCache::unlink(Stripe& st, uint32_t s) {
    Slot& slot = slots_[s];
    if (slot.older != kNone) slots_[slot.older].newer = slot.newer; else st.oldest = slot.newer;
    if (slot.newer != kNone) slots_[slot.newer].older = slot.older; else st.newest = slot.older;
    slot.older = slot.newer = kNone;
}

void PageCache::push_newest(Stripe& st, uint32_t s) {
    slots_[s].older = st.newest;
    slots_[s].newer = kNone;
    if (st.newest != kNone) slots_[st.newest].newer = s; else st.oldest = s;
    st.newest = s;
}

void PageCache::insert(uint64_t gpn, ConstPage page) {
    Stripe& st = stripes_[stripe_of(gpn, stripes_.size())];
    if (st.capacity == 0) return;
    uint32_t s;
    if (auto it = index_.find(gpn); it != index_.end()) {
        s = it->second;
        unlink(st, s);
    } else if (st.size < st.capacity) {
        s = static_cast<uint32_t>(slots_.size());
        slots_.push_back(Slot{gpn, kNone, kNone, std::make_unique<std::array<uint8_t, kPageSize>>()});
        index_.emplace(gpn, s);
        ++st.size;
    } else {
        s = st.oldest;
        unlink(st, s);
        index_.erase(slots_[s].gpn);
        ++evictions_;
        slots_[s].gpn = gpn;
        index_.emplace(gpn, s);
    }
    std::memmove(slots_[s].bytes->data(), page.data(), kPageSize);  // page may be this slot
    push_newest(st, s);
}

void PageCache::clear() {
    slots_.clear();
    index_.clear();
    for (Stripe& st : stripes_) st.size = 0, st.oldest = st.newest = kNone;
}

std::vector<uint64_t> PageCache::page_numbers() const {
    std::vector<uint64_t> out;
    out.reserve(index_.size());
    for (const Stripe& st : stripes_)
        for (uint32_t s = st.oldest; s != kNone; s = slots_[s].newer) out.push_back(slots_[s].gpn);
    return out;
}

}  // namespace popek::migration::compress
