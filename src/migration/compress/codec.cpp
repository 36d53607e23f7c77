// Records: header, dispatch to the payload codecs, the Auto policy.
#include "migration/compress/codec.hpp"

#include <xxhash.h>

#include <array>
#include <cstring>

#include <fmt/core.h>

#include "migration/compress/context.hpp"
#include "migration/compress/page_codecs.hpp"

namespace popek::migration::compress {

namespace {

constexpr std::array<std::string_view, kWireCodecs + 1> kNames = {"none", "zero", "wkdm",   "xbzrle",
                                                                   "zstd", "lz4",  "sparse", "auto"};

alignas(64) constexpr std::array<uint8_t, kPageSize> kZeroPage{};
constexpr ConstPage zero_page() { return ConstPage{kZeroPage.data(), kPageSize}; }

// The record check from the page's hash (page_hash) and the header's first
// four bytes: multiplying by an odd constant is a bijection on the low 32
// bits, so any change to those bytes changes the check.
uint32_t record_check(const uint8_t* header, uint64_t hash) {
    uint32_t h;
    std::memcpy(&h, header, 4);
    return static_cast<uint32_t>(hash ^ (uint64_t{h} * 0x9E3779B97F4A7C15ull));
}

// Fills the header in front of a payload of `size` bytes at rec + 8.
void write_header(uint8_t* rec, Codec codec, uint8_t flags, size_t size, uint64_t hash) {
    rec[0] = static_cast<uint8_t>(codec);
    rec[1] = flags;
    rec[2] = static_cast<uint8_t>(size);
    rec[3] = static_cast<uint8_t>(size >> 8);
    const uint32_t check = (flags & kRecordUnchecked) != 0 ? 0 : record_check(rec, hash);
    std::memcpy(rec + 4, &check, 4);
}

// The payload of `codec` (not None or Auto) into dst, or kNoGain.
size_t encode_payload(Codec codec, uint64_t gpn, ConstPage page, CodecContext& ctx, std::span<uint8_t> dst) {
    switch (codec) {
    case Codec::Zero: return is_zero_page(page) ? 0 : kNoGain;
    case Codec::Wkdm: return encode_wkdm(page, dst);
    case Codec::Xbzrle: {
        const uint8_t* old = ctx.cache().find(gpn);
        return old == nullptr ? kNoGain : encode_xbzrle(page, ConstPage{old, kPageSize}, dst);
    }
    case Codec::Zstd: return encode_zstd(page, ctx, dst);
    case Codec::Lz4: return encode_lz4(page, ctx, dst);
    case Codec::Sparse: {
        const size_t n = encode_xbzrle(page, zero_page(), dst);
        return n == 0 ? kNoGain : n;  // an all-zero page is a Zero record
    }
    case Codec::None:
    case Codec::Auto: break;
    }
    return kNoGain;
}

// Auto, cheapest test first:
//   1. an all-zero page is a Zero record;
//   2. a cached page that changed little (delta under a quarter of a page)
//      is an XBZRLE record — re-sent dirty pages usually are;
//   2b. a page whose non-zero runs fit an eighth of a page is Sparse;
//   3. WKdm's model over the first 128 words (an eighth of the page) is the
//      cheap estimate: at most half of them misses means a page of words
//      (integers, pointers, page tables), where WKdm is fast and good, so
//      WKdm, kept at once if at most half a page (lz4 rarely beats it there);
//   4. otherwise (text, code, random data), or if WKdm left more than
//      half: lz4 (zstd if the options prefer ratio), bounded by WKdm's
//      size, and the smaller of the two is kept.
// Nothing fitting means a raw page. (Measured in bench/compress_bench.cpp.)
// With auto_skips_compressors, 3 and 4 are left to the frame's compressor.
struct Choice {
    Codec codec = Codec::None;
    size_t size = kNoGain;
};

constexpr size_t kSampleWords = 128;
// A page whose non-zero runs fit an eighth of a page is a Sparse record.
constexpr size_t kSparseLimit = kPageSize / 8;

Choice choose(uint64_t gpn, ConstPage page, CodecContext& ctx, std::span<uint8_t> dst) {
    if (is_zero_page(page)) return {Codec::Zero, 0};
    if (const uint8_t* old = ctx.cache().find(gpn)) {
        const size_t n = encode_xbzrle(page, ConstPage{old, kPageSize}, dst.first(kPageSize / 4));
        if (n != kNoGain) return {Codec::Xbzrle, n};
    }
    if (const size_t n = encode_payload(Codec::Sparse, gpn, page, ctx, dst.first(kSparseLimit)); n != kNoGain)
        return {Codec::Sparse, n};
    if (ctx.options().auto_skips_compressors) return {};
    Choice best;
    if (wkdm_sample_misses(page, kSampleWords) <= kSampleWords / 2) {
        const size_t wk = encode_wkdm(page, dst);
        if (wk != kNoGain) {
            best = {Codec::Wkdm, wk};
            if (wk <= kPageSize / 2) return best;
        }
    }
    const Codec second = ctx.options().auto_prefers_ratio ? Codec::Zstd : Codec::Lz4;
    if (best.size == kNoGain) return {second, encode_payload(second, gpn, page, ctx, dst)};
    auto& scratch = ctx.scratch();
    const size_t n = encode_payload(second, gpn, page, ctx, std::span<uint8_t>{scratch}.first(best.size - 1));
    if (n != kNoGain) {
        std::memcpy(dst.data(), scratch.data(), n);
        best = {second, n};
    }
    return best;
}

}  // namespace

std::string_view codec_name(Codec c) {
    const auto i = static_cast<size_t>(c);
    return i < kNames.size() ? kNames[i] : std::string_view{"unknown"};
}

base::Result<Codec> parse_codec(std::string_view name) {
    for (size_t i = 0; i < kNames.size(); ++i) {
        if (kNames[i] == name) return static_cast<Codec>(i);
    }
    return base::Error{
        fmt::format("unknown compression '{}' (none, zero, wkdm, xbzrle, zstd, lz4, sparse or auto)", name)};
}

uint64_t page_hash(uint64_t gpn, ConstPage page) { return XXH3_64bits_withSeed(page.data(), kPageSize, gpn); }

bool is_zero_page(ConstPage page) {
    uint64_t acc = 0;
    for (size_t i = 0; i < kPageSize; i += 64) {
        uint64_t w[8];
        std::memcpy(w, page.data() + i, sizeof w);
        acc |= w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7];
        if (acc != 0) return false;
    }
    return true;
}

