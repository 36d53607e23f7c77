// Little-endian byte helpers and size parsing/formatting.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

namespace popek::base {

template <class T>
    requires std::is_trivially_copyable_v<T>
T load(std::span<const uint8_t> bytes, size_t offset = 0) {
    T v{};
    if (offset <= bytes.size() && bytes.size() - offset >= sizeof(T))
        std::memcpy(&v, bytes.data() + offset, sizeof(T));
    return v;
}

template <class T>
    requires std::is_trivially_copyable_v<T>
void store(std::span<uint8_t> bytes, size_t offset, const T& v) {
    if (offset <= bytes.size() && bytes.size() - offset >= sizeof(T))
        std::memcpy(bytes.data() + offset, &v, sizeof(T));
}

// Reads up to 8 bytes little-endian into a uint64_t (port and MMIO data).
inline uint64_t load_le(std::span<const uint8_t> bytes) {
    uint64_t v = 0;
    std::memcpy(&v, bytes.data(), bytes.size() < 8 ? bytes.size() : 8);
    return v;
}
inline void store_le(std::span<uint8_t> bytes, uint64_t v) {
    std::memcpy(bytes.data(), &v, bytes.size() < 8 ? bytes.size() : 8);
}

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;
constexpr uint64_t GiB = 1024 * MiB;

constexpr uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }
constexpr uint64_t align_down(uint64_t v, uint64_t a) { return v & ~(a - 1); }

// "256M", "1G", "4096", "512K" -> bytes; nullopt on garbage or overflow.
std::optional<uint64_t> parse_size(std::string_view text);

}  // namespace popek::base
