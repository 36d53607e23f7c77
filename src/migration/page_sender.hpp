// Pre-copy's page sender: encoding lanes (threads) that turn guest pages
// into Pages or PagesZ frames, a token bucket for --bandwidth, and the
// per-page digests the switch validates. Internal to src/migration
// (precopy.cpp and the post-copy switch use it).
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "base/result.hpp"
#include "memory/guest_memory.hpp"
#include "migration/compress/context.hpp"
#include "migration/memory_file.hpp"
#include "migration/pages_frame.hpp"
#include "migration/postcopy.hpp"
#include "migration/precopy.hpp"
#include "migration/stream.hpp"

namespace popek::migration {

// A token bucket: at most `rate` bytes per second on average, bursts of up
// to 20 ms worth (at least two frames), so a round's measured rate stays
// near the limit even after the idle time between rounds. take() sleeps (in slices, so a cancel is
// seen) until the bytes fit.
class RateLimiter {
public:
    explicit RateLimiter(uint64_t bytes_per_second)
        : rate_(static_cast<double>(bytes_per_second)),
          burst_(std::max(rate_ / 50.0, 2.0 * static_cast<double>(kPagesFrameTarget + kFrameHeaderSize))),
          tokens_(burst_) {}
    [[nodiscard]] bool limited() const { return rate_ > 0; }
    base::Result<void> take(uint64_t bytes, const std::atomic<bool>& cancel) {
        if (rate_ <= 0) return {};
        refill();
        tokens_ -= static_cast<double>(bytes);
        while (tokens_ < 0) {
            if (cancel.load()) return base::Error{"cancelled"};
            const double wait_s = std::min(-tokens_ / rate_, 0.05);
            std::this_thread::sleep_for(std::chrono::duration<double>(wait_s));
            refill();
        }
        return {};
    }

private:
    void refill() {
        const auto now = std::chrono::steady_clock::now();
        tokens_ = std::min(burst_, tokens_ + std::chrono::duration<double>(now - last_).count() * rate_);
        last_ = now;
    }
    double rate_;
    double burst_;
    double tokens_;
    std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

// Encodes pages into Pages frames of about kPagesFrameTarget bytes, on
// `threads` lanes in parallel. A lane owns the XBZRLE cache stripes
// s % threads == lane (compress/page_cache.hpp) and every page in them, and
// sends its frames in its own order: the receiver's one striped cache then
// sees each stripe's inserts in the sender's order, however the lanes'
// frames interleave.
class PageSender {
public:
    // zstd and auto compress whole frames in each lane's zstd stream
    // (PagesZ, pages_frame.hpp): zstd with raw page records inside, auto
    // with zero and XBZRLE records where they fit. The other codecs encode
    // page by page into Pages frames.
    PageSender(Connection& conn, const memory::GuestMemory& mem, compress::Codec codec, uint64_t cache_pages,
               uint32_t threads, uint64_t bandwidth, const std::atomic<bool>& cancel)
        : conn_(conn), mem_(mem), limiter_(bandwidth), cancel_(cancel) {
        const bool framed = codec == compress::Codec::Zstd || codec == compress::Codec::Auto;
        page_codec_ = codec == compress::Codec::Zstd ? compress::Codec::None : codec;
        threads = std::clamp<uint32_t>(threads, 1, kMaxThreads);
        for (uint32_t i = 0; i < threads; ++i) {
            lanes_.push_back(std::make_unique<Lane>(compress::CodecOptions{.cache_pages = cache_pages,
                                                                           .cache_stripes = compress::kMigrationStripes,
                                                                           .cache_sent_pages = false,
                                                                           .auto_skips_compressors = framed,
                                                                           .unchecked_records = framed}));
            lanes_.back()->batch.reserve(kPagesFrameTarget + compress::kMaxRecordSize + 8);
            if (framed) lanes_.back()->deflater = std::make_unique<PagesDeflater>(static_cast<uint8_t>(i), kFrameZstdLevel);
        }
    }
    void set_caching(bool on) {
        const bool xbzrle = page_codec_ == compress::Codec::Xbzrle || page_codec_ == compress::Codec::Auto;
        for (auto& l : lanes_) l->ctx.set_cache_sent_pages(on && xbzrle);
    }
    // Each page sent: its digest (postcopy.hpp's page_digest, of the very
    // bytes encoded) goes in digests[index], so the validation digest at the
    // switch costs one pass over this array, not over all guest RAM.
    void track_digests(std::vector<uint64_t>* digests) { digests_ = digests; }
    // Called (under the send lock) after each Pages frame: bytes and pages so far.
    void on_frame(std::function<void(uint64_t, uint64_t)> fn) { on_frame_ = std::move(fn); }

