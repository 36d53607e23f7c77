#include "devices/bus.hpp"

#include <algorithm>
#include <cstdio>

namespace popek::devices {

static std::string hex(uint64_t v) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(v));
    return buf;
}

base::Result<void> Bus::insert(uint64_t base, uint64_t len, BusDevice* dev, std::string id) {
    if (len == 0 || base + len < base) return base::Error{name_ + " bus: bad range for " + id};
    auto it = std::lower_bound(entries_.begin(), entries_.end(), base,
                               [](const Entry& e, uint64_t b) { return e.base < b; });
    bool overlaps_next = it != entries_.end() && it->base < base + len;
    bool overlaps_prev = it != entries_.begin() && std::prev(it)->base + std::prev(it)->len > base;
    if (overlaps_next || overlaps_prev) {
        const Entry& other = overlaps_next ? *it : *std::prev(it);
        return base::Error{name_ + " bus: " + id + " at " + hex(base) + " overlaps " + other.id +
                           " at " + hex(other.base)};
    }
    entries_.insert(it, Entry{base, len, dev, std::move(id)});
    return {};
}

const Bus::Entry* Bus::find(uint64_t addr) const {
    auto it = std::upper_bound(entries_.begin(), entries_.end(), addr,
                               [](uint64_t a, const Entry& e) { return a < e.base; });
    if (it == entries_.begin()) return nullptr;
    --it;
    return addr - it->base < it->len ? &*it : nullptr;
}

bool Bus::read(uint64_t addr, std::span<uint8_t> data) const {
    const Entry* e = find(addr);
    if (e == nullptr) return false;
    e->dev->read(addr - e->base, data);
    return true;
}

bool Bus::write(uint64_t addr, std::span<const uint8_t> data) const {
    const Entry* e = find(addr);
    if (e == nullptr) return false;
    e->dev->write(addr - e->base, data);
    return true;
}

}  // namespace popek::devices
