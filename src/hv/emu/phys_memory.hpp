// Guest-physical memory as the engine sees it: RAM ranges backed by host
// memory (accessed through host pointers) and everything else, which goes to
// an MmioHandler. It also remembers which RAM pages hold translated code, so
// a write there can invalidate the decoded blocks first.
#pragma once

#include <cstdint>
#include <vector>

#include "base/result.hpp"

namespace popek::hv::emu {

inline constexpr uint64_t kPageSize = 4096;
inline constexpr uint64_t kPageMask = ~(kPageSize - 1);

// Accesses to guest-physical addresses that are not RAM. Accesses never cross
// a page and are 1, 2, 4 or 8 bytes (wider ones arrive split).
class MmioHandler {
public:
    virtual ~MmioHandler() = default;
    virtual uint64_t mmio_read(uint64_t gpa, unsigned size) = 0;
    virtual void mmio_write(uint64_t gpa, unsigned size, uint64_t value) = 0;
};

class PhysMemory {
public:
    // `mmio` may be null: then non-RAM reads return all ones and writes are dropped.
    explicit PhysMemory(MmioHandler* mmio) : mmio_(mmio) {}

    // Makes [gpa, gpa+size) RAM at `host`. Page-aligned, no overlap with other RAM.
    base::Result<void> add_ram(uint64_t gpa, uint64_t size, uint8_t* host);

    // Host address of the RAM page holding `gpa` (its first byte), or null if not RAM.
    [[nodiscard]] uint8_t* host_page(uint64_t gpa) const;

    // Slow-path accesses of 1..8 bytes within one page, to RAM or MMIO.
    uint64_t read(uint64_t gpa, unsigned size);
    void write(uint64_t gpa, unsigned size, uint64_t value);

    // "Page holds translated code" bitmap (RAM pages only).
    [[nodiscard]] bool is_code_page(uint64_t gpa) const;
    void set_code_page(uint64_t gpa, bool is_code);

    // Dirty logging (live migration): while on, every RAM page the guest
    // writes through the engine is recorded, as KVM's dirty log does. The
    // engines sharing this memory must flush their TLBs after take_dirty_log
    // (Engine::dirty_log_cleared) so that the next write to a page records it again.
    void set_dirty_logging(bool on) { dirty_logging_ = on; }
    [[nodiscard]] bool dirty_logging() const { return dirty_logging_; }
    void mark_dirty(uint64_t gpa) {
        if (dirty_logging_) mark_dirty_slow(gpa);
    }
    // The dirty bits of the RAM range starting at `gpa` (one per page), cleared as they are returned.
    std::vector<uint64_t> take_dirty_log(uint64_t gpa);

private:
    struct Range {
        uint64_t gpa, size;
        uint8_t* host;
        std::vector<uint64_t> code_bits;   // one bit per page
        std::vector<uint64_t> dirty_bits;  // one bit per page
    };
    void mark_dirty_slow(uint64_t gpa);
    [[nodiscard]] const Range* find(uint64_t gpa) const;
    Range* find(uint64_t gpa);

    std::vector<Range> ram_;
    MmioHandler* mmio_;
    bool dirty_logging_ = false;
};

}  // namespace popek::hv::emu
