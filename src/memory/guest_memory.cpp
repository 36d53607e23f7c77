#include "memory/guest_memory.hpp"

#include "base/bytes.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace popek::memory {

using base::Error;
using base::Result;

namespace {

Result<uint64_t> total_size(std::span<const RamRange> ranges) {
    const uint64_t page = 4096;
    uint64_t total = 0;
    uint64_t prev_end = 0;
    for (const auto& r : ranges) {
        if (r.size == 0 || r.gpa % page != 0 || r.size % page != 0)
            return Error{"guest memory: ranges must be non-empty and 4 KiB aligned"};
        if (r.gpa < prev_end) return Error{"guest memory: ranges overlap or are unsorted"};
        prev_end = r.gpa + r.size;
        total += r.size;
    }
    if (total == 0) return Error{"guest memory: no RAM"};
    return total;
}

}  // namespace

Result<GuestMemory> GuestMemory::map_fd(std::span<const RamRange> ranges, uint64_t total, int flags) {
    auto map = base::MmapRegion::map(total, PROT_READ | PROT_WRITE, flags | MAP_NORESERVE, fd_.get(), 0, "guest RAM");
    if (!map) return map.error();
    mapping_ = std::move(map).value();
    // Guest RAM is not worth dumping with the VMM and must not be inherited.
    ::madvise(mapping_.data(), total, MADV_DONTDUMP);
    ::madvise(mapping_.data(), total, MADV_DONTFORK);

    uint64_t off = 0;
    for (const auto& r : ranges) {
        regions_.push_back(Region{r.gpa, r.size, mapping_.data() + off, off});
        off += r.size;
    }
    return std::move(*this);
}

Result<GuestMemory> GuestMemory::create(std::span<const RamRange> ranges) {
    POPEK_ASSIGN_OR_RETURN(uint64_t total, total_size(ranges));
    GuestMemory mem;
    mem.fd_ = base::UniqueFd(::memfd_create("popek-guest-ram", MFD_CLOEXEC));
    if (!mem.fd_.valid()) return Error::from_errno("memfd_create for guest RAM");
    if (::ftruncate(mem.fd_.get(), static_cast<off_t>(total)) != 0)
        return Error::from_errno("sizing guest RAM memfd to " + std::to_string(total) + " bytes");
    return mem.map_fd(ranges, total, MAP_SHARED);
}

Result<GuestMemory> GuestMemory::map_private_file(std::span<const RamRange> ranges, base::UniqueFd file) {
    POPEK_ASSIGN_OR_RETURN(uint64_t total, total_size(ranges));
    struct stat st{};
    if (::fstat(file.get(), &st) != 0) return Error::from_errno("guest memory file: fstat");
    if (static_cast<uint64_t>(st.st_size) != total)
        return Error{"guest memory file holds " + std::to_string(st.st_size) + " bytes, the VM has " +
                     std::to_string(total)};
    GuestMemory mem;
    mem.fd_ = std::move(file);
    mem.private_file_ = true;
    return mem.map_fd(ranges, total, MAP_PRIVATE);
}

uint8_t* GuestMemory::host_ptr(uint64_t gpa, uint64_t len) const {
    for (const auto& r : regions_) {
        if (gpa >= r.gpa && gpa < r.end()) {
            if (len > r.end() - gpa) return nullptr;
            return r.host + (gpa - r.gpa);
        }
    }
    return nullptr;
}

std::span<uint8_t> GuestMemory::span(uint64_t gpa, uint64_t len) const {
    uint8_t* p = host_ptr(gpa, len);
    if (p == nullptr) return {};
    return {p, static_cast<size_t>(len)};
}

void GuestMemory::start_dirty_tracking() {
    if (host_dirty_.pages() != page_count()) host_dirty_ = DirtyBitmap(page_count());
    tracking_->store(true, std::memory_order_release);
}

uint64_t GuestMemory::page_index(uint64_t gpa) const {
    for (const auto& r : regions_)
        if (gpa >= r.gpa && gpa < r.end()) return (r.fd_offset + (gpa - r.gpa)) / 4096;
    return UINT64_MAX;
}

void GuestMemory::mark_dirty(uint64_t gpa, uint64_t len) const {
    if (len != 0 && *observer_) (*observer_)(gpa, len);
    if (len == 0 || !tracking_->load(std::memory_order_acquire)) return;
    for (const auto& r : regions_) {
        const uint64_t lo = std::max(gpa, r.gpa);
        const uint64_t hi = std::min(gpa + len, r.end());
        if (lo >= hi) continue;
        const uint64_t first = (r.fd_offset + (lo - r.gpa)) / 4096;
        const uint64_t last = (r.fd_offset + (hi - 1 - r.gpa)) / 4096;
        host_dirty_.mark(first, last - first + 1);
    }
}

static std::string range_text(uint64_t gpa, size_t len) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "[%#llx, +%#zx)", static_cast<unsigned long long>(gpa), len);
    return buf;
}

Result<void> GuestMemory::write(uint64_t gpa, std::span<const uint8_t> bytes) const {
    uint8_t* p = host_ptr(gpa, bytes.size());
    if (p == nullptr) return Error{"guest range " + range_text(gpa, bytes.size()) + " is not RAM"};
    if (!bytes.empty()) std::memcpy(p, bytes.data(), bytes.size());
    mark_dirty(gpa, bytes.size());
    return {};
}

Result<void> GuestMemory::zero(uint64_t gpa, uint64_t len) const {
    uint8_t* p = host_ptr(gpa, len);
    if (p == nullptr) return Error{"guest range " + range_text(gpa, len) + " is not RAM"};
    const uint64_t page = 4096;
    uint64_t head = std::min(len, base::align_up(gpa, page) - gpa);
    uint64_t body = base::align_down(len - head, page);
    std::memset(p, 0, head);
    if (body != 0 && private_file_) {
        std::memset(p + head, 0, body);  // a hole would show the file's bytes again
    } else if (body != 0) {
        auto off = static_cast<off_t>(static_cast<uint64_t>(p + head - mapping_.data()));
        if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, static_cast<off_t>(body)) != 0)
            std::memset(p + head, 0, body);  // the fallback is slower, never wrong
    }
    std::memset(p + head + body, 0, len - head - body);
    mark_dirty(gpa, len);
    return {};
}

Result<void> GuestMemory::read(uint64_t gpa, std::span<uint8_t> bytes) const {
    uint8_t* p = host_ptr(gpa, bytes.size());
    if (p == nullptr) return Error{"guest range " + range_text(gpa, bytes.size()) + " is not RAM"};
    if (!bytes.empty()) std::memcpy(bytes.data(), p, bytes.size());
    return {};
}

}  // namespace popek::memory