    // Sends the pages of `indices` (ascending); with `skip_zero`, zero pages
    // are left out (counted in zero_skipped()). Flushes every lane.
    base::Result<void> send_pages(const std::vector<uint64_t>& indices, bool skip_zero) {
        const size_t n = lanes_.size();
        std::atomic<bool> failed{false};
        std::vector<base::Result<void>> results(n, base::Result<void>{});
        auto work = [&](size_t lane) {
            Lane& l = *lanes_[lane];
            auto r = [&]() -> base::Result<void> {
                for (uint64_t index : indices) {
                    if (n > 1 && lane_of(index) != lane) continue;
                    if (cancel_.load() || failed.load()) return base::Error{"cancelled"};
                    const uint8_t* src = base() + index * compress::kPageSize;
                    if (skip_zero && is_zero_page(src)) {
                        zero_skipped_.fetch_add(1, std::memory_order_relaxed);
                        continue;
                    }
                    POPEK_TRY(encode(l, index, src));
                }
                return ship(l);
            }();
            if (!r.ok()) failed = true;
            results[lane] = std::move(r);
        };
        std::vector<std::thread> helpers;
        for (size_t lane = 1; lane < n; ++lane) helpers.emplace_back(work, lane);
        work(0);
        for (auto& t : helpers) t.join();
        for (auto& r : results)
            if (!r.ok() && r.error().message != "cancelled") return r.error();
        for (auto& r : results)
            if (!r.ok()) return r.error();
        return {};
    }
    base::Result<void> send_json(FrameType t, const nlohmann::json& j) {
        auto frame = encode_json_frame(t, j);
        std::lock_guard lock(send_mu_);
        POPEK_TRY(limiter_.take(frame.size(), cancel_));
        bytes_ += frame.size();
        return conn_.send_raw(frame);
    }
    [[nodiscard]] uint64_t bytes() const { return bytes_.load(); }
    [[nodiscard]] uint64_t pages() const { return pages_.load(); }
    [[nodiscard]] uint64_t zero_skipped() const { return zero_skipped_.load(); }
    [[nodiscard]] uint32_t threads() const { return static_cast<uint32_t>(lanes_.size()); }
    // Bytes of Pages/PagesZ frames (headers included) per byte of the pages in them.
    [[nodiscard]] double stream_ratio() const {
        const uint64_t raw = pages_.load() * compress::kPageSize;
        return raw == 0 ? 1.0 : static_cast<double>(page_bytes_.load()) / static_cast<double>(raw);
    }
    [[nodiscard]] bool framed() const { return lanes_.front()->deflater != nullptr; }
    [[nodiscard]] compress::CodecStats stats() const {
        compress::CodecStats sum;
        for (const auto& l : lanes_)
            for (size_t c = 0; c < sum.pages.size(); ++c) {
                sum.pages[c] += l->ctx.stats().pages[c];
                sum.bytes[c] += l->ctx.stats().bytes[c];
            }
        return sum;
    }

private:
    // zstd level of PagesZ frames: the fastest of the normal levels; guest
    // RAM is mostly zeroes, small integers and pointers, which it catches.
    static constexpr int kFrameZstdLevel = 1;
    struct Lane {
        explicit Lane(compress::CodecOptions o) : ctx(o) {}
        compress::CodecContext ctx;
        std::vector<uint8_t> batch;
        uint64_t batch_pages = 0;
        std::unique_ptr<PagesDeflater> deflater;  // PagesZ frames when set
        std::vector<uint8_t> zbatch;
        alignas(64) std::array<uint8_t, compress::kPageSize> page{};
    };
    size_t lane_of(uint64_t index) const {
        return compress::PageCache::stripe_of(index, compress::kMigrationStripes) % lanes_.size();
    }
    const uint8_t* base() const { return mem_.regions().front().host; }
    base::Result<void> encode(Lane& l, uint64_t index, const uint8_t* src) {
        // The guest may write the page while it is encoded, and the record's
        // check must match what the destination decodes. A raw record is
        // itself a copy (encode_page hashes the copy); any other codec reads
        // the page more than once, so it gets a private copy first. (The
        // write is in the dirty log; the page goes again next round.)
        const uint8_t* page = src;
        if (page_codec_ != compress::Codec::None) {
            std::memcpy(l.page.data(), src, compress::kPageSize);
            page = l.page.data();
        }
        uint8_t at[8];
        for (int i = 0; i < 8; ++i) at[i] = static_cast<uint8_t>(index >> (8 * i));
        l.batch.insert(l.batch.end(), at, at + 8);
        const size_t record = l.batch.size();
        uint64_t hash = 0;
        const compress::Codec used =
            compress::encode_page(page_codec_, index, compress::ConstPage(page, compress::kPageSize), l.ctx, l.batch, &hash);
        if (digests_ != nullptr) {
            const uint8_t* decoded =
                used == compress::Codec::None ? l.batch.data() + record + compress::kRecordHeaderSize : page;
            (*digests_)[index] = used == compress::Codec::Zero ? 0 : page_digest_from_hash(decoded, hash);
        }
        ++l.batch_pages;
        if (l.batch.size() >= kPagesFrameTarget) return ship(l);
        return {};
    }
    base::Result<void> ship(Lane& l) {
        if (l.batch.empty()) return {};
        // Compressed outside the send lock: lanes compress in parallel.
        std::span<const uint8_t> payload = l.batch;
        FrameType type = FrameType::Pages;
        if (l.deflater != nullptr) {
            POPEK_TRY(l.deflater->deflate(l.batch, l.zbatch));
            payload = l.zbatch;
            type = FrameType::PagesZ;
        }
        std::lock_guard lock(send_mu_);
        POPEK_TRY(limiter_.take(payload.size() + kFrameHeaderSize, cancel_));
        POPEK_TRY(conn_.send(type, payload));
        bytes_ += payload.size() + kFrameHeaderSize;
        page_bytes_ += payload.size() + kFrameHeaderSize;
        pages_ += l.batch_pages;
        l.batch.clear();
        l.batch_pages = 0;
        if (on_frame_) on_frame_(bytes_.load(), pages_.load());
        return {};
    }

    Connection& conn_;
    const memory::GuestMemory& mem_;
    compress::Codec page_codec_;  // what each page record uses (Auto: zero/XBZRLE/raw when framed)
    std::vector<std::unique_ptr<Lane>> lanes_;
    std::mutex send_mu_;  // one frame at a time on the connection; guards limiter_
    RateLimiter limiter_;
    const std::atomic<bool>& cancel_;
    std::function<void(uint64_t, uint64_t)> on_frame_;
    std::vector<uint64_t>* digests_ = nullptr;  // lanes write distinct indices
    std::atomic<uint64_t> bytes_{0};
    std::atomic<uint64_t> page_bytes_{0};
    std::atomic<uint64_t> pages_{0};
    std::atomic<uint64_t> zero_skipped_{0};
};

// The number of set bits.
uint64_t count_bits(const std::vector<uint64_t>& bits);
// Sends the pages whose bits are set (below `pages`) and clears the bits.
base::Result<void> send_dirty(PageSender& out, std::vector<uint64_t>& bits, uint64_t pages);

}  // namespace popek::migration
