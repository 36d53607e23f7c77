// libFuzzer target: the migration page-record decoder (what a destination
// trusts least), and encode -> decode round trips of fuzzer-made pages.
//
// Input layout:
//   [0]     mode (low 2 bits) and guest page number (bits 2..4)
//           0: the rest is one record for decode_page
//           1: the rest is a stream of records, decoded one after another
//              for page numbers 0, 1, 2, ...
//           2, 3: the rest is a page P (zero-padded to 4 KiB), then
//              (u16 offset, u8 value) edits that make a page Q; P is sent,
//              then Q, with every codec: each must decode to the same page
// The receiver's XBZRLE cache holds pages 0..3 (zero, text, small integers,
// random) at the start of each input.
//
// Whatever the input: decoding returns an Error or a page, never crashes or
// touches memory outside the record and the page; every encoded record is
// well framed and decodes back to its page.
#include "fuzz_common.hpp"

#include <array>
#include <cstring>
#include <vector>

#include "migration/compress/codec.hpp"
#include "migration/compress/context.hpp"

namespace {

using namespace popek::migration::compress;
using popek::fuzz::check;
using Page = std::array<uint8_t, kPageSize>;

struct State {
    CodecContext sender{CodecOptions{.cache_pages = 8}};
    CodecContext receiver{CodecOptions{.cache_pages = 8}};
    std::array<Page, 4> cached{};
    Page out{};

    State() {
        for (size_t i = 0; i < kPageSize; ++i) {
            cached[1][i] = static_cast<uint8_t>("migrating pages "[i % 16]);
            cached[2][i] = i % 4 == 0 ? static_cast<uint8_t>(i / 4 % 200) : 0;
            cached[3][i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
        }
    }
    void reset() {
        sender.cache().clear();
        receiver.cache().clear();
        for (uint64_t gpn = 0; gpn < cached.size(); ++gpn) receiver.cache().insert(gpn, cached[gpn]);
    }
};

void round_trip(State& s, uint64_t gpn, const Page& page) {
    constexpr Codec kCodecs[] = {Codec::None, Codec::Zero, Codec::Wkdm, Codec::Xbzrle,
                                 Codec::Zstd, Codec::Lz4,  Codec::Sparse, Codec::Auto};
    for (Codec codec : kCodecs) {
        const EncodedPage e = encode_page(codec, gpn, page, s.sender);
        check(e.codec == codec || e.codec == Codec::None || codec == Codec::Auto ||
              (codec == Codec::Sparse && e.codec == Codec::Zero));
        auto h = read_record_header(e.bytes);
        check(h.ok() && h->record_size() == e.bytes.size() && h->codec == e.codec);
        auto r = decode_page(e.bytes, gpn, s.out, s.receiver);
        check(r.ok() && s.out == page);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static State s;
    if (size < 1) return 0;
    s.reset();
    const uint8_t mode = data[0] & 3;
    const uint64_t gpn = (data[0] >> 2) & 7;
    const bool unchecked_ok = (data[0] & 0x80) != 0;  // as inside a compressed frame
    std::span<const uint8_t> rest{data + 1, size - 1};

    if (mode == 0) {
        (void)decode_page(rest, gpn, s.out, s.receiver, nullptr, unchecked_ok);
    } else if (mode == 1) {
        for (uint64_t n = 0; !rest.empty(); ++n) {
            auto h = read_record_header(rest);
            if (!h) break;
            check(h->record_size() <= rest.size());
            (void)decode_page(rest.first(h->record_size()), n % 8, s.out, s.receiver, nullptr, unchecked_ok);
            rest = rest.subspan(h->record_size());
        }
    } else {
        Page p{};
        const size_t n = std::min(rest.size(), kPageSize);
        std::memcpy(p.data(), rest.data(), n);
        Page q = p;
        for (size_t i = n; i + 3 <= rest.size(); i += 3) {
            q[static_cast<size_t>(rest[i] | rest[i + 1] << 8) % kPageSize] = rest[i + 2];
        }
        round_trip(s, gpn, p);
        round_trip(s, gpn, q);
    }
    return 0;
}
