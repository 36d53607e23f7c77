// A raw disk image: a regular file or a block device whose bytes are the
// disk's bytes. Only opening, locking and sizing live here; reading and
// writing go through an I/O engine (block/io_engine.hpp) on fd().
#pragma once

#include <cstdint>
#include <string>

#include "base/result.hpp"
#include "base/unique_fd.hpp"

namespace popek::block {

enum class Access { ReadOnly, ReadWrite };
// When open() takes the image's lock: at once, or later through lock() — a
// migration's destination opens the image while the source still holds it
// and locks it only at activation.
enum class LockWhen { Now, Later };

class DiskImage {
public:
    // Opens `path` and locks it so two VMs cannot use one image unsafely: a
    // shared lock when read-only, an exclusive one when read-write (an open
    // file description lock, so it also holds between two opens in one
    // process). Errors name the path and say what to do.
    static base::Result<DiskImage> open(const std::string& path, Access access, LockWhen when = LockWhen::Now);

    // Takes the lock (shared or exclusive, as for open()); already held is ok.
    // The error is open()'s "locked by another process" line.
    base::Result<void> lock();
    // Takes the lock, retrying every few ms until `wait_ms` has passed: the
    // migration's hand-over, where the source lets go moments after it was
    // told the destination took the VM.
    base::Result<void> lock_waiting(uint32_t wait_ms);
    // Lets the lock go (the fd stays open): a migration source after
    // commitment. No-op if not held.
    void unlock();
    [[nodiscard]] bool locked() const { return lock_ != Lock::None; }
    // Writes the image's data to stable storage (fdatasync): a migration
    // source after draining its requests, before the destination reads it.
    base::Result<void> flush();

    [[nodiscard]] int fd() const { return fd_.get(); }
    [[nodiscard]] uint64_t size() const { return size_; }
    [[nodiscard]] bool read_only() const { return access_ == Access::ReadOnly; }
    [[nodiscard]] const std::string& path() const { return path_; }

private:
    enum class Lock { None, Ofd, Flock };
    DiskImage(base::UniqueFd fd, std::string path, Access access, uint64_t size)
        : fd_(std::move(fd)), path_(std::move(path)), access_(access), size_(size) {}

    base::UniqueFd fd_;
    Lock lock_ = Lock::None;
    std::string path_;
    Access access_;
    uint64_t size_;
};

}  // namespace popek::block
