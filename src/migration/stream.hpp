// The live-migration stream: versioned, framed, checked, over TCP.
//
// Every frame is a 16-byte header and a payload:
//
//   offset 0  "PM"          2 bytes
//          2  u8 type       FrameType
//          3  u8 flags      0 (other values are refused)
//          4  u32 length    payload bytes, little-endian, <= kMaxFramePayload
//          8  u64 check     XXH3_64(payload, seed = header bytes 0..7 as LE u64)
//
// The first frame each way is a Hello (source) or a Reply (destination)
// whose payload says the protocol version; a peer speaking another version is
// refused by name. Payloads:
//
//   Hello    CBOR map: protocol, popek_version, page_size, pages, codec,
//            cache_pages, config (the VM configuration, JSON form),
//            timeout_ms (optional: how long either side waits for the other)
//   Reply    CBOR map: ok (bool), error (string, when not ok), and extras
//            (the destination's digest in its commit reply)
//   Pages    records back to back: u64 page index (LE; pages of the guest-RAM
//            RAM layout) then one page record (migration/compress/codec.hpp)
//   RoundEnd CBOR map: round, pages — the source finished a round; the
//            destination answers a Reply (ok, round, applied: pages applied
//            so far) once it applied the round, and the source waits for it
//   State    CBOR map: state (the snapshot state tree), digest, pages —
//            stop-and-copy's last frame: the source is paused
//   Abort    CBOR map: error — the sender gives up; the peer stops too
//   PageRequest  (destination -> source, post-copy) u64 page indices (LE)
//            the destination's vCPUs or devices are waiting for
//   Commit   CBOR map (empty): the source's last word — it let go of the VM
//   PagesZ   a Pages payload compressed in its sender lane's zstd stream
//            (migration/pages_frame.hpp): codecs zstd and auto send these
//   Resume   CBOR map: token — the first frame of a new connection by which
//            the source takes a post-copy migration back after its link was
//            lost (see below); the destination answers a Reply
//
// The end of pre-copy is a three-step handshake: after the State frame the
// destination validates and builds the VM and answers a Reply with ready:
// true (and its digest); the source answers Commit and from then on never
// resumes; the destination runs the VM only once the Commit arrives, and
// without it (within the timeout) exits without running it. So a lost
// message never leaves the VM running on both sides; a Commit sent and then
// lost (or a destination dying after it) leaves it running on neither —
// the two-generals limit no protocol over one lossy link can avoid.
//
// Post-copy (migration/postcopy.hpp) reuses the others: its State frame
// carries postcopy: true and `needed` (a bitmap, u64 LE words, of the pages
// the destination must take from the source rather than its pre-copy copy);
// after it the destination answers a Reply with running: true, Pages frames
// carry only needed pages, and a RoundEnd with postcopy_end: true and the
// source's page digest ends them; the destination's commit Reply follows.
// The State frame also carries resume_token (u64) and recover_ms: when the
// link is lost (or a frame is damaged) after the switch, the destination,
// still listening on its address, waits up to recover_ms for a new
// connection whose Resume frame carries that token, and answers a Reply
// with ok, running (whether it announced running) and `arrived` (a bitmap
// like `needed` of the pages it placed); it asks again for the pages its
// vCPUs still wait on, and the source sends every needed page not arrived.
//
// FrameDecoder and parse_page_batch are the one reader of these bytes (the
// fuzz target fuzz_migration_stream drives them).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/result.hpp"