base::Result<RecordHeader> read_record_header(std::span<const uint8_t> stream) {
    if (stream.size() < kRecordHeaderSize) {
        return base::Error{fmt::format("page record truncated: {} of {} header bytes", stream.size(),
                                       kRecordHeaderSize)};
    }
    RecordHeader h;
    if (stream[0] >= kWireCodecs) return base::Error{fmt::format("page record has unknown codec id {}", stream[0])};
    h.codec = static_cast<Codec>(stream[0]);
    h.flags = stream[1];
    if ((h.flags & ~(kRecordCache | kRecordUnchecked)) != 0) {
        return base::Error{fmt::format("page record has unknown flags {:#04x}", h.flags)};
    }
    h.payload_size = static_cast<uint16_t>(stream[2] | stream[3] << 8);
    std::memcpy(&h.check, stream.data() + 4, 4);
    const size_t n = h.payload_size;
    const bool size_ok = h.codec == Codec::None     ? n == kPageSize
                         : h.codec == Codec::Zero   ? n == 0
                         : h.codec == Codec::Xbzrle ? n < kPageSize
                                                    : n > 0 && n < kPageSize;
    if (!size_ok) {
        return base::Error{fmt::format("page record: a {} payload cannot be {} bytes", codec_name(h.codec), n)};
    }
    if (stream.size() - kRecordHeaderSize < n) {
        return base::Error{fmt::format("page record truncated: {} of {} payload bytes", stream.size() - kRecordHeaderSize, n)};
    }
    return h;
}

