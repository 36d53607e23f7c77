// The snapshot state file (header, checksum, CBOR) and the sparse memory file.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "base/bytes.hpp"
#include "migration/memory_file.hpp"
#include "migration/snapshot_file.hpp"

namespace popek::migration {
namespace {

namespace fs = std::filesystem;

class TempDir {
public:
    TempDir() {
        char tmpl[] = "/tmp/popek-snapfile-XXXXXX";
        path_ = ::mkdtemp(tmpl);
    }
    ~TempDir() { fs::remove_all(path_); }
    [[nodiscard]] std::string file(const char* name) const { return path_ + "/" + name; }

private:
    std::string path_;
};

nlohmann::json sample_tree() {
    return {{"config", {{"cpus", 2}}}, {"blob", nlohmann::json::binary({1, 2, 3, 4})}, {"list", {1, 2, 3}}};
}

TEST(SnapshotFile, RoundTripsTheTreeThroughAFile) {
    TempDir dir;
    ASSERT_TRUE(write_state_file(dir.file("state.snap"), sample_tree()).ok());
    auto tree = read_state_file(dir.file("state.snap"));
    ASSERT_TRUE(tree.ok()) << tree.error().message;
    EXPECT_EQ(*tree, sample_tree());
    EXPECT_FALSE(fs::exists(dir.file("state.snap.tmp")));
}

TEST(SnapshotFile, RefusesBadMagicVersionLengthAndChecksum) {
    const std::vector<uint8_t> good = encode_state(sample_tree());
    ASSERT_TRUE(decode_state(good).ok());

    auto bad_magic = good;
    bad_magic[0] = 'X';
    EXPECT_NE(decode_state(bad_magic).error().message.find("bad magic"), std::string::npos);

    auto bad_version = good;
    base::store<uint32_t>(bad_version, 8, kSnapshotVersion + 1);
    EXPECT_NE(decode_state(bad_version).error().message.find("version 2"), std::string::npos);

    auto truncated = good;
    truncated.pop_back();
    EXPECT_NE(decode_state(truncated).error().message.find("truncated"), std::string::npos);
    EXPECT_NE(decode_state(std::span(good).first(10)).error().message.find("shorter than its header"),
              std::string::npos);

    auto trailing = good;
    trailing.push_back(0);
    EXPECT_NE(decode_state(trailing).error().message.find("trailing"), std::string::npos);

    auto flipped = good;
    flipped.back() ^= 0x40;
    EXPECT_NE(decode_state(flipped).error().message.find("checksum mismatch"), std::string::npos);
}

TEST(SnapshotFile, RefusesAPayloadThatIsNotACborObject) {
    auto bytes = encode_state(nlohmann::json::array({1, 2}));
    EXPECT_NE(decode_state(bytes).error().message.find("not a valid CBOR object"), std::string::npos);
}

TEST(SnapshotFile, MissingFileIsAClearError) {
    auto r = read_state_file("/nonexistent/popek/state.snap");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("/nonexistent/popek/state.snap"), std::string::npos);
}

class MemoryFileTest : public ::testing::Test {
protected:
    // Two regions with a gap between them, as x86 has below and above 4 GiB.
    const memory::RamRange ranges_[2] = {{0, 64 * 4096}, {1ull << 32, 32 * 4096}};
};

TEST_F(MemoryFileTest, SavesOnlyNonZeroPagesAndLoadsBackEagerAndLazy) {
    TempDir dir;
    auto mem = memory::GuestMemory::create(ranges_);
    ASSERT_TRUE(mem.ok());
    const std::string text = "popek snapshot page";
    ASSERT_TRUE(mem->write(3 * 4096 + 17, std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size())).ok());
    ASSERT_TRUE(mem->write_obj<uint64_t>((1ull << 32) + 5 * 4096, 0x1122334455667788ull).ok());
    ASSERT_TRUE(mem->write_obj<uint8_t>(63 * 4096 + 4095, 0xee).ok());  // last byte of region 0

