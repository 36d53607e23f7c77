// Page generators for the compress_* tests: the kinds of guest memory each
// codec is meant for.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <random>
#include <string_view>

#include "migration/compress/codec.hpp"

namespace popek::migration::compress::testing {

using Page = std::array<uint8_t, kPageSize>;

inline Page zero_page() { return Page{}; }

inline Page random_page(uint64_t seed) {
    Page p;
    std::mt19937_64 rng(seed);
    for (size_t i = 0; i < kPageSize; i += 8) {
        const uint64_t v = rng();
        std::memcpy(p.data() + i, &v, 8);
    }
    return p;
}

inline Page text_page(uint64_t seed) {
    static constexpr std::string_view kWords[] = {
        "the ", "guest ", "page ", "memory ", "migration ", "is ", "sent ", "over ", "a ", "link ",
        "while ", "vCPUs ", "keep ", "running ", "and ", "dirty ", "pages ", "are ", "copied ", "again.\n"};
    Page p;
    std::mt19937_64 rng(seed);
    size_t at = 0;
    while (at < kPageSize) {
        const std::string_view w = kWords[rng() % std::size(kWords)];
        const size_t n = std::min(w.size(), kPageSize - at);
        std::memcpy(p.data() + at, w.data(), n);
        at += n;
    }
    return p;
}

// 64-bit counters, lengths and indices below 1000 (long/size_t fields).
inline Page small_ints_page(uint64_t seed) {
    Page p;
    std::mt19937_64 rng(seed);
    for (size_t i = 0; i < kPageSize; i += 8) {
        const uint64_t v = rng() % 1000;
        std::memcpy(p.data() + i, &v, 8);
    }
    return p;
}

// A heap node array: {next pointer, small key, flags} with pointers into one
// 1 MiB arena, as in a linked list or tree.
inline Page pointers_page(uint64_t seed) {
    Page p;
    std::mt19937_64 rng(seed);
    const uint64_t arena = 0x00007f3a'12400000ull;
    for (size_t i = 0; i < kPageSize; i += 16) {
        const uint64_t ptr = arena + (rng() % (1 << 20)) / 16 * 16;
        const auto key = static_cast<uint32_t>(rng() % 500);
        const uint32_t flags = (rng() % 4 == 0) ? 1u : 0u;
        std::memcpy(p.data() + i, &ptr, 8);
        std::memcpy(p.data() + i + 8, &key, 4);
        std::memcpy(p.data() + i + 12, &flags, 4);
    }
    return p;
}

// `base` with `n` bytes changed at pseudo-random places.
inline Page changed_page(const Page& base, size_t n, uint64_t seed) {
    Page p = base;
    std::mt19937_64 rng(seed);
    for (size_t i = 0; i < n; ++i) p[rng() % kPageSize] ^= static_cast<uint8_t>(1 + rng() % 255);
    return p;
}

}  // namespace popek::migration::compress::testing
