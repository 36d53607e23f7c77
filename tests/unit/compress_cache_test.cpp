// The XBZRLE cache: eviction order, and sender and receiver staying in step.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "compress_pages.hpp"
#include "migration/compress/codec.hpp"
#include "migration/compress/context.hpp"
#include "migration/compress/page_cache.hpp"

namespace popek::migration::compress {
namespace {

using testing::Page;

TEST(CompressCache, EvictsTheLeastRecentlyInserted) {
    PageCache cache(3);
    const Page a = testing::text_page(1), b = testing::text_page(2);
    cache.insert(10, a);
    cache.insert(11, a);
    cache.insert(12, a);
    EXPECT_EQ(cache.page_numbers(), (std::vector<uint64_t>{10, 11, 12}));
    cache.insert(10, b);  // re-sent: now the newest, contents replaced
    EXPECT_EQ(cache.page_numbers(), (std::vector<uint64_t>{11, 12, 10}));
    ASSERT_NE(cache.find(10), nullptr);
    EXPECT_EQ(0, std::memcmp(cache.find(10), b.data(), kPageSize));
    EXPECT_NE(cache.find(11), nullptr);  // lookups change nothing
    cache.insert(13, a);
    EXPECT_EQ(cache.page_numbers(), (std::vector<uint64_t>{12, 10, 13}));
    EXPECT_EQ(cache.find(11), nullptr);
    EXPECT_EQ(cache.evictions(), 1u);
    EXPECT_EQ(cache.size(), 3u);
}

TEST(CompressCache, CapacityZeroCachesNothing) {
    PageCache cache(0);
    cache.insert(1, testing::zero_page());
    EXPECT_EQ(cache.find(1), nullptr);
    CodecContext ctx(CodecOptions{.cache_pages = 0});
    EncodedPage e = encode_page(Codec::Xbzrle, 1, testing::text_page(1), ctx);
    EXPECT_EQ(e.bytes[1] & kRecordCache, 0);
}

// A guest of 64 pages rewriting a few bytes of random pages, sent with Auto
// through a cache of 16 pages: most re-sends hit the cache, many miss it
// after eviction, and the receiver must end with the same cache and pages.
TEST(CompressCache, SenderAndReceiverStayInStepThroughEvictions) {
    constexpr size_t kGuestPages = 64;
    const CodecOptions opts{.cache_pages = 16, .cache_stripes = 1};
    CodecContext sender(opts), receiver(opts);
    std::vector<Page> guest(kGuestPages), dest(kGuestPages);
    for (size_t i = 0; i < kGuestPages; ++i) {
        guest[i] = i % 3 == 0 ? testing::random_page(i) : i % 3 == 1 ? testing::pointers_page(i) : testing::text_page(i);
    }
    std::mt19937_64 rng(42);
    std::vector<uint8_t> stream;
    size_t xbzrle = 0;
    for (int round = 0; round < 40; ++round) {
        stream.clear();
        std::vector<uint64_t> sent;
        // The first round sends everything; later rounds a dirty subset,
        // skewed to low page numbers so some pages stay cached.
        for (uint64_t gpn = 0; gpn < kGuestPages; ++gpn) {
            if (round > 0) {
                if (rng() % (gpn < 12 ? 2 : 8) != 0) continue;
                guest[gpn] = testing::changed_page(guest[gpn], 1 + rng() % 40, rng());
            }
            if (round == 0) sender.set_cache_sent_pages(gpn % 2 == 0);  // the receiver follows the flag
            if (encode_page(Codec::Auto, gpn, guest[gpn], sender, stream) == Codec::Xbzrle) ++xbzrle;
            sent.push_back(gpn);
        }
        sender.set_cache_sent_pages(true);
        std::span<const uint8_t> rest{stream};
        for (uint64_t gpn : sent) {
            auto h = read_record_header(rest);
            ASSERT_TRUE(h.ok()) << h.error().message;
            auto r = decode_page(rest.first(h->record_size()), gpn, dest[gpn], receiver);
            ASSERT_TRUE(r.ok()) << "round " << round << " page " << gpn << ": " << r.error().message;
            rest = rest.subspan(h->record_size());
        }
        ASSERT_TRUE(rest.empty());
        ASSERT_EQ(sender.cache().page_numbers(), receiver.cache().page_numbers()) << "round " << round;
        for (uint64_t gpn : sender.cache().page_numbers()) {
            ASSERT_EQ(0, std::memcmp(sender.cache().find(gpn), receiver.cache().find(gpn), kPageSize));
        }
    }
    EXPECT_EQ(dest, guest);
    EXPECT_GT(xbzrle, 50u);
    EXPECT_GT(sender.cache().evictions(), 20u);
    EXPECT_EQ(sender.cache().evictions(), receiver.cache().evictions());
    EXPECT_LT(sender.stats().ratio(), 0.8);
}

// A receiver whose cache missed a page (e.g. a smaller capacity than the
// sender's) refuses the delta instead of applying it to the wrong base.
TEST(CompressCache, AReceiverOutOfStepRefuses) {
    CodecContext sender(CodecOptions{.cache_pages = 4, .cache_stripes = 1}),
        receiver(CodecOptions{.cache_pages = 2, .cache_stripes = 1});
    Page out;
    for (uint64_t gpn = 0; gpn < 4; ++gpn) {
        ASSERT_TRUE(decode_page(encode_page(Codec::Xbzrle, gpn, testing::text_page(gpn), sender).bytes, gpn, out,
                                receiver).ok());
    }
    auto delta = encode_page(Codec::Xbzrle, 0, testing::changed_page(testing::text_page(0), 2, 1), sender);
    ASSERT_EQ(delta.codec, Codec::Xbzrle);
    auto r = decode_page(delta.bytes, 0, out, receiver);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("not in the cache"), std::string::npos);
}

// Several sender threads: each owns the stripes s % threads == lane with a
// context of its own; their records reach one receiver interleaved in an
// order neither chose. Each stripe's inserts keep their order, so the
// receiver's one striped cache matches the union of the senders' caches, and
// every delta decodes, through evictions.
TEST(CompressCache, StripedCachesStayInStepAcrossInterleavedSenders) {
    constexpr size_t kLanes = 3;
    constexpr uint64_t kGuestPages = 64 * 16;  // 16 bitmap words: every stripe used twice
    const CodecOptions opts{.cache_pages = 800, .cache_stripes = kMigrationStripes};  // 100 of 128 per stripe
    std::vector<std::unique_ptr<CodecContext>> senders;
    for (size_t i = 0; i < kLanes; ++i) senders.push_back(std::make_unique<CodecContext>(opts));
    CodecContext receiver(opts);
    EXPECT_EQ(receiver.cache().stripes(), kMigrationStripes);
    std::vector<Page> guest(kGuestPages), dest(kGuestPages);
    for (uint64_t i = 0; i < kGuestPages; ++i) guest[i] = testing::text_page(i);
    std::mt19937_64 rng(7);
    size_t xbzrle = 0;
    for (int round = 0; round < 12; ++round) {
        // Each lane encodes its pages in ascending order into records of its own.
        std::vector<std::vector<std::pair<uint64_t, std::vector<uint8_t>>>> out(kLanes);
        for (uint64_t gpn = 0; gpn < kGuestPages; ++gpn) {
            if (round > 0) {
                if (rng() % 3 != 0) continue;
                guest[gpn] = testing::changed_page(guest[gpn], 1 + rng() % 30, rng());
            }
            const size_t lane = PageCache::stripe_of(gpn, kMigrationStripes) % kLanes;
            EncodedPage e = encode_page(Codec::Xbzrle, gpn, guest[gpn], *senders[lane]);
            if (e.codec == Codec::Xbzrle) ++xbzrle;
            out[lane].emplace_back(gpn, std::move(e.bytes));
        }
        // The receiver takes them in a random interleaving that keeps each lane's order.
        std::vector<size_t> next(kLanes, 0);
        for (;;) {
            std::vector<size_t> ready;
            for (size_t l = 0; l < kLanes; ++l)
                if (next[l] < out[l].size()) ready.push_back(l);
            if (ready.empty()) break;
            const size_t l = ready[rng() % ready.size()];
            const auto& [gpn, bytes] = out[l][next[l]++];
            auto r = decode_page(bytes, gpn, dest[gpn], receiver);
            ASSERT_TRUE(r.ok()) << "round " << round << " page " << gpn << ": " << r.error().message;
        }
        for (uint64_t gpn : receiver.cache().page_numbers()) {
            const size_t lane = PageCache::stripe_of(gpn, kMigrationStripes) % kLanes;
            ASSERT_NE(senders[lane]->cache().find(gpn), nullptr) << "round " << round << " page " << gpn;
            ASSERT_EQ(0, std::memcmp(senders[lane]->cache().find(gpn), receiver.cache().find(gpn), kPageSize));
        }
        size_t sender_pages = 0;
        for (auto& s : senders) sender_pages += s->cache().size();
        ASSERT_EQ(sender_pages, receiver.cache().size());
    }
    EXPECT_EQ(dest, guest);
    EXPECT_GT(xbzrle, 200u);
    EXPECT_GT(receiver.cache().evictions(), 100u);
}

TEST(CompressCache, StripesSplitTheCapacityAndEvictWithinAStripe) {
    PageCache cache(10, 4);  // stripes of 3, 3, 2, 2 pages
    const Page a = testing::text_page(1);
    for (uint64_t i = 0; i < 4; ++i) cache.insert(i, a);           // stripe 0 (pages 0-63): 4 > 3
    EXPECT_EQ(cache.find(0), nullptr);
    EXPECT_EQ(cache.evictions(), 1u);
    for (uint64_t i = 0; i < 3; ++i) cache.insert(3 * 64 + i, a);  // stripe 3: capacity 2
    EXPECT_EQ(cache.page_numbers(), (std::vector<uint64_t>{1, 2, 3, 193, 194}));
    EXPECT_EQ(cache.size(), 5u);
}

}  // namespace
}  // namespace popek::migration::compress
