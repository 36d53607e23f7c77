// XBZRLE (as QEMU's xbzrle.c): the page XORed against its cached previous
// version is a sequence of runs; the payload is
//
//   ( zero-run length, non-zero-run length, the non-zero run's new bytes )*
//
// with lengths as LEB128 varints (at most 2 bytes: a run is at most 4096),
// minimally encoded. The first zero run may be 0 (the page changed at byte 0),
// later ones are at least 1 and every non-zero run at least 1; the page after
// the last non-zero run is unchanged, so a trailing zero run is not written
// and an unchanged page is an empty payload. Unchanged stretches of fewer
// than 3 bytes inside a change are sent as part of it: a run boundary costs
// two varint bytes.
#include <cstring>

#include <fmt/core.h>

#include "migration/compress/page_codecs.hpp"

namespace popek::migration::compress {

namespace {

constexpr size_t kMinZeroRun = 3;

// Index of the first byte at or after `i` where a and b differ (or the end).
size_t skip_equal(const uint8_t* a, const uint8_t* b, size_t i) {
    while (i + 8 <= kPageSize) {
        uint64_t x, y;
        std::memcpy(&x, a + i, 8);
        std::memcpy(&y, b + i, 8);
        if (x != y) return i + static_cast<size_t>(__builtin_ctzll(x ^ y) / 8);
        i += 8;
    }
    while (i < kPageSize && a[i] == b[i]) ++i;
    return i;
}

// Index of the end of the change starting at `i`: the first byte of an
// unchanged stretch of at least kMinZeroRun bytes, or one reaching the end.
size_t skip_changed(const uint8_t* a, const uint8_t* b, size_t i) {
    for (;;) {
        while (i < kPageSize && a[i] != b[i]) ++i;
        if (i == kPageSize) return i;
        const size_t same_end = skip_equal(a, b, i);
        if (same_end - i >= kMinZeroRun || same_end == kPageSize) return i;
        i = same_end;
    }
}

// Appends v as a varint at out[pos]; false if it does not fit.
bool put_varint(std::span<uint8_t> out, size_t& pos, size_t v) {
    do {
        if (pos >= out.size()) return false;
        const auto byte = static_cast<uint8_t>(v & 0x7f);
        v >>= 7;
        out[pos++] = static_cast<uint8_t>(byte | (v != 0 ? 0x80 : 0));
    } while (v != 0);
    return true;
}

// Reads a minimally encoded varint of at most 2 bytes and at most kPageSize.
base::Result<size_t> get_varint(std::span<const uint8_t> in, size_t& pos) {
    size_t v = 0;
    for (uint32_t i = 0; i < 2; ++i) {
        if (pos >= in.size()) return base::Error{"XBZRLE payload ends inside a run length"};
        const uint8_t byte = in[pos++];
        v |= size_t{byte & 0x7fu} << (7 * i);
        if ((byte & 0x80) == 0) {
            if (i > 0 && byte == 0) return base::Error{"XBZRLE run length is not minimally encoded"};
            if (v > kPageSize) return base::Error{fmt::format("XBZRLE run length {} exceeds a page", v)};
            return v;
        }
    }
    return base::Error{"XBZRLE run length is longer than 2 bytes"};
}

}  // namespace

size_t encode_xbzrle(ConstPage page, ConstPage old, std::span<uint8_t> dst) {
    const uint8_t* a = page.data();
    const uint8_t* b = old.data();
    size_t pos = 0;
    size_t i = 0;
    for (;;) {
        const size_t change = skip_equal(a, b, i);
        if (change == kPageSize) return pos;
        const size_t end = skip_changed(a, b, change);
        if (!put_varint(dst, pos, change - i) || !put_varint(dst, pos, end - change)) return kNoGain;
        if (dst.size() - pos < end - change) return kNoGain;
        std::memcpy(dst.data() + pos, a + change, end - change);
        pos += end - change;
        i = end;
    }
}

base::Result<void> decode_xbzrle(std::span<const uint8_t> payload, ConstPage old, MutPage out) {
    std::memcpy(out.data(), old.data(), kPageSize);
    size_t pos = 0;
    size_t at = 0;
    bool first = true;
    while (pos < payload.size()) {
        POPEK_ASSIGN_OR_RETURN(const size_t zero_run, get_varint(payload, pos));
        if (zero_run == 0 && !first) return base::Error{"XBZRLE has an empty unchanged run"};
        POPEK_ASSIGN_OR_RETURN(const size_t run, get_varint(payload, pos));
        if (run == 0) return base::Error{"XBZRLE has an empty changed run"};
        if (zero_run + run > kPageSize - at) {
            return base::Error{fmt::format("XBZRLE runs reach byte {}, past the page", at + zero_run + run)};
        }
        at += zero_run;
        if (payload.size() - pos < run) return base::Error{"XBZRLE payload ends inside a changed run"};
        std::memcpy(out.data() + at, payload.data() + pos, run);
        pos += run;
        at += run;
        first = false;
    }
    return base::ok();
}

}  // namespace popek::migration::compress