    auto info = save_memory(*mem, dir.file("memory.bin"));
    ASSERT_TRUE(info.ok()) << info.error().message;
    EXPECT_EQ(info->size, 96u * 4096);
    EXPECT_EQ(info->pages_written, 3u);
    struct stat st{};
    ASSERT_EQ(::stat(dir.file("memory.bin").c_str(), &st), 0);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), info->size);
    EXPECT_LE(static_cast<uint64_t>(st.st_blocks) * 512, 3u * 4096 + 16 * 4096) << "zero pages must stay holes";

    for (bool eager : {true, false}) {
        auto loaded = eager ? load_memory_eager(ranges_, dir.file("memory.bin"), *info)
                            : load_memory_lazy(ranges_, dir.file("memory.bin"), *info);
        ASSERT_TRUE(loaded.ok()) << loaded.error().message;
        for (const auto& r : mem->regions()) {
            auto a = mem->span(r.gpa, r.size);
            auto b = loaded->span(r.gpa, r.size);
            ASSERT_EQ(a.size(), b.size());
            EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size()), 0) << (eager ? "eager" : "lazy");
        }
    }
}

TEST_F(MemoryFileTest, LazyRestoreNeverWritesTheFile) {
    TempDir dir;
    auto mem = memory::GuestMemory::create(ranges_);
    ASSERT_TRUE(mem.ok());
    ASSERT_TRUE(mem->write_obj<uint32_t>(8192, 0xabcdef01).ok());
    auto info = save_memory(*mem, dir.file("memory.bin"));
    ASSERT_TRUE(info.ok());
    {
        auto lazy = load_memory_lazy(ranges_, dir.file("memory.bin"), *info);
        ASSERT_TRUE(lazy.ok());
        ASSERT_TRUE(lazy->write_obj<uint32_t>(8192, 0x55555555).ok());
        ASSERT_TRUE(lazy->zero(0, 16 * 4096).ok());  // whole pages: must not punch the file
        uint32_t v = 1;
        ASSERT_TRUE(lazy->read(8192, std::span(reinterpret_cast<uint8_t*>(&v), sizeof v)).ok());
        EXPECT_EQ(v, 0u) << "zero() on a copy-on-write mapping must read back zeros";
    }
    auto again = load_memory_eager(ranges_, dir.file("memory.bin"), *info);
    ASSERT_TRUE(again.ok()) << again.error().message;
    uint32_t v = 0;
    ASSERT_TRUE(again->read(8192, std::span(reinterpret_cast<uint8_t*>(&v), sizeof v)).ok());
    EXPECT_EQ(v, 0xabcdef01u);
}

TEST_F(MemoryFileTest, EagerLoadRefusesACorruptedOrTruncatedFile) {
    TempDir dir;
    auto mem = memory::GuestMemory::create(ranges_);
    ASSERT_TRUE(mem.ok());
    ASSERT_TRUE(mem->write_obj<uint64_t>(4096, 42).ok());
    auto info = save_memory(*mem, dir.file("memory.bin"));
    ASSERT_TRUE(info.ok());

    {
        int fd = ::open(dir.file("memory.bin").c_str(), O_WRONLY);
        ASSERT_GE(fd, 0);
        const uint8_t junk = 7;
        ASSERT_EQ(::pwrite(fd, &junk, 1, 4096 + 100), 1);
        ::close(fd);
    }
    auto corrupted = load_memory_eager(ranges_, dir.file("memory.bin"), *info);
    ASSERT_FALSE(corrupted.ok());
    EXPECT_NE(corrupted.error().message.find("digest"), std::string::npos);

    ASSERT_EQ(::truncate(dir.file("memory.bin").c_str(), 4096), 0);
    for (bool eager : {true, false}) {
        auto r = eager ? load_memory_eager(ranges_, dir.file("memory.bin"), *info)
                       : load_memory_lazy(ranges_, dir.file("memory.bin"), *info);
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.error().message.find("truncated"), std::string::npos) << r.error().message;
    }
}

}  // namespace
}  // namespace popek::migration
