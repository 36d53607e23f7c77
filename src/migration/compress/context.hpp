// What a thread encoding or decoding page records keeps between pages: the
// options, the XBZRLE cache, the zstd/lz4 contexts (made once, reused), a
// scratch page and counters. Not thread-safe: one per thread or stream.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "migration/compress/codec.hpp"
#include "migration/compress/page_cache.hpp"

struct ZSTD_CCtx_s;
struct ZSTD_DCtx_s;

namespace popek::migration::compress {

struct CodecOptions {
    // XBZRLE cache size in pages (sender and receiver must agree); 0 = none.
    // 16384 pages = 64 MiB, QEMU's default.
    size_t cache_pages = 16384;
    // Independent stripes of the cache (page_cache.hpp): both ends must agree;
    // migration uses kMigrationStripes so that up to that many sender
    // threads each own a part of it.
    size_t cache_stripes = kMigrationStripes;
    // The sender marks every record kRecordCache and caches the page. Turn it
    // off for a first full pass (nothing there is re-sent soon) and on for
    // the dirty rounds; the receiver just follows the flag.
    bool cache_sent_pages = true;
    int zstd_level = 1;   // negative = faster
    int lz4_acceleration = 1;
    // Auto: use zstd where it would use lz4 (slow links: ratio over speed).
    bool auto_prefers_ratio = false;
    // Auto: only zero and XBZRLE records, else raw — the records go into a
    // compressed frame (migration/pages_frame.hpp) that does the rest.
    bool auto_skips_compressors = false;
    // Records get kRecordUnchecked and no check (codec.hpp: only for
    // records sent inside compressed frames).
    bool unchecked_records = false;
};

// Per codec actually used: pages and bytes (records including headers).
struct CodecStats {
    std::array<uint64_t, kWireCodecs> pages{};
    std::array<uint64_t, kWireCodecs> bytes{};
    [[nodiscard]] uint64_t total_pages() const;
    [[nodiscard]] uint64_t total_bytes() const;
    // encoded bytes / page bytes (1.0 = no gain).
    [[nodiscard]] double ratio() const;
};

class CodecContext {
public:
    explicit CodecContext(CodecOptions options = {});
    ~CodecContext();
    CodecContext(const CodecContext&) = delete;
    CodecContext& operator=(const CodecContext&) = delete;
    CodecContext(CodecContext&&) noexcept;
    CodecContext& operator=(CodecContext&&) noexcept;

    [[nodiscard]] const CodecOptions& options() const { return options_; }
    void set_cache_sent_pages(bool on) { options_.cache_sent_pages = on; }
    PageCache& cache() { return cache_; }
    [[nodiscard]] const PageCache& cache() const { return cache_; }
    CodecStats& stats() { return stats_; }
    [[nodiscard]] const CodecStats& stats() const { return stats_; }

    // Library contexts, made on first use (nullptr if allocation failed).
    ZSTD_CCtx_s* zstd_cctx();
    ZSTD_DCtx_s* zstd_dctx();
    void* lz4_state();  // LZ4_sizeofState() bytes, 8-aligned
    // Room for one candidate payload (Auto keeps the best of two).
    std::array<uint8_t, kPageSize>& scratch() { return scratch_; }

private:
    struct ZstdFree {
        void operator()(ZSTD_CCtx_s* c) const;
        void operator()(ZSTD_DCtx_s* d) const;
    };
    CodecOptions options_;
    PageCache cache_;
    CodecStats stats_;
    std::unique_ptr<ZSTD_CCtx_s, ZstdFree> zcctx_;
    std::unique_ptr<ZSTD_DCtx_s, ZstdFree> zdctx_;
    std::vector<uint64_t> lz4_state_;
    std::array<uint8_t, kPageSize> scratch_{};
};

}  // namespace popek::migration::compress
