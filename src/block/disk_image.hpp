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

class DiskImage {
public:
    // Opens `path` and locks it so two VMs cannot use one image unsafely: a
    // shared lock when read-only, an exclusive one when read-write (an open
    // file description lock, so it also holds between two opens in one
    // process). Errors name the path and say what to do.
    static base::Result<DiskImage> open(const std::string& path, Access access);

    [[nodiscard]] int fd() const { return fd_.get(); }
    [[nodiscard]] uint64_t size() const { return size_; }
    [[nodiscard]] bool read_only() const { return access_ == Access::ReadOnly; }
    [[nodiscard]] const std::string& path() const { return path_; }

private:
    DiskImage(base::UniqueFd fd, std::string path, Access access, uint64_t size)
        : fd_(std::move(fd)), path_(std::move(path)), access_(access), size_(size) {}

    base::UniqueFd fd_;
    std::string path_;
    Access access_;
    uint64_t size_;
};

}  // namespace popek::block
