// Page codecs for live migration: one 4 KiB guest page in, one framed,
// checked record out, and back.
//
// A record is an 8-byte header and a payload:
//
//   offset 0  u8   codec on the wire (Codec::None..Codec::Sparse; never Auto)
//   offset 1  u8   flags: bit 0 = kRecordCache (the receiver caches the
//                  decoded page for XBZRLE); bit 1 = kRecordUnchecked (the
//                  check is 0 and not verified); other bits must be zero
//   offset 2  u16  payload length, little-endian
//   offset 4  u32  check: the low 32 bits of page_hash(gpn, decoded page)
//                  XOR (header bytes 0..3 as a little-endian u32) times
//                  0x9E3779B97F4A7C15
//
// The length frames a stream of records; the check covers the header, the
// guest page number and the page the receiver ends up with, so a corrupted
// payload, a wrong codec or flag byte, a page applied to the wrong guest page
// number and an XBZRLE cache that went out of step are all refused, not
// silently accepted. Both ends hand the page's hash back (encode_page,
// decode_page): it is the migration's per-page digest too, so each side
// hashes a page once.
//
// Unchecked records travel only inside compressed frames (PagesZ,
// migration/pages_frame.hpp): there the frame's own check covers the bytes in
// transit and the digest of every page, compared before the destination
// runs, covers the decoding; the 4 bytes of a check are otherwise the part of
// a compressed record that does not compress. decode_page refuses them unless
// its caller says the record came in such a frame.
// Payload lengths per codec: None exactly 4096, Zero 0, Xbzrle 0..4095 (0 =
// unchanged since cached), Wkdm/Zstd/Lz4/Sparse 1..4095 — an encoder whose output
// would not be smaller than the page sends it raw instead.
//
// decode_page() is the one parser of what arrives from the network: it never
// reads or writes out of bounds and refuses anything malformed with an Error.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "base/result.hpp"

namespace popek::migration::compress {

constexpr size_t kPageSize = 4096;
constexpr size_t kRecordHeaderSize = 8;
constexpr size_t kMaxRecordSize = kRecordHeaderSize + kPageSize;
constexpr uint8_t kRecordCache = 0x01;
constexpr uint8_t kRecordUnchecked = 0x02;

using ConstPage = std::span<const uint8_t, kPageSize>;
using MutPage = std::span<uint8_t, kPageSize>;

// The wire value of each codec is its enumerator's value. Auto is a request
// to encode_page (pick per page), never a record's codec.
// Sparse is XBZRLE's format against the all-zero page: the few non-zero
// runs of a mostly empty page (a fresh page with a header, a page table with
// a few entries), a few bytes instead of 4096 and nothing to inflate.
enum class Codec : uint8_t { None = 0, Zero = 1, Wkdm = 2, Xbzrle = 3, Zstd = 4, Lz4 = 5, Sparse = 6, Auto = 7 };
constexpr size_t kWireCodecs = 7;

std::string_view codec_name(Codec c);
// "none", "zero", "wkdm", "xbzrle", "zstd", "lz4", "sparse", "auto" -> Codec; Error otherwise.
base::Result<Codec> parse_codec(std::string_view name);

struct RecordHeader {
    Codec codec = Codec::None;
    uint8_t flags = 0;
    uint16_t payload_size = 0;
    uint32_t check = 0;
    [[nodiscard]] size_t record_size() const { return kRecordHeaderSize + payload_size; }
};

// Reads and validates the header at the front of `stream` (codec, flags and
// the length rules above) and checks the whole record is there. The stream
// may hold more records after it: the next starts at record_size().
base::Result<RecordHeader> read_record_header(std::span<const uint8_t> stream);

class CodecContext;

// Appends one record for guest page `gpn` to `out`, encoded with `codec`
// (Auto: see choose in codec.cpp) or raw when that would not be smaller.
// Returns the codec used. If the context caches sent pages, the record gets
// kRecordCache and the page enters the context's cache. Never fails.
// `hash_out`, if given, receives page_hash(gpn, page).
Codec encode_page(Codec codec, uint64_t gpn, ConstPage page, CodecContext& ctx, std::vector<uint8_t>& out,
                  uint64_t* hash_out = nullptr);

struct EncodedPage {
    std::vector<uint8_t> bytes;  // one record
    Codec codec = Codec::None;
};
EncodedPage encode_page(Codec codec, uint64_t gpn, ConstPage page, CodecContext& ctx);

// Decodes exactly one record (no bytes after it) for guest page `gpn` into
// `out` and, if the record says so, caches the page. On error the context is
// unchanged and `out` holds unspecified bytes.
// `hash_out`, if given, receives page_hash(gpn, decoded page) on success.
// `unchecked_ok`: the record came in a compressed frame (see above).
base::Result<void> decode_page(std::span<const uint8_t> record, uint64_t gpn, MutPage out, CodecContext& ctx,
                               uint64_t* hash_out = nullptr, bool unchecked_ok = false);

// XXH3_64 of the page seeded with its guest page number.
uint64_t page_hash(uint64_t gpn, ConstPage page);
bool is_zero_page(ConstPage page);

}  // namespace popek::migration::compress
