// Page codecs: every codec round-trips every kind of page, and compresses the
// kinds it is meant for.
#include <gtest/gtest.h>

#include <vector>

#include "compress_pages.hpp"
#include "migration/compress/codec.hpp"
#include "migration/compress/context.hpp"

namespace popek::migration::compress {
namespace {

using testing::Page;

// Encodes with `sender`, decodes with `receiver`, expects the page back;
// returns the record.
EncodedPage round_trip(Codec codec, uint64_t gpn, const Page& page, CodecContext& sender,
                       CodecContext& receiver) {
    EncodedPage e = encode_page(codec, gpn, page, sender);
    Page out;
    out.fill(0xAA);
    auto r = decode_page(e.bytes, gpn, out, receiver);
    EXPECT_TRUE(r.ok()) << codec_name(codec) << ": " << r.error().message;
    EXPECT_EQ(out, page) << codec_name(codec) << " decoded a different page";
    return e;
}

std::vector<Page> page_kinds() {
    return {testing::zero_page(),       testing::random_page(1),   testing::text_page(2),
            testing::small_ints_page(3), testing::pointers_page(4), testing::changed_page(testing::text_page(5), 3, 6)};
}

constexpr Codec kAll[] = {Codec::None, Codec::Zero, Codec::Wkdm, Codec::Xbzrle,
                          Codec::Zstd, Codec::Lz4,  Codec::Sparse, Codec::Auto};

TEST(CompressCodec, EveryCodecRoundTripsEveryKindOfPage) {
    for (Codec codec : kAll) {
        CodecContext sender, receiver;
        uint64_t gpn = 0;
        for (const Page& p : page_kinds()) {
            EncodedPage e = round_trip(codec, gpn, p, sender, receiver);
            EXPECT_LE(e.bytes.size(), kMaxRecordSize);
            EXPECT_TRUE(e.codec == codec || e.codec == Codec::None || codec == Codec::Auto ||
                        (codec == Codec::Sparse && e.codec == Codec::Zero))
                << codec_name(codec) << " sent as " << codec_name(e.codec);
            ++gpn;
        }
    }
}

TEST(CompressCodec, EncodersFallBackToRawWhenTheyCannotGain) {
    CodecContext ctx(CodecOptions{.cache_pages = 0});
    const Page random = testing::random_page(7);
    for (Codec codec : kAll) {
        EncodedPage e = encode_page(codec, 9, random, ctx);
        EXPECT_EQ(e.codec, Codec::None) << codec_name(codec);
        EXPECT_EQ(e.bytes.size(), kRecordHeaderSize + kPageSize);
    }
    // Zero refuses a page with one byte set; XBZRLE a page it never saw.
    Page almost = testing::zero_page();
    almost[4095] = 1;
    CodecContext fresh;
    EXPECT_EQ(encode_page(Codec::Zero, 1, almost, fresh).codec, Codec::None);
    EXPECT_EQ(encode_page(Codec::Xbzrle, 2, testing::text_page(1), fresh).codec, Codec::None);
}

TEST(CompressCodec, ZeroPageIsAHeader) {
    CodecContext ctx;
    EncodedPage e = encode_page(Codec::Zero, 0, testing::zero_page(), ctx);
    EXPECT_EQ(e.codec, Codec::Zero);
    EXPECT_EQ(e.bytes.size(), kRecordHeaderSize);
}

// Each codec on the pages it is for, so a codec that stops compressing fails.
TEST(CompressCodec, EachCodecCompressesWhatItIsFor) {
    CodecContext ctx(CodecOptions{.cache_pages = 0});
    const auto size = [&](Codec c, const Page& p) {
        EncodedPage e = encode_page(c, 0, p, ctx);
        EXPECT_EQ(e.codec, c) << codec_name(c);
        return e.bytes.size();
    };
    EXPECT_LT(size(Codec::Wkdm, testing::small_ints_page(1)), kPageSize / 2);
    EXPECT_LT(size(Codec::Wkdm, testing::pointers_page(1)), kPageSize * 3 / 4);
    EXPECT_LT(size(Codec::Zstd, testing::text_page(1)), kPageSize / 3);
    EXPECT_LT(size(Codec::Lz4, testing::text_page(1)), kPageSize / 2);
    EXPECT_LT(size(Codec::Zstd, testing::small_ints_page(1)), kPageSize * 3 / 4);

    CodecContext sender;
    const Page base = testing::random_page(3);
    encode_page(Codec::Xbzrle, 5, base, sender);  // first time: raw, cached
    EXPECT_LE(encode_page(Codec::Xbzrle, 5, testing::changed_page(base, 8, 1), sender).bytes.size(),
              kRecordHeaderSize + 8 * 4);  // per change: 2-byte offset, length, byte
    EXPECT_EQ(encode_page(Codec::Xbzrle, 5, testing::changed_page(base, 8, 1), sender).bytes.size(),
              kRecordHeaderSize);  // unchanged since cached: header only
}

TEST(CompressCodec, AutoPicksTheCodecForThePage) {
    CodecContext ctx;
    EXPECT_EQ(encode_page(Codec::Auto, 1, testing::zero_page(), ctx).codec, Codec::Zero);
    EXPECT_EQ(encode_page(Codec::Auto, 2, testing::random_page(1), ctx).codec, Codec::None);
    EXPECT_EQ(encode_page(Codec::Auto, 3, testing::small_ints_page(1), ctx).codec, Codec::Wkdm);
    EXPECT_EQ(encode_page(Codec::Auto, 4, testing::text_page(1), ctx).codec, Codec::Lz4);
    // Page 2 again with a few bytes changed: a delta against the cache.
    EXPECT_EQ(encode_page(Codec::Auto, 2, testing::changed_page(testing::random_page(1), 4, 2), ctx).codec,
              Codec::Xbzrle);
    CodecContext ratio(CodecOptions{.auto_prefers_ratio = true});
    EXPECT_EQ(encode_page(Codec::Auto, 4, testing::text_page(1), ratio).codec, Codec::Zstd);
}

// A mostly empty page (a header word, a few page-table entries) is a few
// bytes as Sparse, and Auto picks it; an all-zero one stays a Zero record.
TEST(CompressCodec, SparsePagesAreTheirNonZeroRuns) {
    Page sparse = testing::zero_page();
    for (size_t off : {0u, 8u, 2048u, 4088u}) sparse[off] = static_cast<uint8_t>(off / 8 + 1);
    CodecContext sender(CodecOptions{.cache_pages = 0}), receiver;
    EncodedPage e = round_trip(Codec::Sparse, 3, sparse, sender, receiver);
    EXPECT_EQ(e.codec, Codec::Sparse);
    EXPECT_LE(e.bytes.size(), kRecordHeaderSize + 4 * 3);  // per run: offset, length, one byte
    EXPECT_EQ(round_trip(Codec::Auto, 4, sparse, sender, receiver).codec, Codec::Sparse);
    EXPECT_EQ(encode_page(Codec::Sparse, 5, testing::zero_page(), sender).codec, Codec::Zero);
    EXPECT_EQ(encode_page(Codec::Sparse, 6, testing::random_page(2), sender).codec, Codec::None);
}

// Both ends hand back the page's hash (the migration's per-page digest):
// the same value, and page_hash's.
TEST(CompressCodec, EncodeAndDecodeReturnThePageHash) {
    CodecContext sender, receiver;
    for (Codec codec : kAll) {
        for (const Page& p : page_kinds()) {
            std::vector<uint8_t> rec;
            uint64_t sent = 1, got = 2;
            encode_page(codec, 77, p, sender, rec, &sent);
            Page out;
            ASSERT_TRUE(decode_page(rec, 77, out, receiver, &got).ok()) << codec_name(codec);
            EXPECT_EQ(sent, got) << codec_name(codec);
            EXPECT_EQ(sent, page_hash(77, p)) << codec_name(codec);
            EXPECT_NE(page_hash(78, p), sent) << "the hash is seeded with the page number";
        }
    }
}

// Auto inside a compressed frame: zero, XBZRLE and Sparse only; the rest raw.
TEST(CompressCodec, AutoCanLeaveCompressionToTheFrame) {
    CodecContext ctx(CodecOptions{.auto_skips_compressors = true});
    EXPECT_EQ(encode_page(Codec::Auto, 1, testing::text_page(1), ctx).codec, Codec::None);
    EXPECT_EQ(encode_page(Codec::Auto, 2, testing::small_ints_page(1), ctx).codec, Codec::None);
    EXPECT_EQ(encode_page(Codec::Auto, 3, testing::zero_page(), ctx).codec, Codec::Zero);
}

TEST(CompressCodec, ZstdLevelsAllRoundTrip) {
    for (int level : {-7, -1, 1, 3, 9, 19}) {
        CodecContext sender(CodecOptions{.zstd_level = level}), receiver;
        for (const Page& p : page_kinds()) round_trip(Codec::Zstd, 0, p, sender, receiver);
    }
}

TEST(CompressCodec, RecordsFrameAStream) {
    CodecContext sender, receiver;
    const std::vector<Page> pages = page_kinds();
    std::vector<uint8_t> stream;
    for (size_t i = 0; i < pages.size(); ++i) encode_page(kAll[i % std::size(kAll)], i, pages[i], sender, stream);
    std::span<const uint8_t> rest{stream};
    for (size_t i = 0; i < pages.size(); ++i) {
        auto h = read_record_header(rest);
        ASSERT_TRUE(h.ok()) << h.error().message;
        Page out;
        auto r = decode_page(rest.first(h->record_size()), i, out, receiver);
        ASSERT_TRUE(r.ok()) << r.error().message;
        EXPECT_EQ(out, pages[i]);
        rest = rest.subspan(h->record_size());
    }
    EXPECT_TRUE(rest.empty());
    EXPECT_EQ(sender.stats().total_pages(), pages.size());
    EXPECT_EQ(sender.stats().total_bytes(), stream.size());
}

TEST(CompressCodec, CodecNames) {
    for (Codec c : kAll) {
        auto parsed = parse_codec(codec_name(c));
        ASSERT_TRUE(parsed.ok());
        EXPECT_EQ(*parsed, c);
    }
    EXPECT_FALSE(parse_codec("gzip").ok());
}

}  // namespace
}  // namespace popek::migration::compress
