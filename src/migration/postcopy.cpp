// Post-copy's options, switch rule and digest (see postcopy.hpp).
#include "migration/postcopy.hpp"

#include <xxhash.h>

#include "migration/memory_file.hpp"

namespace popek::migration {

using base::Error;
using base::Result;

Result<PostcopyMode> parse_postcopy_mode(const std::string& s) {
    if (s == "off") return PostcopyMode::Off;
    if (s == "on") return PostcopyMode::On;
    if (s == "auto") return PostcopyMode::Auto;
    return Error{"post-copy mode '" + s + "': expected off, on or auto"};
}

const char* postcopy_mode_name(PostcopyMode m) {
    switch (m) {
        case PostcopyMode::Off: return "off";
        case PostcopyMode::On: return "on";
        case PostcopyMode::Auto: return "auto";
    }
    return "?";
}

std::string postcopy_switch_reason(const PostcopyOptions& o, uint32_t round, uint32_t max_rounds, uint64_t dirty,
                                   uint64_t prev_dirty, bool converged) {
    if (o.mode == PostcopyMode::On) {
        if (round >= o.after_rounds)
            return "post-copy requested after " + std::to_string(o.after_rounds) + " pre-copy round(s)";
        if (converged || round > max_rounds) return "post-copy requested; pre-copy ended early";
        return "";
    }
    if (o.mode != PostcopyMode::Auto || converged) return "";
    if (round > max_rounds) return "pre-copy did not converge within " + std::to_string(max_rounds) + " rounds";
    if (round >= 2 && dirty >= prev_dirty)
        return "pre-copy is not converging: " + std::to_string(dirty) + " dirty pages after " +
               std::to_string(prev_dirty) + " the round before";
    return "";
}

uint64_t page_digest(uint64_t index, const uint8_t* page) {
    if (is_zero_page(page)) return 0;
    return compress::page_hash(index, compress::ConstPage(page, compress::kPageSize));
}

uint64_t page_digest_from_hash(const uint8_t* page, uint64_t hash) { return is_zero_page(page) ? 0 : hash; }

uint64_t combine_page_digests(std::span<const uint64_t> digests) {
    return XXH3_64bits(digests.data(), digests.size_bytes());
}

}  // namespace popek::migration
