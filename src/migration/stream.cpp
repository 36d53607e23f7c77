#include "migration/stream.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <xxhash.h>

#include <array>
#include <cerrno>
#include <climits>
#include <charconv>
#include <cstring>

#include "migration/cbor.hpp"
#include "migration/compress/codec.hpp"

namespace popek::migration {

using base::Error;
using base::Result;
using nlohmann::json;

namespace {

uint64_t load_le(const uint8_t* p, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
    return v;
}
void store_le(uint8_t* p, uint64_t v, size_t n) {
    for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t payload_check(const uint8_t* header, std::span<const uint8_t> payload) {
    return XXH3_64bits_withSeed(payload.data(), payload.size(), load_le(header, 8));
}

}  // namespace

const char* frame_type_name(FrameType t) {
    switch (t) {
        case FrameType::Hello: return "hello";
        case FrameType::Reply: return "reply";
        case FrameType::Pages: return "pages";
        case FrameType::RoundEnd: return "round-end";
        case FrameType::State: return "state";
        case FrameType::Abort: return "abort";
        case FrameType::PageRequest: return "page-request";
        case FrameType::Commit: return "commit";
        case FrameType::PagesZ: return "pagesz";
        case FrameType::Resume: return "resume";
    }
    return "unknown";
}

std::array<uint8_t, kFrameHeaderSize> encode_frame_header(FrameType type, std::span<const uint8_t> payload) {
    std::array<uint8_t, kFrameHeaderSize> h{};
    h[0] = 'P';
    h[1] = 'M';
    h[2] = static_cast<uint8_t>(type);
    h[3] = 0;
    store_le(h.data() + 4, payload.size(), 4);
    store_le(h.data() + 8, payload_check(h.data(), payload), 8);
    return h;
}

std::vector<uint8_t> encode_frame(FrameType type, std::span<const uint8_t> payload) {
    const auto h = encode_frame_header(type, payload);
    std::vector<uint8_t> out(h.begin(), h.end());
    out.insert(out.end(), payload.begin(), payload.end());
    return out;
}

std::vector<uint8_t> encode_json_frame(FrameType type, const json& cbor_payload) {
    return encode_frame(type, encode_cbor(cbor_payload));
}

Result<FrameHeader> parse_frame_header(std::span<const uint8_t> b) {
    if (b.size() < kFrameHeaderSize) return Error{"migration stream: short frame header"};
    if (b[0] != 'P' || b[1] != 'M')
        return Error{"migration stream: bad frame magic (not a popek migration stream, or out of step)"};
    if (b[2] < static_cast<uint8_t>(FrameType::Hello) || b[2] > static_cast<uint8_t>(kLastFrameType))
        return Error{"migration stream: unknown frame type " + std::to_string(b[2])};
    if (b[3] != 0) return Error{"migration stream: frame flags " + std::to_string(b[3]) + " are not understood"};
    FrameHeader h{static_cast<FrameType>(b[2]), static_cast<uint32_t>(load_le(b.data() + 4, 4)),
                  load_le(b.data() + 8, 8)};
    if (h.length > kMaxFramePayload)
        return Error{"migration stream: " + std::string(frame_type_name(h.type)) + " frame of " +
                     std::to_string(h.length) + " bytes is larger than the limit (" +
                     std::to_string(kMaxFramePayload) + ")"};
    return h;
}

Result<void> check_payload(std::span<const uint8_t> header, const FrameHeader& h, std::span<const uint8_t> payload) {
    if (payload.size() != h.length || header.size() < kFrameHeaderSize)
        return Error{"migration stream: frame length mismatch"};
    if (payload_check(header.data(), payload) != h.check)
        return Error{"migration stream: checksum mismatch in a " + std::string(frame_type_name(h.type)) +
                     " frame (corrupted in transit)"};
    return {};
}

void FrameDecoder::feed(std::span<const uint8_t> bytes) {
    if (pos_ > 0 && pos_ == buf_.size()) {
        buf_.clear();
        pos_ = 0;
    }
    buf_.insert(buf_.end(), bytes.begin(), bytes.end());
}

std::optional<Result<Frame>> FrameDecoder::next() {
    if (failed_) return Result<Frame>(Error{"migration stream: decoder failed earlier"});
    std::span<const uint8_t> rest(buf_.data() + pos_, buf_.size() - pos_);
    if (rest.size() < kFrameHeaderSize) return std::nullopt;
    auto h = parse_frame_header(rest);
    if (!h) {
        failed_ = true;
        return Result<Frame>(h.error());
    }
    if (rest.size() - kFrameHeaderSize < h->length) return std::nullopt;
    auto payload = rest.subspan(kFrameHeaderSize, h->length);
    if (auto c = check_payload(rest, *h, payload); !c.ok()) {
        failed_ = true;
        return Result<Frame>(c.error());
    }
    Frame f{h->type, std::vector<uint8_t>(payload.begin(), payload.end())};
    pos_ += kFrameHeaderSize + h->length;
    return Result<Frame>(std::move(f));
}

Result<json> frame_json(const Frame& f) {
    auto j = decode_cbor(f.payload);
    if (!j) return j.error().context(std::string("migration stream: ") + frame_type_name(f.type) + " frame");
    if (!j->is_object())
        return Error{std::string("migration stream: ") + frame_type_name(f.type) + " frame is not a map"};
    return j;
}

Result<uint64_t> parse_page_batch(std::span<const uint8_t> payload,
                                  const std::function<Result<void>(uint64_t, std::span<const uint8_t>)>& page) {
    uint64_t count = 0;
    size_t pos = 0;
    while (pos < payload.size()) {
        if (payload.size() - pos < 8) return Error{"migration stream: pages frame ends inside a page index"};
        const uint64_t index = load_le(payload.data() + pos, 8);
        pos += 8;
        auto h = compress::read_record_header(payload.subspan(pos));
        if (!h) return h.error().context("migration stream: page " + std::to_string(index));
        POPEK_TRY(page(index, payload.subspan(pos, h->record_size())));
        pos += h->record_size();
        ++count;
    }
    return count;
}

std::vector<uint8_t> encode_page_request(std::span<const uint64_t> pages) {
    std::vector<uint8_t> out(pages.size() * 8);
    for (size_t i = 0; i < pages.size(); ++i) store_le(out.data() + i * 8, pages[i], 8);
    return out;
}

Result<std::vector<uint64_t>> parse_page_request(std::span<const uint8_t> payload, uint64_t pages) {
    if (payload.empty() || payload.size() % 8 != 0 || payload.size() / 8 > kMaxPageRequest)
        return Error{"migration stream: page request of " + std::to_string(payload.size()) +
                     " bytes (want 1 to " + std::to_string(kMaxPageRequest) + " u64 page indices)"};
    std::vector<uint64_t> out(payload.size() / 8);
    for (size_t i = 0; i < out.size(); ++i) {
        out[i] = load_le(payload.data() + i * 8, 8);
        if (out[i] >= pages)
            return Error{"migration stream: page request for page " + std::to_string(out[i]) + " outside guest RAM (" +
                         std::to_string(pages) + " pages)"};
    }
    return out;
}

json hello_to_json(const Hello& h) {
    return json{{"protocol", h.protocol},       {"popek_version", h.popek_version},
                {"page_size", compress::kPageSize}, {"pages", h.pages},
                {"codec", h.codec},             {"cache_pages", h.cache_pages},
                {"config", h.config},           {"timeout_ms", h.timeout_ms},
                {"backend", h.backend}};
}

Result<Hello> hello_from_json(const json& j) {
    if (!j.is_object()) return Error{"hello: not a map"};
    auto u64 = [&](const char* name) -> Result<uint64_t> {
        auto it = j.find(name);
        const bool ok = it != j.end() && (it->is_number_unsigned() || (it->is_number_integer() && it->get<int64_t>() >= 0));
        if (!ok) return Error{std::string("hello: missing or bad '") + name + "' (want an unsigned integer)"};
        return it->get<uint64_t>();
    };
    auto str = [&](const char* name) -> Result<std::string> {
        auto it = j.find(name);
        if (it == j.end() || !it->is_string()) return Error{std::string("hello: missing or bad '") + name + "'"};
        return it->get<std::string>();
    };
    Hello h;
    POPEK_ASSIGN_OR_RETURN(uint64_t protocol, u64("protocol"));
    POPEK_ASSIGN_OR_RETURN(h.popek_version, str("popek_version"));
    if (protocol != kProtocolVersion)
        return Error{"the source speaks migration protocol " + std::to_string(protocol) + " (popek " +
                     h.popek_version + "); this popek speaks " + std::to_string(kProtocolVersion)};
    h.protocol = kProtocolVersion;
    POPEK_ASSIGN_OR_RETURN(uint64_t page_size, u64("page_size"));
    if (page_size != compress::kPageSize) return Error{"hello: page size " + std::to_string(page_size) + " is not 4096"};
    POPEK_ASSIGN_OR_RETURN(h.pages, u64("pages"));
    POPEK_ASSIGN_OR_RETURN(h.codec, str("codec"));
    if (auto c = compress::parse_codec(h.codec); !c) return c.error().context("hello: codec");
    POPEK_ASSIGN_OR_RETURN(h.cache_pages, u64("cache_pages"));
    if (h.cache_pages > (1u << 20)) return Error{"hello: XBZRLE cache of " + std::to_string(h.cache_pages) + " pages is too large"};
    auto cfg = j.find("config");
    if (cfg == j.end() || !cfg->is_object()) return Error{"hello: missing 'config'"};
    h.config = *cfg;
    if (j.contains("timeout_ms")) {
        POPEK_ASSIGN_OR_RETURN(uint64_t t, u64("timeout_ms"));
        if (t != 0 && (t < kMinTimeoutMs || t > kMaxTimeoutMs))
            return Error{"hello: timeout of " + std::to_string(t) + " ms is outside " + std::to_string(kMinTimeoutMs) +
                         "-" + std::to_string(kMaxTimeoutMs)};
        h.timeout_ms = static_cast<uint32_t>(t);
    }
    if (j.contains("backend")) {
        POPEK_ASSIGN_OR_RETURN(h.backend, str("backend"));
        if (!h.backend.empty() && h.backend != "kvm" && h.backend != "emu")
            return Error{"hello: unknown backend '" + h.backend + "' (want kvm or emu)"};
    }
    return h;
}

// ---- the connection ---------------------------------------------------------

Connection::~Connection() {
    if (fd_ >= 0) ::close(fd_);
}

Connection& Connection::operator=(Connection&& o) noexcept {
    if (this != &o) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = o.fd_;
        send_timeout_ms_ = o.send_timeout_ms_;
        send_error_ = std::move(o.send_error_);
        o.fd_ = -1;
    }
    return *this;
}

void Connection::shutdown() {
    if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

size_t Connection::unsent_bytes() const {
    int n = 0;
    if (fd_ < 0 || ::ioctl(fd_, SIOCOUTQ, &n) != 0 || n < 0) return 0;
    return static_cast<size_t>(n);
}

void Connection::set_send_timeout(uint32_t ms) {
    send_timeout_ms_ = ms;
    if (fd_ >= 0) {
        // A backstop behind the poll deadline: TCP drops a connection whose
        // data goes unacknowledged twice as long.
        unsigned int user_timeout = ms > UINT_MAX / 2 ? ms : 2 * ms;
        ::setsockopt(fd_, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
    }
}

Result<void> Connection::send_raw(std::span<const uint8_t> bytes) { return send_parts(bytes, {}); }

Result<void> Connection::send_parts(std::span<const uint8_t> first, std::span<const uint8_t> second) {
    if (send_error_) return *send_error_;
    auto r = send_once(first, second);
    if (!r.ok()) send_error_ = r.error();
    return r;
}

Result<void> Connection::send_once(std::span<const uint8_t> first, std::span<const uint8_t> second) {
    const size_t total = first.size() + second.size();
    size_t done = 0;
    while (done < total) {
        int flags = MSG_NOSIGNAL;
        if (send_timeout_ms_ > 0) {
            // Wait for room at most the deadline, then queue what fits.
            pollfd p{fd_, POLLOUT, 0};
            const int r = ::poll(&p, 1, static_cast<int>(send_timeout_ms_));
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) return Error::from_errno("migration stream: poll");
            if (r == 0)
                return Error{"migration stream: the peer took nothing for " + std::to_string(send_timeout_ms_) +
                             " ms (link down?)"};
            flags |= MSG_DONTWAIT;
        }
        // One sendmsg for both parts: no copy of the payload behind a header.
        iovec iov[2];
        int parts = 0;
        if (done < first.size())
            iov[parts++] = {const_cast<uint8_t*>(first.data() + done), first.size() - done};
        const size_t in_second = done > first.size() ? done - first.size() : 0;
        if (in_second < second.size())
            iov[parts++] = {const_cast<uint8_t*>(second.data() + in_second), second.size() - in_second};
        msghdr msg{};
        msg.msg_iov = iov;
        msg.msg_iovlen = static_cast<size_t>(parts);
        ssize_t n = ::sendmsg(fd_, &msg, flags);
        if (n < 0 && (errno == EINTR || (send_timeout_ms_ > 0 && (errno == EAGAIN || errno == EWOULDBLOCK)))) continue;
        if (n < 0 && send_timeout_ms_ > 0 &&
            (errno == ETIMEDOUT || errno == ENETUNREACH || errno == EHOSTUNREACH || errno == ENETDOWN)) {
            // TCP gave up first (TCP_USER_TIMEOUT, the backstop), reporting
            // the last routing error it met on the way.
            return Error::from_errno("migration stream: the link to the peer is down (send)");
        }
        if (n <= 0) return Error::from_errno("migration stream: send");
        done += static_cast<size_t>(n);
    }
    return {};
}

Result<void> Connection::send(FrameType type, std::span<const uint8_t> payload) {
    const auto header = encode_frame_header(type, payload);
    return send_parts(header, payload);
}

Result<void> Connection::send_json(FrameType type, const json& cbor_payload) {
    return send_raw(encode_json_frame(type, cbor_payload));
}

Result<void> Connection::read_exact(std::span<uint8_t> out, int timeout_ms) {
    size_t done = 0;
    while (done < out.size()) {
        if (timeout_ms > 0) {
            pollfd p{fd_, POLLIN, 0};
            int r = ::poll(&p, 1, timeout_ms);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) return Error::from_errno("migration stream: poll");
            if (r == 0) return Error{"migration stream: the peer sent nothing for " + std::to_string(timeout_ms) + " ms"};
        }
        ssize_t n = ::recv(fd_, out.data() + done, out.size() - done, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return Error::from_errno("migration stream: receive");
        if (n == 0) return Error{"migration stream: the peer closed the connection"};
        done += static_cast<size_t>(n);
    }
    return {};
}

Result<Frame> Connection::receive(int timeout_ms) {
    uint8_t header[kFrameHeaderSize];
    POPEK_TRY(read_exact(header, timeout_ms));
    POPEK_ASSIGN_OR_RETURN(FrameHeader h, parse_frame_header(header));
    Frame f{h.type, std::vector<uint8_t>(h.length)};
    POPEK_TRY(read_exact(f.payload, timeout_ms));
    POPEK_TRY(check_payload(header, h, f.payload));
    return f;
}

Result<TcpAddress> parse_tcp_address(const std::string& spec) {
    const std::string bad = "'" + spec + "': expected tcp:HOST:PORT";
    if (spec.rfind("tcp:", 0) != 0) return Error{bad};
    const std::string rest = spec.substr(4);
    const auto colon = rest.rfind(':');
    if (colon == std::string::npos || colon == 0) return Error{bad};
    TcpAddress a;
    a.host = rest.substr(0, colon);
    const std::string port = rest.substr(colon + 1);
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535)
        return Error{bad + " (port 1-65535)"};
    a.port = static_cast<uint16_t>(value);
    return a;
}

namespace {

Result<sockaddr_in> resolve(const TcpAddress& a) {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(a.port);
    if (::inet_pton(AF_INET, a.host.c_str(), &sa.sin_addr) == 1) return sa;
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (int rc = ::getaddrinfo(a.host.c_str(), nullptr, &hints, &res); rc != 0 || res == nullptr)
        return Error{"cannot resolve '" + a.host + "': " + ::gai_strerror(rc)};
    sa.sin_addr = reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr;
    ::freeaddrinfo(res);
    return sa;
}

std::string where(const TcpAddress& a) { return a.host + ":" + std::to_string(a.port); }

}  // namespace

Result<Connection> tcp_connect(const TcpAddress& a, int timeout_ms) {
    POPEK_ASSIGN_OR_RETURN(sockaddr_in sa, resolve(a));
    const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0) return Error::from_errno("socket");
    Connection owned(s);
    if (::connect(s, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0) {
        if (errno != EINPROGRESS) return Error::from_errno("connecting to " + where(a));
        pollfd p{s, POLLOUT, 0};
        const int r = ::poll(&p, 1, timeout_ms);
        if (r == 0) return Error{"connecting to " + where(a) + ": timed out"};
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
        if (r < 0 || err != 0) return Error::from_errno("connecting to " + where(a), r < 0 ? errno : err);
    }
    int blocking = 0;  // frames are sent whole; receive() polls for its deadline
    ::ioctl(s, FIONBIO, &blocking);
    int one = 1;
    ::setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return owned;
}

Result<int> tcp_listen(const TcpAddress& a) {
    POPEK_ASSIGN_OR_RETURN(sockaddr_in sa, resolve(a));
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return Error::from_errno("socket");
    int one = 1;
    ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(s, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0 || ::listen(s, 1) != 0) {
        int e = errno;
        ::close(s);
        return Error::from_errno("listening on " + where(a), e);
    }
    return s;
}

Result<Connection> tcp_accept(int listen_fd) {
    for (;;) {
        int s = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (s < 0 && errno == EINTR) continue;
        if (s < 0) return Error::from_errno("accepting the migration connection");
        int one = 1;
        ::setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        return Connection(s);
    }
}

}  // namespace popek::migration
