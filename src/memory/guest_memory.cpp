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

std::string range_text(uint64_t gpa, size_t len) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "[%#llx, +%#zx)", static_cast<unsigned long long>(gpa), len);
    return buf;
}

}  // namespace

Result<GuestMemory> GuestMemory::adopt(std::span<const RamRange> ranges, base::MmapRegion mapping) {
    mapping_ = std::move(mapping);
    // Guest RAM is not worth dumping with the VMM and must not be inherited.
    ::madvise(mapping_.data(), mapping_.size(), MADV_DONTDUMP);
    ::madvise(mapping_.data(), mapping_.size(), MADV_DONTFORK);

    uint64_t off = 0;
    for (const auto& r : ranges) {
        regions_.push_back(Region{r.gpa, r.size, mapping_.data() + off, off});
        off += r.size;
    }
    return std::move(*this);
}

Result<GuestMemory> GuestMemory::create(std::span<const RamRange> ranges) {
    POPEK_ASSIGN_OR_RETURN(uint64_t total, total_size(ranges));
    auto map = base::MmapRegion::map(total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
                                     0, "guest RAM");
    if (!map) return map.error();
    GuestMemory mem;
    return mem.adopt(ranges, std::move(map).value());
}

Result<GuestMemory> GuestMemory::map_private_file(std::span<const RamRange> ranges, base::UniqueFd file) {
    POPEK_ASSIGN_OR_RETURN(uint64_t total, total_size(ranges));
    struct stat st{};
    if (::fstat(file.get(), &st) != 0) return Error::from_errno("guest memory file: fstat");
    if (static_cast<uint64_t>(st.st_size) != total)
        return Error{"guest memory file holds " + std::to_string(st.st_size) + " bytes, the VM has " +
                     std::to_string(total)};
    auto map = base::MmapRegion::map(total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, file.get(), 0,
                                     "guest RAM");
    if (!map) return map.error();
    GuestMemory mem;
    mem.fd_ = std::move(file);
    mem.private_file_ = true;
    return mem.adopt(ranges, std::move(map).value());
}

Result<void> GuestMemory::for_each_populated(uint64_t from, uint64_t to,
                                             const std::function<Result<void>(uint64_t, uint64_t)>& fn) const {
    constexpr uint64_t kPage = 4096;
    if (from >= to) return {};
    if (private_file_) return fn(from, to);
    base::UniqueFd pagemap(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
    if (!pagemap.valid()) return fn(from, to);
    // One 64-bit entry per virtual page: bit 63 present, bit 62 swapped.
    constexpr uint64_t kHeld = 3ull << 62;
    constexpr size_t kBatch = 4096;
    std::vector<uint64_t> entries(kBatch);
    const auto base_page = reinterpret_cast<uintptr_t>(mapping_.data()) / kPage;
    uint64_t run = UINT64_MAX;  // start of the current run of held pages
    for (uint64_t off = from; off < to;) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(kBatch, (to - off) / kPage));
        const auto at = static_cast<off_t>((base_page + off / kPage) * sizeof(uint64_t));
        if (::pread(pagemap.get(), entries.data(), n * sizeof(uint64_t), at) != static_cast<ssize_t>(n * sizeof(uint64_t)))
            return fn(run != UINT64_MAX ? run : off, to);  // cannot tell from here on: all of it
        for (size_t i = 0; i < n; ++i, off += kPage) {
            const bool held = (entries[i] & kHeld) != 0;
            if (held && run == UINT64_MAX) run = off;
            if (!held && run != UINT64_MAX) {
                POPEK_TRY(fn(run, off));
                run = UINT64_MAX;
            }
        }
    }
    if (run != UINT64_MAX) return fn(run, to);
    return {};
}

Result<void> GuestMemory::discard(uint64_t offset, uint64_t len) const {
    if (private_file_) return Error{"guest memory: pages of a file mapping cannot be discarded"};
    if (offset % 4096 != 0 || len % 4096 != 0 || offset > ram_size() || len > ram_size() - offset)
        return Error{"guest memory: discard of " + range_text(offset, len) + " is not whole pages of RAM"};
    if (len != 0 && ::madvise(mapping_.data() + offset, len, MADV_DONTNEED) != 0)
        return Error::from_errno("guest memory: discarding " + range_text(offset, len));
    return {};
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
        std::memset(p + head, 0, body);  // discarding would show the file's bytes again
    } else if (body != 0 && !discard(static_cast<uint64_t>(p + head - mapping_.data()), body).ok()) {
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
