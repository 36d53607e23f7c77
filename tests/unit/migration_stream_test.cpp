// The live-migration stream: frames round-trip; garbage, corruption, foreign
// versions and malformed page batches are refused with clear errors.
#include <sys/socket.h>

#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "migration/compress/context.hpp"
#include "migration/stream.hpp"

namespace popek::migration {
namespace {

using nlohmann::json;

std::string decode_error(const std::vector<uint8_t>& bytes) {
    FrameDecoder d;
    d.feed(bytes);
    auto f = d.next();
    if (!f) return "(needs more bytes)";
    return f->ok() ? "(ok)" : f->error().message;
}

TEST(MigrationStream, FramesRoundTripInPieces) {
    auto a = encode_json_frame(FrameType::RoundEnd, json{{"round", 3}});
    std::vector<uint8_t> payload(5000, 0xab);
    auto b = encode_frame(FrameType::Pages, payload);
    std::vector<uint8_t> all(a);
    all.insert(all.end(), b.begin(), b.end());
    FrameDecoder d;
    for (size_t i = 0; i < all.size(); i += 7) d.feed(std::span<const uint8_t>(all).subspan(i, std::min<size_t>(7, all.size() - i)));
    auto f1 = d.next();
    ASSERT_TRUE(f1 && f1->ok());
    EXPECT_EQ((*f1)->type, FrameType::RoundEnd);
    EXPECT_EQ(frame_json(**f1)->at("round"), 3);
    auto f2 = d.next();
    ASSERT_TRUE(f2 && f2->ok());
    EXPECT_EQ((*f2)->payload, payload);
    EXPECT_FALSE(d.next().has_value());
}

TEST(MigrationStream, RefusesGarbageCorruptionAndHugeFrames) {
    EXPECT_NE(decode_error(std::vector<uint8_t>(16, 'x')).find("bad frame magic"), std::string::npos);
    auto f = encode_frame(FrameType::Pages, std::vector<uint8_t>(100, 1));
    auto bad = f;
    bad[50] ^= 1;
    EXPECT_NE(decode_error(bad).find("checksum mismatch"), std::string::npos);
    bad = f;
    bad[2] = 99;
    EXPECT_NE(decode_error(bad).find("unknown frame type 99"), std::string::npos);
    bad = f;
    bad[3] = 1;
    EXPECT_NE(decode_error(bad).find("flags"), std::string::npos);
    bad = f;
    bad[7] = 0x7f;
    EXPECT_NE(decode_error(bad).find("larger than the limit"), std::string::npos);
}

TEST(MigrationStream, HelloRefusesAnotherProtocolVersion) {
    Hello h{kProtocolVersion, "0.1.0", 100, "zstd", 16, json{{"cpus", 1}}};
    auto ok = hello_from_json(hello_to_json(h));
    ASSERT_TRUE(ok.ok()) << ok.error().message;
    EXPECT_EQ(ok->codec, "zstd");
    json j = hello_to_json(h);
    j["protocol"] = 7;
    auto bad = hello_from_json(j);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message.find("protocol 7"), std::string::npos);
    j = hello_to_json(h);
    j["codec"] = "gzip";
    EXPECT_FALSE(hello_from_json(j).ok());
    j = hello_to_json(h);
    j.erase("config");
    EXPECT_FALSE(hello_from_json(j).ok());
}

TEST(MigrationStream, HelloCarriesTheBackendAndRefusesAnUnknownOne) {
    Hello h{kProtocolVersion, "0.1.0", 100, "none", 16, json{{"cpus", 1}}, 5000, "emu"};
    auto ok = hello_from_json(hello_to_json(h));
    ASSERT_TRUE(ok.ok()) << ok.error().message;
    EXPECT_EQ(ok->backend, "emu");
    json j = hello_to_json(h);
    j.erase("backend");  // an older source: the destination assumes KVM
    ASSERT_TRUE(hello_from_json(j).ok());
    EXPECT_EQ(hello_from_json(j)->backend, "");
    j["backend"] = "hvf";
    auto bad = hello_from_json(j);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message.find("unknown backend 'hvf'"), std::string::npos);
}

