// The XBZRLE cache: the last sent version of up to `capacity` guest pages,
// keyed by guest page number.
//
// Sender and receiver each keep one and must hold the same pages, so the
// rule is simple and only one operation changes the cache: insert(gpn, page)
// — called by the sender for every record it marks kRecordCache and by the
// receiver for every such record it decoded and checked. Lookups change
// nothing. Eviction is least-recently-inserted: inserting a page number that
// is already cached replaces its contents and makes it the newest; inserting
// a new one into a full cache first drops the oldest. Two caches of the same
// capacity that see the same inserts in the same order are therefore equal.
// (Both ends must agree on the capacity: migration exchanges it when it
// connects. One cache per stream; a guest page always goes on the same one.)
//
// Stripes, for several encoding threads: the cache can be split into
// `stripes` independent caches of capacity/stripes pages each (the first
// capacity%stripes get one more), page `gpn` living in stripe_of(gpn) =
// (gpn / 64) % stripes — the pages of one 64-bit dirty-bitmap word share a
// stripe. Eviction is least-recently-inserted within a stripe. A sender
// thread that owns a set of stripes touches nothing else, so two caches with
// equal capacity and stripes stay equal as long as the inserts of each
// stripe arrive in the same order: records of different stripes may
// interleave freely. Migration uses kMigrationStripes on both ends.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "migration/compress/codec.hpp"

namespace popek::migration::compress {

inline constexpr size_t kMigrationStripes = 8;

class PageCache {
public:
    explicit PageCache(size_t capacity_pages, size_t stripes = 1);

    [[nodiscard]] static size_t stripe_of(uint64_t gpn, size_t stripes) { return (gpn / 64) % stripes; }
    [[nodiscard]] size_t stripes() const { return stripes_.size(); }
    [[nodiscard]] size_t capacity() const { return capacity_; }
    [[nodiscard]] size_t size() const { return index_.size(); }
    [[nodiscard]] uint64_t evictions() const { return evictions_; }

    // The cached version of `gpn`, or nullptr.
    [[nodiscard]] const uint8_t* find(uint64_t gpn) const;
    // Caches `page` as the newest version of `gpn` (no-op at capacity 0).
    void insert(uint64_t gpn, ConstPage page);
    // Forgets every page (a new migration; both ends at once).
    void clear();
    // Oldest first, stripe after stripe: the order eviction follows (for
    // tests and debugging).
    [[nodiscard]] std::vector<uint64_t> page_numbers() const;

private:
    static constexpr uint32_t kNone = UINT32_MAX;
    struct Slot {
        uint64_t gpn = 0;
        uint32_t older = kNone;  // towards the oldest
        uint32_t newer = kNone;  // towards the newest
        std::unique_ptr<std::array<uint8_t, kPageSize>> bytes;
    };
    struct Stripe {
        size_t capacity = 0;
        size_t size = 0;
        uint32_t oldest = kNone;
        uint32_t newest = kNone;
    };
    void unlink(Stripe& st, uint32_t s);
    void push_newest(Stripe& st, uint32_t s);

    size_t capacity_;
    std::vector<Stripe> stripes_;
    std::vector<Slot> slots_;  // grows to capacity_, then slots are reused within their stripe
    std::unordered_map<uint64_t, uint32_t> index_;
    uint64_t evictions_ = 0;
};

}  // namespace popek::migration::compress
