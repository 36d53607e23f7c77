// libFuzzer target: the live-migration stream as a destination reads it —
// frames (FrameDecoder: magic, type, flags, length, checksum), then each
// frame's payload the way receive_vm treats it: Hello and other CBOR maps
// (frame_json, hello_from_json) and Pages batches (parse_page_batch, then
// decode_page of each record into a 16-page guest RAM), PagesZ frames
// inflated first (PagesInflater).
//
// The input is fed to the decoder in pieces whose sizes come from its first
// byte, so partial frames are exercised too. Frame checksums would stop the
// fuzzer at the first frame; with the first byte's top bit set, the input
// (after byte 0) is instead split into "type, u16 length, payload" chunks
// that are framed properly here, so payload parsers get fuzzed behind valid
// frames. Whatever the input: an Error or a frame, never a crash or a read
// outside the input.
#include "fuzz_common.hpp"

#include <array>
#include <vector>

#include "migration/compress/context.hpp"
#include "migration/pages_frame.hpp"
#include "migration/stream.hpp"

namespace {

using namespace popek::migration;
using popek::fuzz::check;

constexpr uint64_t kPages = 16;

void handle(const Frame& f, compress::CodecContext& ctx, std::vector<uint8_t>& ram, PagesInflater& inflater) {
    switch (f.type) {
        case FrameType::Pages:
        case FrameType::PagesZ: {
            std::span<const uint8_t> pages = f.payload;
            if (f.type == FrameType::PagesZ) {
                auto inflated = inflater.inflate(f.payload);
                if (!inflated.ok()) break;
                check(inflated->size() < kMaxInflatedPages);
                pages = *inflated;
            }
            (void)parse_page_batch(pages, [&](uint64_t index, std::span<const uint8_t> record) -> popek::base::Result<void> {
                if (index >= kPages) return popek::base::Error{"outside"};
                std::array<uint8_t, compress::kPageSize> page;
                POPEK_TRY(compress::decode_page(record, index, compress::MutPage(page), ctx, nullptr,
                                                f.type == FrameType::PagesZ));
                std::copy(page.begin(), page.end(), ram.begin() + static_cast<long>(index * compress::kPageSize));
                return {};
            });
            break;
        }
        case FrameType::Hello: {
            auto j = frame_json(f);
            if (j.ok()) (void)hello_from_json(*j);
            break;
        }
        case FrameType::PageRequest: {  // post-copy, read by the source
            auto r = parse_page_request(f.payload, kPages);
            if (r.ok())
                for (uint64_t p : *r) check(p < kPages);
            break;
        }
        default: {
            auto j = frame_json(f);
            if (j.ok()) check(j->is_object());
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    compress::CodecContext ctx(compress::CodecOptions{.cache_pages = 8});
    std::vector<uint8_t> ram(kPages * compress::kPageSize);
    PagesInflater inflater;
    FrameDecoder d;
    const uint8_t mode = data[0];
    std::span<const uint8_t> rest(data + 1, size - 1);
    if ((mode & 0x80) != 0) {
        std::vector<uint8_t> framed;
        while (rest.size() >= 3) {
            const auto type = static_cast<FrameType>(1 + rest[0] % static_cast<uint8_t>(kLastFrameType));
            size_t len = static_cast<size_t>(rest[1]) | static_cast<size_t>(rest[2]) << 8;
            rest = rest.subspan(3);
            len = std::min(len, rest.size());
            auto f = encode_frame(type, rest.subspan(0, len));
            framed.insert(framed.end(), f.begin(), f.end());
            rest = rest.subspan(len);
        }
        d.feed(framed);
    } else {
        const size_t piece = 1 + (mode & 0x3f);
        for (size_t i = 0; i < rest.size(); i += piece) {
            d.feed(rest.subspan(i, std::min(piece, rest.size() - i)));
            while (auto f = d.next()) {
                if (!f->ok()) return 0;
                handle(**f, ctx, ram, inflater);
            }
        }
        return 0;
    }
    while (auto f = d.next()) {
        if (!f->ok()) break;
        handle(**f, ctx, ram, inflater);
    }
    return 0;
}
