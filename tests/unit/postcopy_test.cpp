// Post-copy's pieces without a VM: the switch rule, page requests, the
// digest, and the destination's userfaultfd machinery against a hand-driven
// source on a socket pair (a thread touching a missing page blocks until
// the page arrives; a lost source releases it with an error, never a hang).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include <gtest/gtest.h>

#include "migration/compress/context.hpp"
#include "migration/postcopy.hpp"

namespace popek::migration {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

TEST(PostcopyRule, OnSwitchesAfterTheRequestedRounds) {
    const PostcopyOptions on{PostcopyMode::On, 2};
    EXPECT_EQ(postcopy_switch_reason(on, 1, 30, 100, 0, false), "");
    EXPECT_NE(postcopy_switch_reason(on, 2, 30, 100, 100, false), "");
    EXPECT_NE(postcopy_switch_reason(on, 1, 30, 1, 0, true), "") << "a mode: converging early still switches";
    EXPECT_TRUE(postcopy_before_precopy({PostcopyMode::On, 0}));
    EXPECT_FALSE(postcopy_before_precopy({PostcopyMode::Auto, 0}));
}

TEST(PostcopyRule, AutoSwitchesOnlyWhenPrecopyDoesNotConverge) {
    const PostcopyOptions a{PostcopyMode::Auto, 1};
    EXPECT_EQ(postcopy_switch_reason(a, 1, 30, 5000, 0, false), "");
    EXPECT_EQ(postcopy_switch_reason(a, 2, 30, 4000, 5000, false), "") << "shrinking: keep going";
    EXPECT_NE(postcopy_switch_reason(a, 3, 30, 4000, 4000, false).find("not converging"), std::string::npos);
    EXPECT_NE(postcopy_switch_reason(a, 31, 30, 10, 20, false).find("30 rounds"), std::string::npos);
    EXPECT_EQ(postcopy_switch_reason(a, 31, 30, 10, 20, true), "") << "converged: stop-and-copy";
    EXPECT_EQ(postcopy_switch_reason({}, 31, 30, 10, 10, false), "") << "off";
    EXPECT_FALSE(parse_postcopy_mode("sometimes").ok());
    EXPECT_EQ(*parse_postcopy_mode("auto"), PostcopyMode::Auto);
}

TEST(PostcopyStream, PageRequestsRoundTripAndAreChecked) {
    const uint64_t want[] = {0, 7, 4095};
    auto bytes = encode_page_request(want);
    auto back = parse_page_request(bytes, 4096);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, std::vector<uint64_t>(std::begin(want), std::end(want)));
    EXPECT_NE(parse_page_request(bytes, 4095).error().message.find("outside guest RAM"), std::string::npos);
    EXPECT_FALSE(parse_page_request({}, 10).ok());
    bytes.pop_back();
    EXPECT_FALSE(parse_page_request(bytes, 4096).ok());
}

TEST(PostcopyDigest, ZeroPagesCountAsAbsentAndIndexMatters) {
    std::vector<uint8_t> page(4096, 0);
    EXPECT_EQ(page_digest(3, page.data()), 0u);
    page[100] = 1;
    EXPECT_NE(page_digest(3, page.data()), 0u);
    EXPECT_NE(page_digest(3, page.data()), page_digest(4, page.data()));
    std::vector<uint64_t> a{1, 2, 3}, b{1, 3, 2};
    EXPECT_NE(combine_page_digests(a), combine_page_digests(b));
}

// A source played by the test over one end of a socket pair.
struct Pair {
    static constexpr uint64_t kPages = 64;
    memory::GuestMemory mem;
    Connection src, dst;
    std::vector<uint64_t> needed = std::vector<uint64_t>(1, 0);
    std::vector<uint64_t> digests = std::vector<uint64_t>(kPages, 0);
    std::vector<std::array<uint8_t, 4096>> truth = std::vector<std::array<uint8_t, 4096>>(kPages);

