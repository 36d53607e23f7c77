// The record decoder refuses what the network should not have sent.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "compress_pages.hpp"
#include "migration/compress/codec.hpp"
#include "migration/compress/context.hpp"

namespace popek::migration::compress {
namespace {

using testing::Page;

std::string decode_error(std::span<const uint8_t> record, uint64_t gpn, CodecContext& ctx) {
    Page out;
    auto r = decode_page(record, gpn, out, ctx);
    return r.ok() ? std::string{"(decoded)"} : r.error().message;
}

// A record of each wire codec, encoded without caching.
std::vector<std::vector<uint8_t>> one_record_per_codec(CodecContext& sender) {
    std::vector<std::vector<uint8_t>> out;
    out.push_back(encode_page(Codec::None, 0, testing::text_page(1), sender).bytes);
    out.push_back(encode_page(Codec::Zero, 0, testing::zero_page(), sender).bytes);
    out.push_back(encode_page(Codec::Wkdm, 0, testing::small_ints_page(1), sender).bytes);
    out.push_back(encode_page(Codec::Zstd, 0, testing::text_page(1), sender).bytes);
    out.push_back(encode_page(Codec::Lz4, 0, testing::text_page(1), sender).bytes);
    return out;
}

TEST(CompressDecode, RefusesTruncatedRecords) {
    CodecContext sender(CodecOptions{.cache_pages = 0}), receiver;
    for (const auto& rec : one_record_per_codec(sender)) {
        for (size_t n = 0; n < rec.size(); n += (n < 16 ? 1 : 97)) {
            EXPECT_NE(decode_error(std::span{rec}.first(n), 0, receiver), "(decoded)") << n;
        }
        EXPECT_EQ(decode_error(rec, 0, receiver), "(decoded)");
    }
    std::vector<uint8_t> hdr_only = {0, 0};
    EXPECT_NE(decode_error(hdr_only, 0, receiver).find("truncated"), std::string::npos);
}

TEST(CompressDecode, RefusesTrailingBytesAndBadLengths) {
    CodecContext sender(CodecOptions{.cache_pages = 0}), receiver;
    auto rec = encode_page(Codec::Lz4, 0, testing::text_page(1), sender).bytes;
    rec.push_back(0);
    EXPECT_NE(decode_error(rec, 0, receiver).find("followed by 1 more"), std::string::npos);

    // A raw record must carry a page, a zero record nothing, compressed ones less than a page.
    std::vector<uint8_t> raw(kRecordHeaderSize + 100, 0);
    raw[2] = 100;
    EXPECT_NE(decode_error(raw, 0, receiver).find("none payload cannot be 100"), std::string::npos);
    std::vector<uint8_t> zero(kRecordHeaderSize + 1, 0);
    zero[0] = static_cast<uint8_t>(Codec::Zero);
    zero[2] = 1;
    EXPECT_NE(decode_error(zero, 0, receiver).find("zero payload cannot be 1"), std::string::npos);
    std::vector<uint8_t> big(kRecordHeaderSize + kPageSize, 0);
    big[0] = static_cast<uint8_t>(Codec::Lz4);
    big[3] = kPageSize >> 8;
    EXPECT_NE(decode_error(big, 0, receiver).find("lz4 payload cannot be 4096"), std::string::npos);
    std::vector<uint8_t> empty_wkdm(kRecordHeaderSize, 0);
    empty_wkdm[0] = static_cast<uint8_t>(Codec::Wkdm);
    EXPECT_NE(decode_error(empty_wkdm, 0, receiver).find("wkdm payload cannot be 0"), std::string::npos);
}

TEST(CompressDecode, RefusesUnknownCodecsAndFlags) {
    CodecContext sender(CodecOptions{.cache_pages = 0}), receiver;
    auto rec = encode_page(Codec::Zero, 0, testing::zero_page(), sender).bytes;
    for (uint8_t id : {uint8_t{7}, uint8_t{8}, uint8_t{0xff}}) {  // 7 is Auto: never on the wire
        auto bad = rec;
        bad[0] = id;
        EXPECT_NE(decode_error(bad, 0, receiver).find("unknown codec id"), std::string::npos);
    }
    auto flags = rec;
    flags[1] = 0x80;
    EXPECT_NE(decode_error(flags, 0, receiver).find("unknown flags"), std::string::npos);
}

TEST(CompressDecode, RefusesARecordRelabelledAsAnotherCodec) {
    CodecContext sender(CodecOptions{.cache_pages = 0}), receiver;
    for (auto rec : one_record_per_codec(sender)) {
        const uint8_t original = rec[0];
        for (uint8_t id = 0; id < kWireCodecs; ++id) {
            if (id == original) continue;
            rec[0] = id;
            EXPECT_NE(decode_error(rec, 0, receiver), "(decoded)") << int{original} << " as " << int{id};
        }
    }
}

// A corrupted byte is refused, or — where the format has slack, e.g. a
// WKdm index pointing at another dictionary entry with the same upper bits —
// still decodes to exactly the page that was sent. Never to another page.
TEST(CompressDecode, RefusesEveryCorruptedByte) {
    CodecContext sender(CodecOptions{.cache_pages = 0}), receiver;
    for (const auto& rec : one_record_per_codec(sender)) {
        Page sent;
        ASSERT_TRUE(decode_page(rec, 0, sent, receiver).ok());
        size_t refused = 0, tried = 0;
        for (size_t i = 0; i < rec.size(); i += (i < 64 ? 1 : 13)) {
            auto bad = rec;
            bad[i] ^= 0x5a;
            Page out;
            ++tried;
            if (!decode_page(bad, 0, out, receiver).ok()) {
                ++refused;
            } else {
                EXPECT_EQ(out, sent) << "codec " << int{rec[0]} << " byte " << i;
            }
        }
        EXPECT_GT(refused, tried / 2) << "codec " << int{rec[0]};
    }
}

TEST(CompressDecode, RefusesARecordForAnotherPage) {
    CodecContext sender, receiver;
    const Page base = testing::text_page(4);
    Page out;
    ASSERT_TRUE(decode_page(encode_page(Codec::Xbzrle, 1, base, sender).bytes, 1, out, receiver).ok());
    ASSERT_TRUE(decode_page(encode_page(Codec::Xbzrle, 2, testing::text_page(5), sender).bytes, 2, out, receiver).ok());
    auto delta = encode_page(Codec::Xbzrle, 1, testing::changed_page(base, 5, 1), sender);
    ASSERT_EQ(delta.codec, Codec::Xbzrle);
    EXPECT_NE(decode_error(delta.bytes, 2, receiver).find("fails its check"), std::string::npos);
    EXPECT_NE(decode_error(delta.bytes, 3, receiver).find("not in the cache"), std::string::npos);
}

// The check is seeded with the page number: a raw record (no cache, no
// codec state) applied to another page is refused too.
TEST(CompressDecode, RefusesARawRecordForAnotherPage) {
    CodecContext sender, receiver;
    auto raw = encode_page(Codec::None, 10, testing::text_page(6), sender);
    Page out;
    ASSERT_TRUE(decode_page(raw.bytes, 10, out, receiver).ok());
    EXPECT_NE(decode_error(raw.bytes, 11, receiver).find("fails its check"), std::string::npos);
}

// Records without a check (compressed frames only): decoded when the caller
// says they came in such a frame, refused otherwise, and refused with a
// non-zero check value.
TEST(CompressDecode, UncheckedRecordsOnlyInsideCompressedFrames) {
    CodecContext sender(CodecOptions{.cache_pages = 0, .unchecked_records = true}), receiver;
    const Page page = testing::text_page(9);
    auto rec = encode_page(Codec::None, 4, page, sender).bytes;
    EXPECT_EQ(rec[1] & kRecordUnchecked, kRecordUnchecked);
    EXPECT_EQ(rec[4] | rec[5] | rec[6] | rec[7], 0) << "no check value";
    Page out;
    uint64_t hash = 0;
    ASSERT_TRUE(decode_page(rec, 4, out, receiver, &hash, true).ok());
    EXPECT_EQ(out, page);
    EXPECT_EQ(hash, page_hash(4, page));
    EXPECT_NE(decode_error(rec, 4, receiver).find("without a check outside a compressed frame"), std::string::npos);
    auto checked = rec;
    checked[5] = 1;
    auto r = decode_page(checked, 4, out, receiver, nullptr, true);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("unchecked record with a check value"), std::string::npos);
}

// Hand-made XBZRLE payloads that respect the header but not the format.
TEST(CompressDecode, RefusesMalformedXbzrle) {
    CodecContext ctx;
    const Page cached = testing::text_page(1);
    ctx.cache().insert(7, cached);
    const auto record = [](std::vector<uint8_t> payload) {
        std::vector<uint8_t> r(kRecordHeaderSize, 0);
        r[0] = static_cast<uint8_t>(Codec::Xbzrle);
        r[2] = static_cast<uint8_t>(payload.size());
        r.insert(r.end(), payload.begin(), payload.end());
        return r;
    };
    const auto has = [&](std::vector<uint8_t> payload, std::string_view what) {
        const std::string e = decode_error(record(std::move(payload)), 7, ctx);
        EXPECT_NE(e.find(what), std::string::npos) << e;
    };
    has({0x80}, "ends inside a run length");
    has({0x80, 0x80, 0x01}, "longer than 2 bytes");
    has({0x81, 0x00, 1, 0}, "not minimally encoded");
    has({0x81, 0x40, 1, 0}, "exceeds a page");
    has({0xff, 0x1f, 2, 'a', 'b'}, "past the page");  // 4095 + 2
    has({0, 0}, "empty changed run");
    has({0, 1, 'x', 0, 1, 'y'}, "empty unchanged run");
    has({0x80, 0x20, 1, 'x'}, "past the page");  // 4096 unchanged + 1 changed
    has({0, 4, 'a', 'b'}, "ends inside a changed run");
    has({5, 1, 'x'}, "fails its check");  // well formed, but not what was sent
}

}  // namespace
}  // namespace popek::migration::compress
