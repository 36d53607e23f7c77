// Move-only owner of an mmap()ed region.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "base/result.hpp"

namespace popek::base {

class MmapRegion {
public:
    MmapRegion() = default;
    MmapRegion(MmapRegion&& o) noexcept
        : addr_(std::exchange(o.addr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
    MmapRegion& operator=(MmapRegion&& o) noexcept {
        if (this != &o) {
            unmap();
            addr_ = std::exchange(o.addr_, nullptr);
            size_ = std::exchange(o.size_, 0);
        }
        return *this;
    }
    MmapRegion(const MmapRegion&) = delete;
    MmapRegion& operator=(const MmapRegion&) = delete;
    ~MmapRegion() { unmap(); }

    static Result<MmapRegion> map(size_t size, int prot, int flags, int fd, off_t offset,
                                  const char* what) {
        void* p = ::mmap(nullptr, size, prot, flags, fd, offset);
        if (p == MAP_FAILED) return Error::from_errno(std::string("mmap ") + what);
        MmapRegion r;
        r.addr_ = static_cast<uint8_t*>(p);
        r.size_ = size;
        return r;
    }

    [[nodiscard]] uint8_t* data() const { return addr_; }
    [[nodiscard]] size_t size() const { return size_; }

private:
    void unmap() {
        if (addr_ != nullptr) ::munmap(addr_, size_);
        addr_ = nullptr;
        size_ = 0;
    }
    uint8_t* addr_ = nullptr;
    size_t size_ = 0;
};

}  // namespace popek::base
