// `--bandwidth` (and the API's "bandwidth"): what it accepts and what it refuses.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace popek::migration