    Pair() {
        const memory::RamRange r{0, kPages * 4096};
        mem = std::move(memory::GuestMemory::create(std::span(&r, 1))).value();
        int sv[2];
        EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        src = Connection(sv[0]);
        dst = Connection(sv[1]);
        uint8_t* base = mem.regions().front().host;
        for (uint64_t p = 0; p < kPages; ++p) {
            truth[p].fill(static_cast<uint8_t>(p + 1));
            if (p % 2 == 0) {
                needed[0] |= 1ull << p;  // even pages come in post-copy; the copy here is stale
                std::memset(base + p * 4096, 0xee, 4096);
                digests[p] = page_digest(p, base + p * 4096);
            } else if (p < 40) {
                std::memcpy(base + p * 4096, truth[p].data(), 4096);  // kept from "pre-copy"
                digests[p] = page_digest(p, truth[p].data());
            } else {
                truth[p].fill(0);  // never sent: zero here and there
            }
        }
    }
    void send_page(uint64_t p) {
        compress::CodecContext ctx;
        std::vector<uint8_t> batch;
        for (int i = 0; i < 8; ++i) batch.push_back(static_cast<uint8_t>(p >> (8 * i)));
        compress::encode_page(compress::Codec::None, p, compress::ConstPage(truth[p]), ctx, batch);
        ASSERT_TRUE(src.send(FrameType::Pages, batch).ok());
    }
    uint64_t source_digest() {
        std::vector<uint64_t> d(kPages);
        for (uint64_t p = 0; p < kPages; ++p) d[p] = page_digest(p, truth[p].data());
        return combine_page_digests(d);
    }
};

TEST(PostcopyIncoming, MissingPagesAreRequestedAndPlacedThenTheDigestIsChecked) {
    Pair p;
    auto pc = PostcopyIncoming::start(p.mem, p.dst, p.needed, p.digests, 0);
    ASSERT_TRUE(pc.ok()) << pc.error().message;
    const uint8_t* base = p.mem.regions().front().host;
    EXPECT_EQ(base[1 * 4096], 2) << "kept pages stay";
    EXPECT_EQ(base[41 * 4096], 0) << "a hole outside the needed set reads as zeros";

    // A reader of page 10 blocks until the page comes; it asked for it.
    std::atomic<int> seen{-1};
    std::thread reader([&] { seen = base[10 * 4096 + 5]; });
    auto req = p.src.receive(5000);
    ASSERT_TRUE(req.ok()) << req.error().message;
    ASSERT_EQ(req->type, FrameType::PageRequest);
    auto pages = parse_page_request(req->payload, Pair::kPages);
    ASSERT_TRUE(pages.ok());
    EXPECT_EQ(*pages, std::vector<uint64_t>{10});
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(seen.load(), -1) << "read the stale copy instead of waiting";
    p.send_page(10);
    reader.join();
    EXPECT_EQ(seen.load(), 11);

    for (uint64_t i = 0; i < Pair::kPages; i += 2) p.send_page(i);  // 10 again: a duplicate is dropped
    ASSERT_TRUE(p.src.send_json(FrameType::RoundEnd, json{{"postcopy_end", true}, {"digest", p.source_digest()}}).ok());
    auto reply = p.src.receive(5000);
    ASSERT_TRUE(reply.ok()) << reply.error().message;
    ASSERT_EQ(reply->type, FrameType::Reply);
    auto j = frame_json(*reply);
    EXPECT_TRUE(j->value("ok", false)) << j->dump();
    EXPECT_EQ(j->value("digest", 0ull), p.source_digest());
    EXPECT_TRUE((*pc)->wait_complete(5s));
    const auto fig = (*pc)->figures();
    EXPECT_EQ(fig.needed, 32u);
    EXPECT_EQ(fig.received, 32u);
    EXPECT_EQ(fig.requested, 1u);
    for (uint64_t i = 0; i < Pair::kPages; ++i) EXPECT_EQ(std::memcmp(base + i * 4096, p.truth[i].data(), 4096), 0) << i;
}

