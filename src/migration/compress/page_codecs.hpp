// The payload codecs behind encode_page/decode_page (internal to compress/).
// Encoders write at most dst.size() bytes and return the payload size, or
// kNoGain when the payload would not fit (the caller then sends the page
// another way). Decoders reconstruct exactly one page from exactly `payload`
// and refuse anything else.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "base/result.hpp"
#include "migration/compress/codec.hpp"

namespace popek::migration::compress {

class CodecContext;

constexpr size_t kNoGain = SIZE_MAX;

size_t encode_wkdm(ConstPage page, std::span<uint8_t> dst);
base::Result<void> decode_wkdm(std::span<const uint8_t> payload, MutPage out);
// WKdm's model over the page's first `words` words: how many are misses
// (the cheap estimate Auto uses to skip WKdm on text, code or random data).
size_t wkdm_sample_misses(ConstPage page, size_t words);

// `old` is the cached version of the page.
size_t encode_xbzrle(ConstPage page, ConstPage old, std::span<uint8_t> dst);
base::Result<void> decode_xbzrle(std::span<const uint8_t> payload, ConstPage old, MutPage out);

size_t encode_zstd(ConstPage page, CodecContext& ctx, std::span<uint8_t> dst);
base::Result<void> decode_zstd(std::span<const uint8_t> payload, CodecContext& ctx, MutPage out);

size_t encode_lz4(ConstPage page, CodecContext& ctx, std::span<uint8_t> dst);
base::Result<void> decode_lz4(std::span<const uint8_t> payload, MutPage out);

}  // namespace popek::migration::compress
