#include "hv/emu/phys_memory.hpp"

#include <cstring>
#include <string>

namespace popek::hv::emu {

base::Result<void> PhysMemory::add_ram(uint64_t gpa, uint64_t size, uint8_t* host) {
    if ((gpa | size) & ~kPageMask || size == 0 || host == nullptr) {
        return base::Error{"emu: RAM range must be page-aligned and non-empty"};
    }
    for (const auto& r : ram_) {
        if (gpa < r.gpa + r.size && r.gpa < gpa + size) {
            return base::Error{"emu: RAM range at " + std::to_string(gpa) + " overlaps another"};
        }
    }
    const uint64_t pages = size / kPageSize;
    const std::vector<uint64_t> bits((pages + 63) / 64, 0);
    ram_.push_back(Range{gpa, size, host, bits, bits});
    return base::ok();
}

const PhysMemory::Range* PhysMemory::find(uint64_t gpa) const {
    for (const auto& r : ram_) {
        if (gpa - r.gpa < r.size) return &r;
    }
    return nullptr;
}

PhysMemory::Range* PhysMemory::find(uint64_t gpa) {
    return const_cast<Range*>(static_cast<const PhysMemory*>(this)->find(gpa));
}

uint8_t* PhysMemory::host_page(uint64_t gpa) const {
    const Range* r = find(gpa);
    if (r == nullptr) return nullptr;
    return r->host + ((gpa & kPageMask) - r->gpa);
}

uint64_t PhysMemory::read(uint64_t gpa, unsigned size) {
    if (uint8_t* page = host_page(gpa)) {
        uint64_t v = 0;
        std::memcpy(&v, page + (gpa & ~kPageMask), size);
        return v;
    }
    if (mmio_ == nullptr) return size == 8 ? ~0ULL : (1ULL << (size * 8)) - 1;
    return mmio_->mmio_read(gpa, size);
}

void PhysMemory::write(uint64_t gpa, unsigned size, uint64_t value) {
    if (uint8_t* page = host_page(gpa)) {
        std::memcpy(page + (gpa & ~kPageMask), &value, size);
        mark_dirty(gpa);
        return;
    }
    if (mmio_ != nullptr) mmio_->mmio_write(gpa, size, value);
}

bool PhysMemory::is_code_page(uint64_t gpa) const {
    const Range* r = find(gpa);
    if (r == nullptr) return false;
    const uint64_t page = (gpa - r->gpa) / kPageSize;
    return (__atomic_load_n(&r->code_bits[page / 64], __ATOMIC_RELAXED) >> (page % 64)) & 1;
}

void PhysMemory::set_code_page(uint64_t gpa, bool is_code) {
    Range* r = find(gpa);
    if (r == nullptr) return;
    const uint64_t page = (gpa - r->gpa) / kPageSize;
    const uint64_t bit = 1ULL << (page % 64);
    // Atomic: engines of several vCPUs share the bitmaps.
    if (is_code) {
        __atomic_fetch_or(&r->code_bits[page / 64], bit, __ATOMIC_RELAXED);
    } else {
        __atomic_fetch_and(&r->code_bits[page / 64], ~bit, __ATOMIC_RELAXED);
    }
}

void PhysMemory::mark_dirty_slow(uint64_t gpa) {
    Range* r = find(gpa);
    if (r == nullptr) return;
    const uint64_t page = (gpa - r->gpa) / kPageSize;
    __atomic_fetch_or(&r->dirty_bits[page / 64], 1ULL << (page % 64), __ATOMIC_RELAXED);
}

std::vector<uint64_t> PhysMemory::take_dirty_log(uint64_t gpa) {
    Range* r = find(gpa);
    if (r == nullptr) return {};
    std::vector<uint64_t> out(r->dirty_bits.size(), 0);
    for (size_t k = 0; k < out.size(); ++k) out[k] = __atomic_exchange_n(&r->dirty_bits[k], 0, __ATOMIC_RELAXED);
    return out;
}

}  // namespace popek::hv::emu
