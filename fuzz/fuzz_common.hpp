// Pieces every fuzz target shares: invariant checks that crash (so libFuzzer
// keeps the input), a byte reader over the input, and guest RAM with a hole.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "memory/guest_memory.hpp"

namespace popek::fuzz {

// A broken invariant is a bug in the code under test.
inline void check(bool ok) {
    if (!ok) std::abort();
}

// Reads the input front to back; past its end every read is 0.
class Input {
public:
    Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
    uint8_t u8() { return pos_ < size_ ? data_[pos_++] : 0; }
    uint16_t u16() {
        const uint8_t lo = u8();
        return static_cast<uint16_t>(lo | (u8() << 8));
    }
    [[nodiscard]] std::span<const uint8_t> rest() const { return {data_ + pos_, size_ - std::min(pos_, size_)}; }

private:
    const uint8_t* data_;
    size_t size_;
    size_t pos_ = 0;
};

// RAM at [0, low_size) and [high_base, high_base + high_size): buffers that
// fall into the hole or past the end must be refused. Targets keep one for
// the whole run; a memfd per input would cost more than the code under test.
inline memory::GuestMemory guest_memory_with_hole(uint64_t low_size, uint64_t high_base, uint64_t high_size) {
    const memory::RamRange ranges[] = {{0, low_size}, {high_base, high_size}};
    auto m = memory::GuestMemory::create(ranges);
    check(m.ok());
    return std::move(m).value();
}

}  // namespace popek::fuzz