namespace popek::migration {

// 2: the commit handshake (Reply ready, then Commit) and the hello's timeout.
// 3: PagesZ frames; a record's check covers its page number.
// 4: post-copy recovery (Resume frames, resume_token in the switch).
constexpr uint32_t kProtocolVersion = 4;
constexpr size_t kFrameHeaderSize = 16;
constexpr uint32_t kMaxFramePayload = 32u << 20;
// A Pages frame is cut at this many bytes (a few hundred pages).
constexpr size_t kPagesFrameTarget = 1u << 20;

enum class FrameType : uint8_t {
    Hello = 1,
    Reply = 2,
    Pages = 3,
    RoundEnd = 4,
    State = 5,
    Abort = 6,
    PageRequest = 7,
    Commit = 8,
    PagesZ = 9,
    Resume = 10,
};
constexpr FrameType kLastFrameType = FrameType::Resume;
// A PageRequest frame holds at most this many indices.
constexpr size_t kMaxPageRequest = 4096;
const char* frame_type_name(FrameType t);

struct Frame {
    FrameType type = FrameType::Abort;
    std::vector<uint8_t> payload;
};

// Header + payload, ready to send.
std::vector<uint8_t> encode_frame(FrameType type, std::span<const uint8_t> payload);
std::array<uint8_t, kFrameHeaderSize> encode_frame_header(FrameType type, std::span<const uint8_t> payload);
std::vector<uint8_t> encode_json_frame(FrameType type, const nlohmann::json& cbor_payload);

struct FrameHeader {
    FrameType type;
    uint32_t length;
    uint64_t check;
};
// Checks magic, type, flags and length; the payload's check is verified by
// check_payload once it has arrived.
base::Result<FrameHeader> parse_frame_header(std::span<const uint8_t> bytes);
base::Result<void> check_payload(std::span<const uint8_t> header, const FrameHeader& h,
                                 std::span<const uint8_t> payload);

// Decodes frames from bytes as they arrive (tests, the fuzzer): feed() then
// next() until it returns nullopt (needs more bytes). After an error the
// decoder stays failed.
class FrameDecoder {
public:
    void feed(std::span<const uint8_t> bytes);
    std::optional<base::Result<Frame>> next();

private:
    std::vector<uint8_t> buf_;
    size_t pos_ = 0;
    bool failed_ = false;
};

// A frame's CBOR payload as a JSON object (decode_cbor, then "is a map").
base::Result<nlohmann::json> frame_json(const Frame& f);

// Walks a Pages payload: calls `page(index, record)` for each entry; each
// record's header and length are checked (read_record_header) before the call.
// Stops at the first error the callback returns.
base::Result<uint64_t> parse_page_batch(std::span<const uint8_t> payload,
                                        const std::function<base::Result<void>(uint64_t, std::span<const uint8_t>)>& page);

// A PageRequest payload: each index checked against `pages`.
std::vector<uint8_t> encode_page_request(std::span<const uint64_t> pages);
base::Result<std::vector<uint64_t>> parse_page_request(std::span<const uint8_t> payload, uint64_t pages);

// What the source announces.
struct Hello {
    uint32_t protocol = kProtocolVersion;
    std::string popek_version;
    uint64_t pages = 0;          // guest RAM in 4 KiB pages
    std::string codec;           // compress::parse_codec name
    uint64_t cache_pages = 0;    // XBZRLE cache size both ends use
    nlohmann::json config;       // vmm::VmConfig as JSON; the VMM decodes it
    uint32_t timeout_ms = 0;     // the peers' deadline for a frame (0: absent, kDefaultTimeoutMs)
    std::string backend{};       // what runs the VM at the source: "kvm", "emu" ("" absent: assume kvm)
};
// A peer that takes or sends nothing for this long is gone (the source's
// --timeout-ms; the destination uses the one the hello carries).
constexpr uint32_t kDefaultTimeoutMs = 30000;
constexpr uint32_t kMinTimeoutMs = 100;
constexpr uint32_t kMaxTimeoutMs = 3600000;
nlohmann::json hello_to_json(const Hello& h);
// Refuses another protocol version, another page size, missing or mistyped fields.
base::Result<Hello> hello_from_json(const nlohmann::json& j);

// A TCP connection carrying frames. Blocking; close() from another thread
// (shutdown(2)) makes a blocked send or receive return an error.
class Connection {
public:
    Connection() = default;
    explicit Connection(int fd) : fd_(fd) {}
    ~Connection();
    Connection(Connection&& o) noexcept
        : fd_(o.fd_), send_timeout_ms_(o.send_timeout_ms_), send_error_(std::move(o.send_error_)) {
        o.fd_ = -1;
    }
    Connection& operator=(Connection&& o) noexcept;
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    [[nodiscard]] bool valid() const { return fd_ >= 0; }
    // The socket, for shutdown(2) from another thread (post-copy recovery).
    [[nodiscard]] int native_handle() const { return fd_; }
    // A send deadline: a send that can queue nothing for `ms` fails (a dead
    // link fails the migration instead of blocking until TCP gives up, ~15
    // min); TCP_USER_TIMEOUT (twice that) is the backstop. 0: none (the default).
    void set_send_timeout(uint32_t ms);
    // Sends fail for good after the first failure (the stream may hold half
    // a frame): each later send returns that first error at once, so
    // threads queued behind a send that timed out do not wait again.
    base::Result<void> send(FrameType type, std::span<const uint8_t> payload);
    base::Result<void> send_json(FrameType type, const nlohmann::json& cbor_payload);
    base::Result<void> send_raw(std::span<const uint8_t> bytes);
    // Waits at most timeout_ms (0: forever) for a whole frame.
    base::Result<Frame> receive(int timeout_ms);
    void shutdown();
    // Bytes sent but not yet acknowledged by the peer (SIOCOUTQ); post-copy
    // keeps this small so a requested page does not queue behind pushed ones.
    [[nodiscard]] size_t unsent_bytes() const;

private:
    base::Result<void> read_exact(std::span<uint8_t> out, int timeout_ms);
    base::Result<void> send_parts(std::span<const uint8_t> first, std::span<const uint8_t> second);
    base::Result<void> send_once(std::span<const uint8_t> first, std::span<const uint8_t> second);
    int fd_ = -1;
    uint32_t send_timeout_ms_ = 0;
    std::optional<base::Error> send_error_;
};

// "tcp:HOST:PORT" (HOST an IPv4 address or name, PORT 1-65535).
struct TcpAddress {
    std::string host;
    uint16_t port = 0;
};
base::Result<TcpAddress> parse_tcp_address(const std::string& spec);
base::Result<Connection> tcp_connect(const TcpAddress& a, int timeout_ms);
// Binds and listens; returns the listening socket's fd.
base::Result<int> tcp_listen(const TcpAddress& a);
base::Result<Connection> tcp_accept(int listen_fd);

}  // namespace popek::migration