TEST(PostcopyIncoming, AWrongDigestIsAnError) {
    Pair p;
    auto pc = PostcopyIncoming::start(p.mem, p.dst, p.needed, p.digests, 0);
    ASSERT_TRUE(pc.ok());
    for (uint64_t i = 0; i < Pair::kPages; i += 2) p.send_page(i);
    ASSERT_TRUE(p.src.send_json(FrameType::RoundEnd, json{{"postcopy_end", true}, {"digest", 12345u}}).ok());
    auto f = p.src.receive(5000);
    ASSERT_TRUE(f.ok());
    EXPECT_EQ(f->type, FrameType::Abort);
    EXPECT_FALSE((*pc)->wait_complete(5s));
    EXPECT_NE((*pc)->failure().find("digest"), std::string::npos);
}

TEST(PostcopyIncoming, LosingTheSourceReleasesWaitersWithAnError) {
    Pair p;
    auto pc = PostcopyIncoming::start(p.mem, p.dst, p.needed, p.digests, 0);
    ASSERT_TRUE(pc.ok());
    std::string why;
    std::atomic<bool> told{false};
    (*pc)->on_failure([&](const std::string& w) {
        why = w;
        told = true;
    });
    const uint8_t* base = p.mem.regions().front().host;
    std::thread reader([&] { (void)*static_cast<const volatile uint8_t*>(base + 20 * 4096); });
    ASSERT_TRUE(p.src.receive(5000).ok());  // its request
    p.src.shutdown();                         // the source is gone
    reader.join();                            // released, not stuck
    EXPECT_FALSE((*pc)->wait_complete(5s));
    EXPECT_TRUE(told.load());
    EXPECT_NE(why.find("lost the source"), std::string::npos) << why;
}

// ---- recovery: the source comes back on the listening socket -----------------

// A listening socket on loopback and its port.
struct Listener {
    base::UniqueFd fd;
    TcpAddress addr{"127.0.0.1", 0};
    Listener() {
        auto l = tcp_listen(addr);
        EXPECT_TRUE(l.ok());
        fd = base::UniqueFd(l.ok() ? *l : -1);
        sockaddr_in sa{};
        socklen_t len = sizeof sa;
        EXPECT_EQ(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sa), &len), 0);
        addr.port = ntohs(sa.sin_port);
    }
};

// The destination's side of `p`, taking a lost source back on `l` within `window_ms`.
std::unique_ptr<PostcopyIncoming> start_recoverable(Pair& p, Listener& l, uint64_t token, uint32_t window_ms) {
    auto pc = PostcopyIncoming::start(p.mem, p.dst, p.needed, p.digests, 0,
                                      PostcopyRecovery{std::move(l.fd), token, window_ms, 5000});
    EXPECT_TRUE(pc.ok()) << pc.error().message;
    return pc.ok() ? std::move(pc).value() : nullptr;
}

// Connects and says resume with `token`; the destination's answer.
json resume(const TcpAddress& addr, uint64_t token, Connection& out) {
    auto c = tcp_connect(addr, 5000);
    EXPECT_TRUE(c.ok()) << c.error().message;
    if (!c) return json();
    out = std::move(*c);
    EXPECT_TRUE(out.send_json(FrameType::Resume, json{{"token", token}}).ok());
    auto f = out.receive(5000);
    EXPECT_TRUE(f.ok()) << f.error().message;
    if (!f) return json();
    EXPECT_EQ(f->type, FrameType::Reply);
    auto j = frame_json(*f);
    return j.ok() ? *j : json();
}

std::vector<uint64_t> bitmap_of(const json& reply) {
    std::vector<uint64_t> w;
    if (!reply.contains("arrived") || !reply["arrived"].is_binary()) return w;
    const auto& b = reply["arrived"].get_binary();
    w.assign(b.size() / 8, 0);
    for (size_t i = 0; i < b.size(); ++i) w[i / 8] |= static_cast<uint64_t>(b[i]) << (8 * (i % 8));
    return w;
}

