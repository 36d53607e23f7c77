#include "block/disk_image.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <cerrno>

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

// An exclusive lock for writers, a shared one for readers: any number of
// read-only users, or exactly one writer. OFD locks belong to the open file
// description, so they neither vanish when another fd on the file is closed
// nor get shared between two opens in one process (unlike POSIX locks).
Result<void> lock_image(int fd, const std::string& path, Access access) {
    struct flock fl{};
    fl.l_type = access == Access::ReadWrite ? F_WRLCK : F_RDLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 0;  // the whole file, however it grows
    int rc = ::fcntl(fd, F_OFD_SETLK, &fl);
    if (rc != 0 && errno == EINVAL) {  // a file system without OFD locks: fall back to flock
        rc = ::flock(fd, (access == Access::ReadWrite ? LOCK_EX : LOCK_SH) | LOCK_NB);
    }
    if (rc == 0) return {};
    const int err = errno;
    if (err == EAGAIN || err == EACCES || err == EWOULDBLOCK) {
        return Error{quoted(path) +
                         (access == Access::ReadWrite
                              ? " is locked by another process (is another VM using it?); stop it or attach the "
                                "image read-only in both"
                              : " is locked for writing by another process (is another VM using it?)"),
                     err};
    }
    return Error::from_errno("locking " + quoted(path), err);
}

}  // namespace

Result<DiskImage> DiskImage::open(const std::string& path, Access access) {
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
    POPEK_TRY(lock_image(fd.get(), path, access));
    return DiskImage(std::move(fd), path, access, size);
}

}  // namespace popek::block