TEST(MigrationStream, HelloCarriesTheTimeoutAndRefusesAnAbsurdOne) {
    Hello h{kProtocolVersion, "0.1.0", 100, "none", 16, json{{"cpus", 1}}, 5000};
    auto ok = hello_from_json(hello_to_json(h));
    ASSERT_TRUE(ok.ok()) << ok.error().message;
    EXPECT_EQ(ok->timeout_ms, 5000u);
    json j = hello_to_json(h);
    j.erase("timeout_ms");  // absent: the destination's default
    ASSERT_TRUE(hello_from_json(j).ok());
    EXPECT_EQ(hello_from_json(j)->timeout_ms, 0u);
    j["timeout_ms"] = 5;
    auto bad = hello_from_json(j);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message.find("timeout of 5 ms"), std::string::npos);
    j["timeout_ms"] = "soon";
    EXPECT_FALSE(hello_from_json(j).ok());
}

// A send deadline: a peer that reads nothing fails the send in about the
// deadline instead of blocking it.
TEST(MigrationStream, SendToAPeerThatReadsNothingFailsAtItsDeadline) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    Connection a(sv[0]), b(sv[1]);
    a.set_send_timeout(200);
    std::vector<uint8_t> big(8u << 20, 0x5a);
    const auto t0 = std::chrono::steady_clock::now();
    auto r = a.send(FrameType::Pages, big);
    const auto waited = std::chrono::steady_clock::now() - t0;
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("took nothing for 200 ms"), std::string::npos) << r.error().message;
    EXPECT_LT(waited, std::chrono::seconds(5));
    // The stream may hold half a frame now: every later send fails at once
    // with the same error (a sending thread queued behind the one that timed
    // out does not wait a deadline of its own).
    const auto t1 = std::chrono::steady_clock::now();
    auto again = a.send(FrameType::Pages, std::span<const uint8_t>(big).first(16));
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.error().message, r.error().message);
    EXPECT_LT(std::chrono::steady_clock::now() - t1, std::chrono::milliseconds(100));
}

// A frame larger than the socket buffer goes out in several sendmsg calls
// (header and payload as two parts) and arrives whole.
TEST(MigrationStream, ALargeFrameArrivesWhole) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    Connection a(sv[0]), b(sv[1]);
    std::vector<uint8_t> big(3u << 20);
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 7 + (i >> 12));
    base::Result<void> sent;
    std::thread sender([&] { sent = a.send(FrameType::PagesZ, big); });
    auto f = b.receive(10000);
    sender.join();
    ASSERT_TRUE(sent.ok()) << sent.error().message;
    ASSERT_TRUE(f.ok()) << f.error().message;
    EXPECT_EQ(f->type, FrameType::PagesZ);
    EXPECT_EQ(f->payload, big);
}

TEST(MigrationStream, PageBatchesParseAndRefuseTruncation) {
    compress::CodecContext ctx;
    std::vector<uint8_t> batch;
    std::array<uint8_t, compress::kPageSize> page{};
    page[10] = 7;
    for (uint64_t index : {3ull, 9ull}) {
        for (int i = 0; i < 8; ++i) batch.push_back(static_cast<uint8_t>(index >> (8 * i)));
        compress::encode_page(compress::Codec::Lz4, index, compress::ConstPage(page), ctx, batch);
    }
    std::vector<uint64_t> seen;
    auto n = parse_page_batch(batch, [&](uint64_t index, std::span<const uint8_t>) -> base::Result<void> {
        seen.push_back(index);
        return {};
    });
    ASSERT_TRUE(n.ok()) << n.error().message;
    EXPECT_EQ(seen, (std::vector<uint64_t>{3, 9}));
    batch.pop_back();
    auto cut = parse_page_batch(batch, [](uint64_t, std::span<const uint8_t>) -> base::Result<void> { return {}; });
    EXPECT_FALSE(cut.ok());
}

TEST(MigrationStream, TcpAddresses) {
    auto a = parse_tcp_address("tcp:127.0.0.1:4444");
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->host, "127.0.0.1");
    EXPECT_EQ(a->port, 4444);
    for (const char* bad : {"127.0.0.1:4444", "tcp:127.0.0.1", "tcp::80", "tcp:h:0", "tcp:h:65536", "tcp:h:8x"})
        EXPECT_FALSE(parse_tcp_address(bad).ok()) << bad;
}

}  // namespace
}  // namespace popek::migration