// The link drops with a vCPU waiting on page 10 and two pages placed: a
// stranger and a wrong token are refused; the source with the switch's
// token gets the pages that arrived, the request for page 10 again, and
// post-copy ends normally on the new link.
TEST(PostcopyIncoming, ALostSourceComesBackWithItsTokenAndPostcopyFinishes) {
    Pair p;
    Listener l;
    auto pc = start_recoverable(p, l, 42, 2000);
    ASSERT_NE(pc, nullptr);
    bool failed = false;
    pc->on_failure([&](const std::string&) { failed = true; });
    const uint8_t* base = p.mem.regions().front().host;
    std::atomic<int> seen{-1};
    std::thread reader([&] { seen = base[10 * 4096 + 5]; });
    auto req = p.src.receive(5000);
    ASSERT_TRUE(req.ok()) << req.error().message;
    ASSERT_EQ(req->type, FrameType::PageRequest);
    p.send_page(0);
    p.send_page(2);
    ASSERT_TRUE(pc->announce_running().ok());
    // Both placed before the link goes (a page each way is in order).
    for (auto t0 = std::chrono::steady_clock::now();
         pc->figures().received < 2 && std::chrono::steady_clock::now() - t0 < 5s;)
        std::this_thread::sleep_for(1ms);
    ASSERT_EQ(pc->figures().received, 2u);
    p.src.shutdown();  // the link is lost

    Connection stranger;
    auto c = tcp_connect(l.addr, 5000);
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE(c->send_json(FrameType::Hello, json{{"protocol", kProtocolVersion}}).ok());
    auto no = c->receive(5000);
    ASSERT_TRUE(no.ok());
    EXPECT_FALSE(frame_json(*no)->value("ok", true)) << "a new migration is refused during post-copy";
    const json wrong = resume(l.addr, 41, stranger);
    EXPECT_FALSE(wrong.value("ok", true)) << wrong.dump();
    EXPECT_NE(wrong.value("error", std::string()).find("token"), std::string::npos) << wrong.dump();

    Connection back;
    const json yes = resume(l.addr, 42, back);
    ASSERT_TRUE(yes.value("ok", false)) << yes.dump();
    EXPECT_TRUE(yes.value("running", false));
    const auto arrived = bitmap_of(yes);
    ASSERT_EQ(arrived.size(), 1u);
    EXPECT_EQ(arrived[0], 0b101u) << "pages 0 and 2 arrived, nothing else";
    auto again = back.receive(5000);
    ASSERT_TRUE(again.ok()) << again.error().message;
    ASSERT_EQ(again->type, FrameType::PageRequest);
    EXPECT_EQ(*parse_page_request(again->payload, Pair::kPages), std::vector<uint64_t>{10});
    EXPECT_EQ(seen.load(), -1) << "the vCPU waits for its page across the lost link";

    p.src = std::move(back);
    p.send_page(10);
    reader.join();
    EXPECT_EQ(seen.load(), 11);
    for (uint64_t i = 4; i < Pair::kPages; i += 2) p.send_page(i);
    ASSERT_TRUE(p.src.send_json(FrameType::RoundEnd, json{{"postcopy_end", true}, {"digest", p.source_digest()}}).ok());
    auto reply = p.src.receive(5000);
    ASSERT_TRUE(reply.ok()) << reply.error().message;
    auto j = frame_json(*reply);
    EXPECT_TRUE(j->value("ok", false)) << j->dump();
    EXPECT_TRUE(pc->wait_complete(5s));
    EXPECT_FALSE(failed);
    EXPECT_EQ(pc->figures().recoveries, 1u);
    EXPECT_EQ(j->value("postcopy", json::object()).value("recoveries", 0u), 1u);
    for (uint64_t i = 0; i < Pair::kPages; ++i) EXPECT_EQ(std::memcmp(base + i * 4096, p.truth[i].data(), 4096), 0) << i;
    // A source that lost the final reply with the link gets it again.
    p.src.shutdown();
    Connection late;
    const json again_reply = resume(l.addr, 42, late);
    EXPECT_TRUE(again_reply.value("ok", false)) << again_reply.dump();
    EXPECT_TRUE(again_reply.value("completed", false)) << again_reply.dump();
    EXPECT_EQ(again_reply.value("digest", 0ull), p.source_digest());
    // The window after completion over, the port is closed.
    for (auto t0 = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() - t0 < 6s;) {
        if (!tcp_connect(l.addr, 1000).ok()) break;
        std::this_thread::sleep_for(5ms);
    }
    EXPECT_FALSE(tcp_connect(l.addr, 1000).ok()) << "still listening after post-copy ended";
}

