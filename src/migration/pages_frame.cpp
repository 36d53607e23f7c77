#include "migration/pages_frame.hpp"

#include <zstd.h>

#include <string>

#include "migration/stream.hpp"

namespace popek::migration {

using base::Error;
using base::Result;

PagesDeflater::PagesDeflater(uint8_t lane, int level) : lane_(lane), cctx_(ZSTD_createCCtx()) {
    if (cctx_ != nullptr) {
        ZSTD_CCtx_setParameter(cctx_, ZSTD_c_compressionLevel, level);
        ZSTD_CCtx_setParameter(cctx_, ZSTD_c_windowLog, kPagesWindowLog);
    }
}

PagesDeflater::~PagesDeflater() { ZSTD_freeCCtx(cctx_); }

Result<void> PagesDeflater::deflate(std::span<const uint8_t> records, std::vector<uint8_t>& out) {
    if (cctx_ == nullptr) return Error{"migration: cannot allocate a zstd compression stream"};
    out.resize(1 + ZSTD_compressBound(records.size()) + 64);
    out[0] = lane_;
    ZSTD_inBuffer in{records.data(), records.size(), 0};
    ZSTD_outBuffer o{out.data(), out.size(), 1};
    for (;;) {
        const size_t left = ZSTD_compressStream2(cctx_, &o, &in, ZSTD_e_flush);
        if (ZSTD_isError(left)) return Error{std::string("migration: zstd stream: ") + ZSTD_getErrorName(left)};
        if (left == 0) break;
        if (o.pos == o.size) {  // not with compressBound's room, but be sure
            out.resize(out.size() * 2);
            o.dst = out.data();
            o.size = out.size();
        }
    }
    out.resize(o.pos);
    return {};
}

PagesInflater::PagesInflater() = default;

PagesInflater::~PagesInflater() {
    for (auto* d : lanes_) ZSTD_freeDCtx(d);
}

Result<std::span<const uint8_t>> PagesInflater::inflate(std::span<const uint8_t> payload) {
    if (payload.empty()) return Error{"migration stream: empty pagesz frame"};
    const uint8_t lane = payload[0];
    if (lane >= kMaxPagesLanes)
        return Error{"migration stream: pagesz frame for lane " + std::to_string(lane) + " (at most " +
                     std::to_string(kMaxPagesLanes) + " lanes)"};
    ZSTD_DCtx*& d = lanes_[lane];
    if (d == nullptr) {
        d = ZSTD_createDCtx();
        if (d == nullptr) return Error{"migration: cannot allocate a zstd decompression stream"};
        ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, kPagesWindowLog);
    }
    if (out_.size() < kMaxInflatedPages) out_.resize(kMaxInflatedPages);
    ZSTD_inBuffer in{payload.data() + 1, payload.size() - 1, 0};
    ZSTD_outBuffer o{out_.data(), out_.size(), 0};
    while (in.pos < in.size) {
        const size_t r = ZSTD_decompressStream(d, &o, &in);
        if (ZSTD_isError(r))
            return Error{std::string("migration stream: lane ") + std::to_string(lane) +
                         "'s zstd stream is damaged: " + ZSTD_getErrorName(r)};
        if (o.pos == o.size && in.pos < in.size)
            return Error{"migration stream: a pagesz frame inflates past " + std::to_string(kMaxInflatedPages) +
                         " bytes"};
    }
    // Whatever the decoder still holds for this input (a flushed block it
    // could not write out): one more call with no input.
    if (o.pos < o.size) {
        ZSTD_inBuffer none{nullptr, 0, 0};
        const size_t r = ZSTD_decompressStream(d, &o, &none);
        if (ZSTD_isError(r))
            return Error{std::string("migration stream: lane ") + std::to_string(lane) +
                         "'s zstd stream is damaged: " + ZSTD_getErrorName(r)};
    }
    if (o.pos == o.size)
        return Error{"migration stream: a pagesz frame inflates to " + std::to_string(kMaxInflatedPages) +
                     " bytes or more"};
    return std::span<const uint8_t>(out_.data(), o.pos);
}

}  // namespace popek::migration
