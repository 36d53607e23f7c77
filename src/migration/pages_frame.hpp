// PagesZ frames: a sender lane's Pages payloads as one zstd stream.
//
// A PagesZ payload is one byte (the lane, < kMaxPagesLanes) and then the
// bytes zstd produced for one Pages payload (stream.hpp), flushed
// (ZSTD_e_flush) but never ended: each lane's stream runs across all its
// frames, so a page can refer back to what the lane sent before, within a
// 2 MiB window — like QEMU's multifd zstd channels, and unlike one
// compression per page. The receiver keeps one decompression stream per
// lane and must see a lane's frames in the order they were sent, which the
// sender guarantees (a lane sends its frames itself, one at a time).
//
// The inflated payload is parsed like a Pages payload (parse_page_batch),
// so every record keeps its own check. PagesInflater is the one reader of
// the compressed bytes: it refuses a bad lane, a damaged stream, a window
// larger than 2 MiB, and a frame inflating past kMaxInflatedPages.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/result.hpp"
#include "migration/compress/codec.hpp"
#include "migration/stream.hpp"

struct ZSTD_CCtx_s;
struct ZSTD_DCtx_s;

namespace popek::migration {

inline constexpr uint32_t kMaxPagesLanes = 16;
inline constexpr int kPagesWindowLog = 21;  // 2 MiB
// A sender cuts a Pages payload once it reaches kPagesFrameTarget: the
// largest is under that plus one entry (index and record).
inline constexpr size_t kMaxInflatedPages = kPagesFrameTarget + 2 * (8 + compress::kMaxRecordSize);

class PagesDeflater {
public:
    // `level`: zstd's (1 = fast; negative = faster still).
    PagesDeflater(uint8_t lane, int level);
    ~PagesDeflater();
    PagesDeflater(const PagesDeflater&) = delete;
    PagesDeflater& operator=(const PagesDeflater&) = delete;
    // The PagesZ payload for the Pages payload `records` into `out`.
    base::Result<void> deflate(std::span<const uint8_t> records, std::vector<uint8_t>& out);

private:
    uint8_t lane_;
    ZSTD_CCtx_s* cctx_ = nullptr;
};

class PagesInflater {
public:
    PagesInflater();
    ~PagesInflater();
    PagesInflater(const PagesInflater&) = delete;
    PagesInflater& operator=(const PagesInflater&) = delete;
    // The Pages payload a PagesZ payload carries; valid until the next call.
    base::Result<std::span<const uint8_t>> inflate(std::span<const uint8_t> payload);

private:
    std::array<ZSTD_DCtx_s*, kMaxPagesLanes> lanes_{};
    std::vector<uint8_t> out_;
};

}  // namespace popek::migration
