// Opening raw images: sizes, errors that name the path, and the lock that
// keeps two VMs from writing one image.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <thread>
#include <chrono>

#include "block/disk_image.hpp"

namespace popek::block {
namespace {

class BlockDiskImage : public ::testing::Test {
protected:
    void SetUp() override {
        const char* tmp = std::getenv("TMPDIR");
        dir_ = std::string(tmp != nullptr ? tmp : "/tmp") + "/popek-image-XXXXXX";
        ASSERT_NE(::mkdtemp(dir_.data()), nullptr);
        path_ = dir_ + "/disk.raw";
        const int fd = ::open(path_.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(::ftruncate(fd, 3 << 20), 0);
        ::close(fd);
    }
    void TearDown() override {
        ::unlink(path_.c_str());
        ::rmdir(dir_.c_str());
    }
    std::string dir_, path_;
};

TEST_F(BlockDiskImage, OpensAndReportsItsSize) {
    auto img = DiskImage::open(path_, Access::ReadWrite);
    ASSERT_TRUE(img.ok()) << img.error().message;
    EXPECT_EQ(img->size(), 3u << 20);
    EXPECT_FALSE(img->read_only());
    EXPECT_GE(img->fd(), 0);
    EXPECT_EQ(img->path(), path_);
    auto ro = DiskImage::open(path_, Access::ReadOnly);
    ASSERT_FALSE(ro.ok()) << "a writer holds the image";
}

TEST_F(BlockDiskImage, MissingFileErrorNamesThePath) {
    auto img = DiskImage::open(dir_ + "/nope.raw", Access::ReadOnly);
    ASSERT_FALSE(img.ok());
    EXPECT_NE(img.error().message.find(dir_ + "/nope.raw"), std::string::npos) << img.error().message;
    EXPECT_NE(img.error().message.find("does not exist"), std::string::npos) << img.error().message;
    EXPECT_EQ(img.error().sys_errno, ENOENT);
}

TEST_F(BlockDiskImage, DirectoryIsRefusedInBothModes) {
    for (auto access : {Access::ReadOnly, Access::ReadWrite}) {
        auto img = DiskImage::open(dir_, access);
        ASSERT_FALSE(img.ok());
        EXPECT_NE(img.error().message.find("is a directory"), std::string::npos) << img.error().message;
        EXPECT_NE(img.error().message.find(dir_), std::string::npos);
    }
}

TEST_F(BlockDiskImage, PermissionDeniedIsExplained) {
    if (::geteuid() == 0) GTEST_SKIP() << "root ignores file permissions";
    ASSERT_EQ(::chmod(path_.c_str(), 0444), 0);
    auto img = DiskImage::open(path_, Access::ReadWrite);
    ASSERT_FALSE(img.ok());
    EXPECT_NE(img.error().message.find("permission denied"), std::string::npos) << img.error().message;
    EXPECT_TRUE(DiskImage::open(path_, Access::ReadOnly).ok());
}

TEST_F(BlockDiskImage, OneWriterOrManyReaders) {
    {
        auto first = DiskImage::open(path_, Access::ReadWrite);
        ASSERT_TRUE(first.ok()) << first.error().message;
        auto second = DiskImage::open(path_, Access::ReadWrite);
        ASSERT_FALSE(second.ok());
        EXPECT_NE(second.error().message.find("locked by another process"), std::string::npos)
            << second.error().message;
        EXPECT_NE(second.error().message.find(path_), std::string::npos);
    }
    // The writer is gone (its lock with it): readers may share.
    auto r1 = DiskImage::open(path_, Access::ReadOnly);
    auto r2 = DiskImage::open(path_, Access::ReadOnly);
    ASSERT_TRUE(r1.ok()) << r1.error().message;
    ASSERT_TRUE(r2.ok()) << r2.error().message;
    EXPECT_TRUE(r1->read_only());
    EXPECT_FALSE(DiskImage::open(path_, Access::ReadWrite).ok()) << "readers keep writers out";
}

TEST_F(BlockDiskImage, MovedImageKeepsItsLock) {
    auto first = DiskImage::open(path_, Access::ReadWrite);
    ASSERT_TRUE(first.ok());
    DiskImage moved = std::move(first).value();
    EXPECT_FALSE(DiskImage::open(path_, Access::ReadWrite).ok());
    EXPECT_EQ(moved.size(), 3u << 20);
}

TEST_F(BlockDiskImage, NeitherFileNorBlockDeviceIsRefused) {
    auto img = DiskImage::open("/dev/null", Access::ReadOnly);
    ASSERT_FALSE(img.ok());
    EXPECT_NE(img.error().message.find("/dev/null"), std::string::npos);
}

// A migration's hand-over: the destination opens the image unlocked while
// the source holds it, and takes the lock once the source lets go.
TEST_F(BlockDiskImage, LockCanWaitUntilTheHolderLetsGo) {
    auto source = DiskImage::open(path_, Access::ReadWrite);
    ASSERT_TRUE(source.ok()) << source.error().message;
    EXPECT_TRUE(source->locked());
    auto dest = DiskImage::open(path_, Access::ReadWrite, LockWhen::Later);
    ASSERT_TRUE(dest.ok()) << dest.error().message;
    EXPECT_FALSE(dest->locked());
    auto busy = dest->lock();
    ASSERT_FALSE(busy.ok());
    EXPECT_NE(busy.error().message.find("is locked by another process"), std::string::npos) << busy.error().message;
    EXPECT_FALSE(dest->lock_waiting(30).ok());
    EXPECT_TRUE(source->flush().ok());
    std::thread let_go([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        source->unlock();
    });
    auto got = dest->lock_waiting(5000);
    let_go.join();
    ASSERT_TRUE(got.ok()) << got.error().message;
    EXPECT_TRUE(dest->locked());
    EXPECT_FALSE(source->locked());
    EXPECT_FALSE(source->lock().ok()) << "the destination holds it now";
    EXPECT_FALSE(DiskImage::open(path_, Access::ReadOnly).ok()) << "no reader beside a writer either";
}

}  // namespace
}  // namespace popek::block
