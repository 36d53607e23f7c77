#include "migration/cbor.hpp"

#include <new>
#include <string>

namespace popek::migration {

using base::Error;
using base::Result;

namespace {

struct Frame {
    uint64_t remaining;  // items still to come (definite length)
    bool indefinite;     // ends at a break byte instead
};

// Walks the item headers without building anything: the nesting depth stays
// within kMaxCborDepth, every declared length fits in the bytes that are left,
// and the input is exactly one item.
Result<void> check_structure(std::span<const uint8_t> in) {
    std::vector<Frame> stack;
    size_t pos = 0;
    bool done = false;
    auto fail = [&](const std::string& what) { return Error{"CBOR: " + what + " at byte " + std::to_string(pos)}; };
    auto finish_item = [&] {
        while (!stack.empty()) {
            Frame& f = stack.back();
            if (f.indefinite || --f.remaining > 0) return;
            stack.pop_back();
        }
        done = true;
    };
    while (!done) {
        if (pos >= in.size()) return fail("truncated");
        const uint8_t initial = in[pos++];
        const unsigned type = initial >> 5;
        const unsigned info = initial & 0x1f;
        if (initial == 0xff) {  // break
            if (stack.empty() || !stack.back().indefinite) return fail("unexpected break");
            stack.pop_back();
            finish_item();
            continue;
        }
        uint64_t arg = info;
        bool indefinite = false;
        if (info >= 24 && info <= 27) {
            const size_t n = size_t{1} << (info - 24);
            if (in.size() - pos < n) return fail("truncated");
            arg = 0;
            for (size_t i = 0; i < n; i++) arg = (arg << 8) | in[pos++];
        } else if (info == 31 && type >= 2 && type <= 5) {
            indefinite = true;
        } else if (info >= 28) {
            return fail("malformed header");
        }
        const uint64_t left = in.size() - pos;
        switch (type) {
            case 0: case 1: case 7:
                finish_item();
                break;
            case 2: case 3:
                if (indefinite) {
                    stack.push_back({0, true});
                } else {
                    if (arg > left) return fail("string longer than the input");
                    pos += static_cast<size_t>(arg);
                    finish_item();
                }
                break;
            case 4: case 5: {
                if (indefinite) {
                    stack.push_back({0, true});
                    break;
                }
                if (arg > left) return fail("more entries declared than the input holds");  // each takes a byte at least
                const uint64_t items = type == 5 ? arg * 2 : arg;
                if (items == 0) finish_item();
                else stack.push_back({items, false});
                break;
            }
            default:  // 6: a tag, then the item it tags
                stack.push_back({1, false});
                break;
        }
        if (stack.size() > kMaxCborDepth) return fail("nested deeper than " + std::to_string(kMaxCborDepth));
    }
    if (pos != in.size()) return fail("bytes after the item");
    return {};
}

}  // namespace

std::vector<uint8_t> encode_cbor(const nlohmann::json& j) { return nlohmann::json::to_cbor(j); }

Result<nlohmann::json> decode_cbor(std::span<const uint8_t> bytes) {
    POPEK_TRY(check_structure(bytes));
    try {
        nlohmann::json j = nlohmann::json::from_cbor(bytes.begin(), bytes.end(), true, /*allow_exceptions=*/false);
        if (j.is_discarded()) return Error{"CBOR: not well-formed (or uses tags or simple values a state has no use for)"};
        return j;
    } catch (const nlohmann::json::exception& e) {
        return Error{std::string("CBOR: ") + e.what()};
    } catch (const std::bad_alloc&) {
        return Error{"CBOR: out of memory"};
    }
}

}  // namespace popek::migration
