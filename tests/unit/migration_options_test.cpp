// `--bandwidth` (and the API's "bandwidth"): what it accepts and what it refuses;
// pre-copy's round-by-round decision.
#include <gtest/gtest.h>

#include "api/request.hpp"
#include "migration/precopy.hpp"

namespace popek::migration {
namespace {

TEST(MigrationBandwidth, ParsesBytesPerSecondWithBinarySuffixes) {
    EXPECT_EQ(parse_bandwidth("250000").value(), 250000u);
    EXPECT_EQ(parse_bandwidth("512K").value(), 512u << 10);
    EXPECT_EQ(parse_bandwidth("100M").value(), 100ull << 20);
    EXPECT_EQ(parse_bandwidth("100m").value(), 100ull << 20);
    EXPECT_EQ(parse_bandwidth("1G").value(), 1ull << 30);
    EXPECT_EQ(parse_bandwidth("1GB").value(), 1ull << 30);
    EXPECT_EQ(parse_bandwidth("40M/s").value(), 40ull << 20);
    EXPECT_EQ(parse_bandwidth("2T").value(), 2ull << 40);
}

TEST(MigrationBandwidth, RefusesWhatIsNotABandwidthInOneLine) {
    for (const char* bad : {"", "M", "-5M", "1.5G", "10X", "abc", "0", "0M", "100", "1000", "99999999999999999999",
                            "9999999999T", " 1M", "1M "}) {
        auto r = parse_bandwidth(bad);
        ASSERT_FALSE(r.ok()) << "'" << bad << "'";
        EXPECT_NE(r.error().message.find("bandwidth '"), std::string::npos) << r.error().message;
        EXPECT_EQ(r.error().message.find('\n'), std::string::npos);
    }
}

// PUT /vm/migrate: the convergence fields reach the command, bad ones are 400s.
TEST(MigrationBandwidth, ApiFieldsReachTheCommand) {
    auto parsed = api::parse_request(
        "PUT", "/vm/migrate",
        R"({"to": "tcp:127.0.0.1:4444", "bandwidth": "100M", "auto_converge": true, "threads": 4,
            "postcopy": "on", "postcopy_recover_ms": 0})");
    ASSERT_TRUE(std::holds_alternative<vmm::Command>(parsed));
    const auto& c = std::get<vmm::MigrateCommand>(std::get<vmm::Command>(parsed));
    EXPECT_EQ(c.bandwidth, 100ull << 20);
    EXPECT_TRUE(c.auto_converge);
    EXPECT_EQ(c.threads, 4u);
    EXPECT_EQ(c.postcopy_recover_ms, 0u);
    parsed = api::parse_request("PUT", "/vm/migrate", R"({"to": "tcp:127.0.0.1:4444", "bandwidth": 1048576})");
    ASSERT_TRUE(std::holds_alternative<vmm::Command>(parsed));
    const auto& d = std::get<vmm::MigrateCommand>(std::get<vmm::Command>(parsed));
    EXPECT_EQ(d.bandwidth, 1048576u);
    EXPECT_FALSE(d.auto_converge);
    EXPECT_EQ(d.threads, 2u);
    EXPECT_EQ(d.postcopy_recover_ms, kDefaultRecoverMs);
    for (const char* bad : {R"({"to": "tcp:127.0.0.1:4444", "bandwidth": "fast"})",
                            R"({"to": "tcp:127.0.0.1:4444", "bandwidth": -1})",
                            R"({"to": "tcp:127.0.0.1:4444", "auto_converge": "yes"})",
                            R"({"to": "tcp:127.0.0.1:4444", "threads": 0})",
                            R"({"to": "tcp:127.0.0.1:4444", "threads": 9})",
                            R"({"to": "tcp:127.0.0.1:4444", "postcopy_recover_ms": 3600001})",
                            R"({"to": "tcp:127.0.0.1:4444", "postcopy_recover_ms": "soon"})"}) {
        auto r = api::parse_request("PUT", "/vm/migrate", bad);
        ASSERT_TRUE(std::holds_alternative<api::HttpError>(r)) << bad;
        EXPECT_EQ(std::get<api::HttpError>(r).status, 400) << bad;
    }
}

// 300 ms limit, 3 ms fixed cost, round 1 of at most 30.
RoundFigures figures(double pages_ms, uint64_t dirty, uint64_t last_round_pages) {
    return RoundFigures{pages_ms, 3.0, 300, 1, 30, dirty, last_round_pages};
}

TEST(PrecopyRounds, APauseThatFitsGetsOneMoreRoundOnlyWhileItPays) {
    // 40 ms of pages, the set shrank from the full pass's 229k to 12k pages.
    EXPECT_EQ(decide_round(figures(40, 12000, 229000)), RoundDecision::Another);
    // Then 300 pages, 1 ms: the switch.
    EXPECT_EQ(decide_round(figures(1.0, 300, 12000)), RoundDecision::Converged);
    // Pages under the fixed cost still pay while they take over 2 ms.
    EXPECT_EQ(decide_round(figures(2.5, 700, 12000)), RoundDecision::Another);
    // Not shrinking by half: another round would find as much again.
    EXPECT_EQ(decide_round(figures(40, 12000, 20000)), RoundDecision::Converged);
    // The cap holds whatever the set does.
    RoundFigures at_cap = figures(40, 12000, 229000);
    at_cap.round = 31;
    EXPECT_EQ(decide_round(at_cap), RoundDecision::Converged);
}

TEST(PrecopyRounds, OverTheLimitItIsAnotherRoundTheCapOrFutile) {
    EXPECT_EQ(decide_round(figures(400, 200000, 200000)), RoundDecision::Another);
    RoundFigures at_cap = figures(400, 200000, 200000);
    at_cap.round = 31;
    EXPECT_EQ(decide_round(at_cap), RoundDecision::RoundCap);
    // A 10 ms limit under a 30 ms fixed cost: rounds help until the pages
    // are a tenth of it.
    EXPECT_EQ(decide_round(RoundFigures{10, 30, 10, 2, 30, 500, 1000}), RoundDecision::Another);
    EXPECT_EQ(decide_round(RoundFigures{2, 30, 10, 2, 30, 100, 500}), RoundDecision::Futile);
}

}  // namespace
}  // namespace popek::migration
