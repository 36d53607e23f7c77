// A bus of devices addressed by ranges: one for port I/O, one for MMIO.
// Built before the vCPUs start and immutable afterwards, so vCPU threads
// look devices up without locks; each device guards its own state.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/result.hpp"

namespace popek::devices {

class BusDevice {
public:
    virtual ~BusDevice() = default;
    // `offset` is relative to the device's base; data.size() is the access width.
    virtual void read(uint64_t offset, std::span<uint8_t> data) = 0;
    virtual void write(uint64_t offset, std::span<const uint8_t> data) = 0;
};

class Bus {
public:
    explicit Bus(std::string name) : name_(std::move(name)) {}

    // Adds `dev` at [base, base+len); refuses empty or overlapping ranges.
    // The bus does not own devices: the machine that builds it does.
    base::Result<void> insert(uint64_t base, uint64_t len, BusDevice* dev, std::string id);

    // false when no device decodes `addr` (the caller decides what the guest sees).
    bool read(uint64_t addr, std::span<uint8_t> data) const;
    bool write(uint64_t addr, std::span<const uint8_t> data) const;

    struct Entry {
        uint64_t base;
        uint64_t len;
        BusDevice* dev;
        std::string id;
    };
    [[nodiscard]] const std::vector<Entry>& entries() const { return entries_; }

private:
    [[nodiscard]] const Entry* find(uint64_t addr) const;
    std::string name_;
    std::vector<Entry> entries_;  // sorted by base
};

}  // namespace popek::devices
