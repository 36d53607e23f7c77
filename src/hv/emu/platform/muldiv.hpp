// v * mul / div without overflow (128-bit intermediate), saturating at
// UINT64_MAX: converts between guest-clock nanoseconds and device ticks.
#pragma once

#include <cstdint>

namespace popek::hv::emu::platform {

__extension__ typedef unsigned __int128 uint128_t;

constexpr uint64_t muldiv(uint64_t v, uint64_t mul, uint64_t div) {
    if (div == 0) return UINT64_MAX;
    const uint128_t r = static_cast<uint128_t>(v) * mul / div;
    return r > UINT64_MAX ? UINT64_MAX : static_cast<uint64_t>(r);
}

// Same, rounded up (the first tick boundary at or after v).
constexpr uint64_t muldiv_up(uint64_t v, uint64_t mul, uint64_t div) {
    if (div == 0) return UINT64_MAX;
    const uint128_t r = (static_cast<uint128_t>(v) * mul + div - 1) / div;
    return r > UINT64_MAX ? UINT64_MAX : static_cast<uint64_t>(r);
}

// a + b, saturating.
constexpr uint64_t sat_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

}  // namespace popek::hv::emu::platform
