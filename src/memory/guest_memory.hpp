// Guest physical memory: one mapping, carved into RAM regions back to back
// (the "RAM layout": a page's offset in the mapping is its offset in a
// snapshot's memory file and its index in dirty bitmaps).
//
// A fresh VM's RAM is private anonymous memory: a page costs nothing until
// touched, a first touch is the kernel's cheapest fault (about half the cost
// of a shmem page here, which matters to a migration destination filling
// RAM at link speed), and pages are given back with MADV_DONTNEED. A lazily
// restored VM's RAM is a private (copy-on-write) mapping of the snapshot's
// memory file instead.
#pragma once

#include <atomic>
#include <functional>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/mmap_region.hpp"
#include "base/result.hpp"
#include "base/unique_fd.hpp"
#include "memory/dirty_bitmap.hpp"

namespace popek::memory {

// A guest-physical range of RAM (what the memory map asks for).
struct RamRange {
    uint64_t gpa;
    uint64_t size;
};

// A RAM region as mapped: guest address, host address, offset in the RAM
// layout (fd_offset: also the offset in a lazily restored VM's file).
struct Region {
    uint64_t gpa;
    uint64_t size;
    uint8_t* host;
    uint64_t fd_offset;
    [[nodiscard]] uint64_t end() const { return gpa + size; }
};

class GuestMemory {
public:
    // Maps anonymous memory of the total size; ranges must be page aligned,
    // sorted and non-overlapping.
    static base::Result<GuestMemory> create(std::span<const RamRange> ranges);
    // Guest RAM as a copy-on-write (MAP_PRIVATE) mapping of `file`, in the
    // RAM layout (regions back to back from offset 0):
    // pages are read from the file when the guest first touches them and
    // the guest's writes never reach the file (lazy snapshot restore).
    static base::Result<GuestMemory> map_private_file(std::span<const RamRange> ranges, base::UniqueFd file);

    [[nodiscard]] std::span<const Region> regions() const { return regions_; }
    [[nodiscard]] uint64_t ram_size() const { return mapping_.size(); }
    // The file behind guest RAM for map_private_file(); -1 for anonymous RAM.
    [[nodiscard]] int fd() const { return fd_.get(); }
    [[nodiscard]] bool private_file() const { return private_file_; }

    // Calls fn(start, end) for each run of pages in [from, to) (RAM-layout
    // offsets, page aligned) that may hold data: for anonymous RAM the pages
    // the kernel has (present or swapped, from /proc/self/pagemap; a page
    // never touched or given back reads as zero and is skipped), for a file
    // mapping all of it. Where the kernel cannot tell, all of it.
    [[nodiscard]] base::Result<void> for_each_populated(
        uint64_t from, uint64_t to, const std::function<base::Result<void>(uint64_t, uint64_t)>& fn) const;
    // Gives the pages of [offset, offset+len) (RAM layout, page aligned)
    // back to the kernel: they read as zero and cost nothing until touched
    // again. Anonymous RAM only (a file mapping would show the file again).
    [[nodiscard]] base::Result<void> discard(uint64_t offset, uint64_t len) const;

    // Host pointer for [gpa, gpa+len) if it lies wholly inside one region, else nullptr.
    [[nodiscard]] uint8_t* host_ptr(uint64_t gpa, uint64_t len) const;
    [[nodiscard]] std::span<uint8_t> span(uint64_t gpa, uint64_t len) const;

    [[nodiscard]] base::Result<void> write(uint64_t gpa, std::span<const uint8_t> bytes) const;
    // Zeroes [gpa, gpa+len). Whole pages of anonymous RAM are discarded
    // rather than written, so zeroing memory nobody touched yet costs no
    // page faults.
    [[nodiscard]] base::Result<void> zero(uint64_t gpa, uint64_t len) const;
    [[nodiscard]] base::Result<void> read(uint64_t gpa, std::span<uint8_t> bytes) const;

    // Host-side dirty tracking for live migration. While on, write(), zero()
    // and every mark_dirty() caller (the virtqueue marks the buffers a device
    // returns, and the used ring) record the pages they changed; the guest's
    // own writes are the hypervisor's dirty log (hv::Vm::fetch_dirty_log).
    // Bits are indexed by page of the RAM layout (fd_offset / 4096).
    void start_dirty_tracking();
    void stop_dirty_tracking() { tracking_->store(false, std::memory_order_release); }
    [[nodiscard]] bool dirty_tracking() const { return tracking_->load(std::memory_order_acquire); }
    void mark_dirty(uint64_t gpa, uint64_t len) const;
    // Every host write reported above (write(), zero(), mark_dirty() callers)
    // also goes to `observer`, tracking on or off: a backend that caches
    // decoded guest code (hv/emu) drops what devices overwrote. Set it
    // before devices run; empty: none.
    void set_write_observer(std::function<void(uint64_t gpa, uint64_t len)> observer) {
        *observer_ = std::move(observer);
    }
    // Clear-on-read: ORs the pages marked since the last call into `out`
    // (one bit per page of the RAM layout).
    void take_dirty(std::vector<uint64_t>& out) const { host_dirty_.take(out); }
    // The RAM-layout page of `gpa`, or UINT64_MAX when it is not RAM.
    [[nodiscard]] uint64_t page_index(uint64_t gpa) const;
    [[nodiscard]] uint64_t page_count() const { return ram_size() / 4096; }

    template <class T>
    [[nodiscard]] base::Result<void> write_obj(uint64_t gpa, const T& obj) const {
        return write(gpa, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&obj), sizeof(T)));
    }

private:
    // Takes `mapping` as guest RAM and carves the regions out of it.
    base::Result<GuestMemory> adopt(std::span<const RamRange> ranges, base::MmapRegion mapping);

    base::UniqueFd fd_;
    base::MmapRegion mapping_;
    std::vector<Region> regions_;
    bool private_file_ = false;
    DirtyBitmap host_dirty_;
    // Heap-held so a moved GuestMemory keeps one flag.
    std::unique_ptr<std::atomic<bool>> tracking_ = std::make_unique<std::atomic<bool>>(false);
    std::unique_ptr<std::function<void(uint64_t, uint64_t)>> observer_ =
        std::make_unique<std::function<void(uint64_t, uint64_t)>>();
};

}  // namespace popek::memory
