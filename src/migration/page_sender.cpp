#include "migration/page_sender.hpp"

#include <bit>

namespace popek::migration {

using base::Result;

uint64_t count_bits(const std::vector<uint64_t>& bits) {
    uint64_t n = 0;
    for (uint64_t w : bits) n += static_cast<uint64_t>(std::popcount(w));
    return n;
}

Result<void> send_dirty(PageSender& out, std::vector<uint64_t>& bits, uint64_t pages) {
    std::vector<uint64_t> indices;
    indices.reserve(count_bits(bits));
    for (size_t w = 0; w < bits.size(); ++w) {
        uint64_t word = bits[w];
        while (word != 0) {
            const uint64_t index = w * 64 + static_cast<uint64_t>(std::countr_zero(word));
            word &= word - 1;
            if (index < pages) indices.push_back(index);
        }
        bits[w] = 0;
    }
    return out.send_pages(indices, false);
}

}  // namespace popek::migration
