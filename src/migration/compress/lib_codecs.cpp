// zstd and lz4 from Debian's libraries, one context per CodecContext.
// A zstd payload is one frame that declares a 4096-byte content size; an lz4
// payload is one raw LZ4 block that decompresses to exactly 4096 bytes.
#include <lz4.h>
#include <zstd.h>

#include <algorithm>
#include <string>

#include <fmt/core.h>

#include "migration/compress/context.hpp"
#include "migration/compress/page_codecs.hpp"

namespace popek::migration::compress {

size_t encode_zstd(ConstPage page, CodecContext& ctx, std::span<uint8_t> dst) {
    ZSTD_CCtx* c = ctx.zstd_cctx();
    if (c == nullptr) return kNoGain;
    const size_t n = ZSTD_compress2(c, dst.data(), dst.size(), page.data(), kPageSize);
    // Too small a destination is an error too; either way the page goes raw.
    return ZSTD_isError(n) ? kNoGain : n;
}

base::Result<void> decode_zstd(std::span<const uint8_t> payload, CodecContext& ctx, MutPage out) {
    const unsigned long long content = ZSTD_getFrameContentSize(payload.data(), payload.size());
    if (content != kPageSize) {
        return base::Error{content == ZSTD_CONTENTSIZE_ERROR ? std::string{"zstd payload is not a zstd frame"}
                                                             : std::string{"zstd frame does not declare a 4096-byte page"}};
    }
    const size_t frame = ZSTD_findFrameCompressedSize(payload.data(), payload.size());
    if (ZSTD_isError(frame)) return base::Error{fmt::format("zstd frame is damaged: {}", ZSTD_getErrorName(frame))};
    if (frame != payload.size()) {
        return base::Error{fmt::format("zstd frame is {} bytes but the payload is {}", frame, payload.size())};
    }
    ZSTD_DCtx* d = ctx.zstd_dctx();
    if (d == nullptr) return base::Error{"zstd: cannot allocate a decompression context"};
    const size_t n = ZSTD_decompressDCtx(d, out.data(), kPageSize, payload.data(), payload.size());
    if (ZSTD_isError(n)) return base::Error{fmt::format("zstd: {}", ZSTD_getErrorName(n))};
    if (n != kPageSize) return base::Error{fmt::format("zstd frame decoded to {} bytes, not a page", n)};
    return base::ok();
}

size_t encode_lz4(ConstPage page, CodecContext& ctx, std::span<uint8_t> dst) {
    const int cap = static_cast<int>(std::min(dst.size(), size_t{kPageSize}));
    const int n = LZ4_compress_fast_extState(ctx.lz4_state(), reinterpret_cast<const char*>(page.data()),
                                             reinterpret_cast<char*>(dst.data()), static_cast<int>(kPageSize),
                                             cap, ctx.options().lz4_acceleration);
    return n <= 0 ? kNoGain : static_cast<size_t>(n);
}

base::Result<void> decode_lz4(std::span<const uint8_t> payload, MutPage out) {
    const int n = LZ4_decompress_safe(reinterpret_cast<const char*>(payload.data()),
                                      reinterpret_cast<char*>(out.data()), static_cast<int>(payload.size()),
                                      static_cast<int>(kPageSize));
    if (n < 0) return base::Error{"lz4 block is malformed"};
    if (static_cast<size_t>(n) != kPageSize) {
        return base::Error{fmt::format("lz4 block decoded to {} bytes, not a page", n)};
    }
    return base::ok();
}

}  // namespace popek::migration::compress
