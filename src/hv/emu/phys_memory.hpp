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

private:
    struct Range {
        uint64_t gpa, size;
        uint8_t* host;
        std::vector<uint64_t> code_bits;  // one bit per page
    };
    [[nodiscard]] const Range* find(uint64_t gpa) const;
    Range* find(uint64_t gpa);

    std::vector<Range> ram_;
    MmioHandler* mmio_;
};

}  // namespace popek::hv::emu
