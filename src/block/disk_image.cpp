#include "block/disk_image.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>

namespace popek::block {

using base::Error;
using base::Result;

namespace {

std::string quoted(const std::string& path) { return "disk image '" + path + "'"; }

Error open_error(const std::string& path, Access access, int err) {
    const std::string what = quoted(path);
    switch (err) {
        case ENOENT:
            return Error{what + " does not exist: check the path", err};
        case EISDIR:
            return Error{what + " is a directory, not an image file", err};
        case EACCES:
        case EPERM:
            return Error{access == Access::ReadWrite
                             ? what + ": permission denied; fix its permissions or attach it read-only"
                             : what + ": permission denied; fix its permissions",
                         err};
        case EROFS:
            return Error{what + " is on a read-only file system; attach it read-only", err};
        case ETXTBSY:
            return Error{what + " is busy (a running executable or swap file?)", err};
        default:
            return Error::from_errno("opening " + what, err);
    }
}

Error locked_error(const std::string& path, Access access, int err) {
    return Error{quoted(path) + (access == Access::ReadWrite
                                     ? " is locked by another process (is another VM using it?); stop it or attach "
                                       "the image read-only in both"
                                     : " is locked for writing by another process (is another VM using it?)"),
                 err};
}

bool busy(int err) { return err == EAGAIN || err == EACCES || err == EWOULDBLOCK; }

}  // namespace

Result<DiskImage> DiskImage::open(const std::string& path, Access access, LockWhen when) {
    const int flags = (access == Access::ReadWrite ? O_RDWR : O_RDONLY) | O_CLOEXEC;
    base::UniqueFd fd(::open(path.c_str(), flags));
    if (!fd.valid()) return open_error(path, access, errno);

    struct stat st{};
    if (::fstat(fd.get(), &st) != 0) return Error::from_errno("stat " + quoted(path));
    uint64_t size = 0;
    if (S_ISDIR(st.st_mode)) {
        return open_error(path, access, EISDIR);
    } else if (S_ISREG(st.st_mode)) {
        size = static_cast<uint64_t>(st.st_size);
    } else if (S_ISBLK(st.st_mode)) {
        if (::ioctl(fd.get(), BLKGETSIZE64, &size) != 0)
            return Error::from_errno("BLKGETSIZE64 on " + quoted(path));
    } else {
        return Error{quoted(path) + " is neither a regular file nor a block device"};
    }
    DiskImage image(std::move(fd), path, access, size);
    if (when == LockWhen::Now) POPEK_TRY(image.lock());
    return image;
}

// An exclusive lock for writers, a shared one for readers: any number of
// read-only users, or exactly one writer. OFD locks belong to the open file
// description, so they neither vanish when another fd on the file is closed
// nor get shared between two opens in one process (unlike POSIX locks).
Result<void> DiskImage::lock() {
    if (lock_ != Lock::None) return {};
    struct flock fl{};
    fl.l_type = access_ == Access::ReadWrite ? F_WRLCK : F_RDLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 0;  // the whole file, however it grows
    if (::fcntl(fd_.get(), F_OFD_SETLK, &fl) == 0) {
        lock_ = Lock::Ofd;
        return {};
    }
    if (errno == EINVAL) {  // a file system without OFD locks: fall back to flock
        if (::flock(fd_.get(), (access_ == Access::ReadWrite ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0) {
            lock_ = Lock::Flock;
            return {};
        }
    }
    const int err = errno;
    if (busy(err)) return locked_error(path_, access_, err);
    return Error::from_errno("locking " + quoted(path_), err);
}

Result<void> DiskImage::lock_waiting(uint32_t wait_ms) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
    for (;;) {
        auto r = lock();
        if (r.ok() || !busy(r.error().sys_errno) || std::chrono::steady_clock::now() >= deadline) return r;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
}

void DiskImage::unlock() {
    if (lock_ == Lock::Ofd) {
        struct flock fl{};
        fl.l_type = F_UNLCK;
        fl.l_whence = SEEK_SET;
        (void)::fcntl(fd_.get(), F_OFD_SETLK, &fl);
    } else if (lock_ == Lock::Flock) {
        (void)::flock(fd_.get(), LOCK_UN);
    }
    lock_ = Lock::None;
}

Result<void> DiskImage::flush() {
    if (access_ == Access::ReadOnly) return {};
    if (::fdatasync(fd_.get()) != 0) return Error::from_errno("flushing " + quoted(path_));
    return {};
}

}  // namespace popek::block
