// WKdm (Wilson and Kaplan, "The Case for Compressed Caching in Virtual Memory
// Systems", USENIX 1999): the page as 1024 little-endian 32-bit words and a
// 16-entry direct-mapped dictionary of recent words, indexed by a hash of a
// word's upper 22 bits. Each word is one of four kinds:
//
//   zero     the word is 0                               tag only
//   exact    dictionary[h] == word                       tag + 4-bit index
//   partial  dictionary[h] has the same upper 22 bits    tag + 4-bit index + low 10 bits;
//            the word replaces dictionary[h]
//   miss     anything else                               tag + the 32-bit word;
//            the word replaces dictionary[h]
//
// Payload, each section packed densely as the original does:
//   tags     256 bytes, 2 bits per word, word i at bits 2*(i%4) of byte i/4
//   misses   4 bytes per miss, little-endian, in word order
//   indices  4 bits per exact or partial word, low nibble first
//   lows     10 bits per partial word, an LSB-first bit stream
// The tags alone determine every other section's size, so the decoder knows
// the exact payload length before it reads anything else, and unused bits at
// the end of the index and low sections must be zero.
#include <array>
#include <cstring>

#include <fmt/core.h>

#include "migration/compress/page_codecs.hpp"

namespace popek::migration::compress {

namespace {

enum Tag : uint8_t { kZero = 0, kExact = 1, kPartial = 2, kMiss = 3 };
constexpr size_t kWords = kPageSize / 4;
constexpr size_t kTagBytes = kWords / 4;
constexpr uint32_t kLowBits = 10;
constexpr uint32_t kLowMask = (1u << kLowBits) - 1;
constexpr size_t kDictSize = 16;

// Spreads the upper 22 bits over 16 entries (Fibonacci hashing); small
// integers (upper bits 0) all share entry 0, whose initial value 0 makes
// them partial matches from the first word on.
inline uint32_t dict_index(uint32_t w) { return ((w >> kLowBits) * 0x9E3779B1u) >> 28; }

struct Counts {
    size_t misses = 0, indices = 0, lows = 0;
    [[nodiscard]] size_t payload_size() const {
        return kTagBytes + 4 * misses + (indices + 1) / 2 + (lows * kLowBits + 7) / 8;
    }
};

inline uint32_t load_word(const uint8_t* p) {
    uint32_t w;
    std::memcpy(&w, p, 4);
    return w;  // x86 is little-endian, as the format is
}

}  // namespace

size_t wkdm_sample_misses(ConstPage page, size_t words) {
    std::array<uint32_t, kDictSize> dict{};
    size_t misses = 0;
    for (size_t i = 0; i < words && i < kWords; ++i) {
        const uint32_t w = load_word(page.data() + 4 * i);
        if (w == 0) continue;
        const uint32_t h = dict_index(w);
        if (((dict[h] ^ w) >> kLowBits) != 0) ++misses;
        dict[h] = w;
    }
    return misses;
}

size_t encode_wkdm(ConstPage page, std::span<uint8_t> dst) {
    std::array<uint32_t, kDictSize> dict{};
    std::array<uint8_t, kWords> tags;
    std::array<uint32_t, kWords> misses;
    std::array<uint8_t, kWords> indices;
    std::array<uint16_t, kWords> lows;
    Counts n;
    for (size_t i = 0; i < kWords; ++i) {
        const uint32_t w = load_word(page.data() + 4 * i);
        if (w == 0) {
            tags[i] = kZero;
            continue;
        }
        const uint32_t h = dict_index(w);
        const uint32_t d = dict[h];
        if (d == w) {
            tags[i] = kExact;
            indices[n.indices++] = static_cast<uint8_t>(h);
        } else if (((d ^ w) >> kLowBits) == 0) {
            tags[i] = kPartial;
            indices[n.indices++] = static_cast<uint8_t>(h);
            lows[n.lows++] = static_cast<uint16_t>(w & kLowMask);
            dict[h] = w;
        } else {
            tags[i] = kMiss;
            misses[n.misses++] = w;
            dict[h] = w;
        }
    }
    const size_t size = n.payload_size();
    if (size > dst.size()) return kNoGain;

    uint8_t* out = dst.data();
    for (size_t i = 0; i < kTagBytes; ++i) {
        out[i] = static_cast<uint8_t>(tags[4 * i] | tags[4 * i + 1] << 2 | tags[4 * i + 2] << 4 |
                                      tags[4 * i + 3] << 6);
    }
    out += kTagBytes;
    std::memcpy(out, misses.data(), 4 * n.misses);
    out += 4 * n.misses;
    for (size_t i = 0; i < n.indices; i += 2) {
        const uint8_t hi = i + 1 < n.indices ? indices[i + 1] : 0;
        *out++ = static_cast<uint8_t>(indices[i] | hi << 4);
    }
    uint64_t acc = 0;
    uint32_t bits = 0;
    for (size_t i = 0; i < n.lows; ++i) {
        acc |= uint64_t{lows[i]} << bits;
        bits += kLowBits;
        while (bits >= 8) {
            *out++ = static_cast<uint8_t>(acc);
            acc >>= 8;
            bits -= 8;
        }
    }
    if (bits > 0) *out++ = static_cast<uint8_t>(acc);
    return size;
}

base::Result<void> decode_wkdm(std::span<const uint8_t> payload, MutPage out) {
    if (payload.size() < kTagBytes) {
        return base::Error{fmt::format("WKdm payload of {} bytes is shorter than its {} bytes of tags",
                                       payload.size(), kTagBytes)};
    }
    // Count the tags 32 at a time: per 2-bit field, lo = bit 0, hi = bit 1.
    Counts n;
    for (size_t i = 0; i < kTagBytes; i += 8) {
        uint64_t t;
        std::memcpy(&t, payload.data() + i, 8);
        const uint64_t lo = t & 0x5555555555555555ull, hi = (t >> 1) & 0x5555555555555555ull;
        n.misses += static_cast<size_t>(__builtin_popcountll(lo & hi));
        n.indices += static_cast<size_t>(__builtin_popcountll(lo ^ hi));  // exact or partial
        n.lows += static_cast<size_t>(__builtin_popcountll(hi & ~lo));
    }
    if (payload.size() != n.payload_size()) {
        return base::Error{fmt::format("WKdm payload is {} bytes but its tags describe {}", payload.size(),
                                       n.payload_size())};
    }
    const uint8_t* miss = payload.data() + kTagBytes;
    const uint8_t* index = miss + 4 * n.misses;
    const uint8_t* low = index + (n.indices + 1) / 2;
    if (n.indices % 2 != 0 && (low[-1] >> 4) != 0) return base::Error{"WKdm index padding is not zero"};
    const uint32_t tail_bits = static_cast<uint32_t>(n.lows * kLowBits % 8);
    if (tail_bits != 0 && (payload.back() >> tail_bits) != 0) return base::Error{"WKdm low-bit padding is not zero"};

    // Unpack the index and low-bit sections first (as the original does),
    // then rebuild the words in one simple loop.
    std::array<uint8_t, kWords + 1> idx;
    for (size_t i = 0; i < (n.indices + 1) / 2; ++i) {
        idx[2 * i] = index[i] & 0xf;
        idx[2 * i + 1] = static_cast<uint8_t>(index[i] >> 4);
    }
    std::array<uint16_t, kWords> lows;
    uint64_t acc = 0;
    uint32_t bits = 0;
    for (size_t i = 0; i < n.lows; ++i) {
        while (bits < kLowBits) {
            acc |= uint64_t{*low++} << bits;
            bits += 8;
        }
        lows[i] = static_cast<uint16_t>(acc & kLowMask);
        acc >>= kLowBits;
        bits -= kLowBits;
    }

    std::array<uint32_t, kDictSize> dict{};
    const uint8_t* next_idx = idx.data();
    const uint16_t* next_low = lows.data();
    uint8_t* dst = out.data();
    for (size_t i = 0; i < kWords; ++i, dst += 4) {
        const uint32_t tag = (payload[i / 4] >> (2 * (i % 4))) & 3;
        uint32_t w = 0;
        if (tag == kMiss) {
            w = load_word(miss);
            miss += 4;
            dict[dict_index(w)] = w;
        } else if (tag == kExact) {
            w = dict[*next_idx++];
        } else if (tag == kPartial) {
            const uint8_t h = *next_idx++;
            w = (dict[h] & ~kLowMask) | *next_low++;
            dict[h] = w;
        }
        std::memcpy(dst, &w, 4);
    }
    return base::ok();
}

}  // namespace popek::migration::compress