// A pages frame whose record fails its check (its frame check is fine):
// nothing of it is placed, the link is dropped, and the page comes again
// on the resumed link.
TEST(PostcopyIncoming, ADamagedPageDropsTheLinkAndComesAgainAfterTheResume) {
    Pair p;
    Listener l;
    auto pc = start_recoverable(p, l, 7, 10000);
    ASSERT_NE(pc, nullptr);
    compress::CodecContext ctx;
    std::vector<uint8_t> batch;
    for (int i = 0; i < 8; ++i) batch.push_back(static_cast<uint8_t>(uint64_t{4} >> (8 * i)));
    compress::encode_page(compress::Codec::None, 4, compress::ConstPage(p.truth[4]), ctx, batch);
    batch[batch.size() / 2] ^= 0x40;
    ASSERT_TRUE(p.src.send(FrameType::Pages, batch).ok());
    auto gone = p.src.receive(5000);
    ASSERT_FALSE(gone.ok());
    EXPECT_EQ(gone.error().message.find("sent nothing"), std::string::npos)
        << "the destination kept a link that carried damage: " << gone.error().message;
    Connection back;
    const json yes = resume(l.addr, 7, back);
    ASSERT_TRUE(yes.value("ok", false)) << yes.dump();
    EXPECT_EQ(bitmap_of(yes), std::vector<uint64_t>{0}) << "the damaged page was not placed";
    p.src = std::move(back);
    for (uint64_t i = 0; i < Pair::kPages; i += 2) p.send_page(i);
    ASSERT_TRUE(p.src.send_json(FrameType::RoundEnd, json{{"postcopy_end", true}, {"digest", p.source_digest()}}).ok());
    auto reply = p.src.receive(5000);
    ASSERT_TRUE(reply.ok());
    EXPECT_TRUE(frame_json(*reply)->value("ok", false));
    EXPECT_TRUE(pc->wait_complete(5s));
}

// Nobody comes back within the window: post-copy fails with that reason
// and a waiting thread is released.
TEST(PostcopyIncoming, NoReconnectionWithinTheWindowFails) {
    Pair p;
    Listener l;
    auto pc = start_recoverable(p, l, 1, 300);
    ASSERT_NE(pc, nullptr);
    const uint8_t* base = p.mem.regions().front().host;
    std::thread reader([&] { (void)*static_cast<const volatile uint8_t*>(base + 20 * 4096); });
    ASSERT_TRUE(p.src.receive(5000).ok());
    p.src.shutdown();
    reader.join();
    EXPECT_FALSE(pc->wait_complete(10s));
    EXPECT_NE(pc->failure().find("did not reconnect within 300 ms"), std::string::npos) << pc->failure();
}

TEST(PostcopyIncoming, RefusesABitmapOfTheWrongSize) {
    Pair p;
    auto pc = PostcopyIncoming::start(p.mem, p.dst, std::vector<uint64_t>(2, 0), p.digests, 0);
    ASSERT_FALSE(pc.ok());
    EXPECT_NE(pc.error().message.find("bitmap"), std::string::npos);
    EXPECT_TRUE(p.dst.valid()) << "the connection stays with the caller to refuse";
}

}  // namespace
}  // namespace popek::migration
