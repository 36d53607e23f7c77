// One bit per 4 KiB guest page, settable from any thread, taken (read and
// cleared) by one reader: how popek tracks pages that host code writes into
// guest RAM (virtio devices, loaders), which the hypervisor's dirty log
// cannot see because they never go through the guest's page tables.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace popek::memory {

class DirtyBitmap {
public:
    DirtyBitmap() = default;
    explicit DirtyBitmap(uint64_t pages)
        : pages_(pages), words_(std::make_unique<std::atomic<uint64_t>[]>((pages + 63) / 64)) {}

    [[nodiscard]] uint64_t pages() const { return pages_; }
    [[nodiscard]] size_t words() const { return static_cast<size_t>((pages_ + 63) / 64); }

    // Marks pages [first, first + count); pages past the end are ignored.
    void mark(uint64_t first, uint64_t count) const {
        const uint64_t end = first + count < pages_ ? first + count : pages_;
        for (uint64_t p = first; p < end; ++p)
            words_[p / 64].fetch_or(1ull << (p % 64), std::memory_order_relaxed);
    }
    [[nodiscard]] bool test(uint64_t page) const {
        return page < pages_ && (words_[page / 64].load(std::memory_order_relaxed) >> (page % 64)) & 1;
    }
    // ORs every set bit into `out` (resized to words()) and clears it here:
    // clear-on-read, so a page marked after its word was taken shows up in
    // the next take().
    void take(std::vector<uint64_t>& out) const {
        out.resize(words(), 0);
        for (size_t i = 0; i < words(); ++i) out[i] |= words_[i].exchange(0, std::memory_order_acq_rel);
    }

private:
    uint64_t pages_ = 0;
    std::unique_ptr<std::atomic<uint64_t>[]> words_;
};

}  // namespace popek::memory
