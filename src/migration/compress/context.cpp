#include "migration/compress/context.hpp"

#include <lz4.h>
#include <zstd.h>

namespace popek::migration::compress {

uint64_t CodecStats::total_pages() const {
    uint64_t n = 0;
    for (uint64_t p : pages) n += p;
    return n;
}

uint64_t CodecStats::total_bytes() const {
    uint64_t n = 0;
    for (uint64_t b : bytes) n += b;
    return n;
}

double CodecStats::ratio() const {
    const uint64_t in = total_pages() * kPageSize;
    return in == 0 ? 1.0 : static_cast<double>(total_bytes()) / static_cast<double>(in);
}

void CodecContext::ZstdFree::operator()(ZSTD_CCtx_s* c) const { ZSTD_freeCCtx(c); }
void CodecContext::ZstdFree::operator()(ZSTD_DCtx_s* d) const { ZSTD_freeDCtx(d); }

CodecContext::CodecContext(CodecOptions options) : options_(options), cache_(options.cache_pages, options.cache_stripes) {}
CodecContext::~CodecContext() = default;
CodecContext::CodecContext(CodecContext&&) noexcept = default;
CodecContext& CodecContext::operator=(CodecContext&&) noexcept = default;

ZSTD_CCtx_s* CodecContext::zstd_cctx() {
    if (!zcctx_) {
        zcctx_.reset(ZSTD_createCCtx());
        if (!zcctx_) return nullptr;
        const int level = options_.zstd_level < ZSTD_minCLevel()   ? ZSTD_minCLevel()
                          : options_.zstd_level > ZSTD_maxCLevel() ? ZSTD_maxCLevel()
                                                                   : options_.zstd_level;
        ZSTD_CCtx_setParameter(zcctx_.get(), ZSTD_c_compressionLevel, level);
        ZSTD_CCtx_setParameter(zcctx_.get(), ZSTD_c_checksumFlag, 0);  // the record has its own check
        ZSTD_CCtx_setParameter(zcctx_.get(), ZSTD_c_contentSizeFlag, 1);
        ZSTD_CCtx_setParameter(zcctx_.get(), ZSTD_c_dictIDFlag, 0);
    }
    return zcctx_.get();
}

ZSTD_DCtx_s* CodecContext::zstd_dctx() {
    if (!zdctx_) {
        zdctx_.reset(ZSTD_createDCtx());
        if (!zdctx_) return nullptr;
        // A page's frame needs a 4 KiB window; refuse frames asking for more
        // rather than allocate what a hostile stream asks for.
        ZSTD_DCtx_setParameter(zdctx_.get(), ZSTD_d_windowLogMax, 13);
    }
    return zdctx_.get();
}

void* CodecContext::lz4_state() {
    if (lz4_state_.empty()) {
        lz4_state_.resize((static_cast<size_t>(LZ4_sizeofState()) + sizeof(uint64_t) - 1) / sizeof(uint64_t));
    }
    return lz4_state_.data();
}

}  // namespace popek::migration::compress