Codec encode_page(Codec codec, uint64_t gpn, ConstPage page, CodecContext& ctx, std::vector<uint8_t>& out,
                  uint64_t* hash_out) {
    const size_t start = out.size();
    out.resize(start + kMaxRecordSize);
    // Anything encoded must be smaller than the page, or it goes raw.
    const std::span<uint8_t> dst{out.data() + start + kRecordHeaderSize, kPageSize - 1};
    Choice c;
    if (codec == Codec::Auto) {
        c = choose(gpn, page, ctx, dst);
    } else if (codec == Codec::Sparse && is_zero_page(page)) {
        c = {Codec::Zero, 0};
    } else if (codec != Codec::None) {
        c = {codec, encode_payload(codec, gpn, page, ctx, dst)};
    }
    if (c.size == kNoGain) {
        c = {Codec::None, kPageSize};
        std::memcpy(out.data() + start + kRecordHeaderSize, page.data(), kPageSize);
    }
    const bool cache = ctx.options().cache_sent_pages && ctx.cache().capacity() > 0;
    // A raw record's payload is the decoded page: hash that copy, so a page
    // that changes under the encoder (live guest RAM) still gets a record
    // that checks out.
    const uint64_t hash = c.codec == Codec::None
                              ? page_hash(gpn, ConstPage{out.data() + start + kRecordHeaderSize, kPageSize})
                              : page_hash(gpn, page);
    if (hash_out != nullptr) *hash_out = hash;
    const uint8_t flags = static_cast<uint8_t>((cache ? kRecordCache : 0) |
                                               (ctx.options().unchecked_records ? kRecordUnchecked : 0));
    write_header(out.data() + start, c.codec, flags, c.size, hash);
    out.resize(start + kRecordHeaderSize + c.size);
    if (cache) ctx.cache().insert(gpn, page);
    auto& stats = ctx.stats();
    stats.pages[static_cast<size_t>(c.codec)] += 1;
    stats.bytes[static_cast<size_t>(c.codec)] += kRecordHeaderSize + c.size;
    return c.codec;
}

EncodedPage encode_page(Codec codec, uint64_t gpn, ConstPage page, CodecContext& ctx) {
    EncodedPage e;
    e.bytes.reserve(kMaxRecordSize);
    e.codec = encode_page(codec, gpn, page, ctx, e.bytes);
    return e;
}

base::Result<void> decode_page(std::span<const uint8_t> record, uint64_t gpn, MutPage out, CodecContext& ctx,
                               uint64_t* hash_out, bool unchecked_ok) {
    POPEK_ASSIGN_OR_RETURN(const RecordHeader h, read_record_header(record));
    if (record.size() != h.record_size()) {
        return base::Error{fmt::format("page record of {} bytes is followed by {} more", h.record_size(),
                                       record.size() - h.record_size())};
    }
    const bool unchecked = (h.flags & kRecordUnchecked) != 0;
    if (unchecked && !unchecked_ok)
        return base::Error{fmt::format("page {:#x}: a record without a check outside a compressed frame", gpn)};
    if (unchecked && h.check != 0)
        return base::Error{fmt::format("page {:#x}: an unchecked record with a check value", gpn)};
    const auto payload = record.subspan(kRecordHeaderSize);
    switch (h.codec) {
    case Codec::None: std::memcpy(out.data(), payload.data(), kPageSize); break;
    case Codec::Zero: std::memset(out.data(), 0, kPageSize); break;
    case Codec::Wkdm: POPEK_TRY(decode_wkdm(payload, out)); break;
    case Codec::Xbzrle: {
        const uint8_t* old = ctx.cache().find(gpn);
        if (old == nullptr) {
            return base::Error{fmt::format("XBZRLE record for page {:#x}, which is not in the cache", gpn)};
        }
        POPEK_TRY(decode_xbzrle(payload, ConstPage{old, kPageSize}, out));
        break;
    }
    case Codec::Zstd: POPEK_TRY(decode_zstd(payload, ctx, out)); break;
    case Codec::Lz4: POPEK_TRY(decode_lz4(payload, out)); break;
    case Codec::Sparse: POPEK_TRY(decode_xbzrle(payload, zero_page(), out)); break;
    case Codec::Auto: return base::Error{"page record has codec auto"};  // read_record_header refuses it
    }
    const uint64_t hash = page_hash(gpn, out);
    if (!unchecked && record_check(record.data(), hash) != h.check) {
        return base::Error{fmt::format("page {:#x} ({} record) fails its check: corrupted stream or XBZRLE "
                                       "caches out of step", gpn, codec_name(h.codec))};
    }
    if ((h.flags & kRecordCache) != 0) ctx.cache().insert(gpn, out);
    if (hash_out != nullptr) *hash_out = hash;
    return base::ok();
}

}  // namespace popek::migration::compress
