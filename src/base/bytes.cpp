#include "base/bytes.hpp"

#include <charconv>

namespace popek::base {

std::optional<uint64_t> parse_size(std::string_view text) {
    if (text.empty()) return std::nullopt;
    uint64_t mult = 1;
    char last = text.back();
    switch (last) {
        case 'k': case 'K': mult = KiB; break;
        case 'm': case 'M': mult = MiB; break;
        case 'g': case 'G': mult = GiB; break;
        default: break;
    }
    if (mult != 1) text.remove_suffix(1);
    if (text.empty()) return std::nullopt;
    uint64_t n = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec != std::errc() || ptr != text.data() + text.size()) return std::nullopt;
    if (n > UINT64_MAX / mult) return std::nullopt;
    return n * mult;
}

}  // namespace popek::base
