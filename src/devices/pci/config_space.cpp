#include "devices/pci/config_space.hpp"

#include <string>

namespace popek::devices::pci {

namespace {

constexpr uint16_t kCommandWritable = kCommandMemory | kCommandBusMaster | (1u << 6) /* parity */ |
                                      (1u << 8) /* SERR# */ | kCommandIntxDisable;
// Error bits software clears by writing 1: master data parity error,
// signalled/received target abort, received master abort, signalled
// system error, detected parity error.
constexpr uint16_t kStatusW1c = (1u << 8) | (0x1fu << 11);
constexpr uint16_t kBarRegEnd = kRegBar0 + 4 * kNumBars;
constexpr uint8_t kPinIntA = 1;

bool is_power_of_two(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

bool valid_access(uint16_t offset, size_t size) {
    return (size == 1 || size == 2 || size == 4) && offset < kConfigSpaceSize && size_t{kConfigSpaceSize} - offset >= size;
}

}  // namespace

PciConfigSpace::PciConfigSpace(const PciIds& ids) {
    store(kRegVendorId, ids.vendor, 2);
    store(kRegDeviceId, ids.device, 2);
    store(kRegRevision, ids.revision, 1);
    store(kRegClassCode, ids.class_code & 0xffffff, 3);
    store(kRegHeaderType, 0, 1);  // type 0, single function
    store(kRegSubsystemVendorId, ids.subsystem_vendor, 2);
    store(kRegSubsystemId, ids.subsystem, 2);
    writable_[kRegCommand] = static_cast<uint8_t>(kCommandWritable);
    writable_[kRegCommand + 1] = static_cast<uint8_t>(kCommandWritable >> 8);
    w1c_[kRegStatus] = static_cast<uint8_t>(kStatusW1c);
    w1c_[kRegStatus + 1] = static_cast<uint8_t>(kStatusW1c >> 8);
    writable_[kRegCacheLineSize] = 0xff;
    writable_[kRegInterruptLine] = 0xff;
}

base::Result<void> PciConfigSpace::add_bar(const BarRequest& bar) {
    const std::string what = "PCI BAR" + std::to_string(bar.index);
    const unsigned regs = bar.is_64bit ? 2 : 1;
    if (bar.index >= kNumBars || bar.index + regs > kNumBars)
        return base::Error{what + ": index out of range (0-5; a 64-bit BAR also takes the next)"};
    if (!is_power_of_two(bar.size) || bar.size < 16 || (!bar.is_64bit && bar.size > (1ull << 31)) ||
        bar.size > (1ull << 40))
        return base::Error{what + ": size " + std::to_string(bar.size) + " is not a power of two in range"};
    for (unsigned r = bar.index; r < bar.index + regs; ++r)
        if (regs_[r].bar >= 0) return base::Error{what + ": register " + std::to_string(r) + " is already used"};
    for (unsigned r = bar.index; r < bar.index + regs; ++r)
        regs_[r] = BarReg{bar.index, r != bar.index, false};
    sizes_[bar.index] = bar.size;
    bar_list_.push_back(bar);
    return {};
}

void PciConfigSpace::set_bar_address(uint8_t index, uint64_t address) {
    if (index >= kNumBars || regs_[index].bar != index || regs_[index].upper) return;
    addresses_[index] = address & ~(sizes_[index] - 1);
}

uint64_t PciConfigSpace::bar_address(uint8_t index) const {
    return index < kNumBars ? addresses_[index] : 0;
}

uint32_t PciConfigSpace::bar_size_mask(unsigned reg) const {
    const BarReg& r = regs_[reg];
    uint64_t mask = ~(sizes_[static_cast<size_t>(r.bar)] - 1);
    return r.upper ? static_cast<uint32_t>(mask >> 32) : static_cast<uint32_t>(mask) & ~0xfu;
}

uint32_t PciConfigSpace::bar_register(unsigned reg) const {
    const BarReg& r = regs_[reg];
    if (r.bar < 0) return 0;  // unimplemented BAR: reads 0, sizes to 0
    auto index = static_cast<size_t>(r.bar);
    uint64_t addr = addresses_[index];
    if (r.upper) return r.sizing ? bar_size_mask(reg) : static_cast<uint32_t>(addr >> 32);
    uint32_t flags = 0;
    for (const BarRequest& b : bar_list_) {
        if (b.index != index) continue;
        flags = (b.is_64bit ? kBarMem64 : 0) | (b.prefetchable ? kBarPrefetchable : 0);
    }
    return (r.sizing ? bar_size_mask(reg) : static_cast<uint32_t>(addr) & ~0xfu) | flags;
}

void PciConfigSpace::write_bar_register(unsigned reg, uint32_t value) {
    BarReg& r = regs_[reg];
    if (r.bar < 0) return;
    // All address bits set: the sizing protocol. Anything else ends sizing;
    // the address itself never moves (see the header).
    uint32_t mask = bar_size_mask(reg);
    r.sizing = (value & mask) == mask;
}

void PciConfigSpace::read(uint16_t offset, std::span<uint8_t> data) const {
    if (!valid_access(offset, data.size())) {
        for (auto& b : data) b = 0xff;
        return;
    }
    for (size_t i = 0; i < data.size(); ++i) {
        size_t off = offset + i;
        if (off >= kRegBar0 && off < kBarRegEnd) {
            size_t rel = off - kRegBar0;
            data[i] = static_cast<uint8_t>(bar_register(static_cast<unsigned>(rel / 4)) >> (8 * (rel % 4)));
        } else {
            data[i] = bytes_[off];
        }
    }
}

void PciConfigSpace::write(uint16_t offset, std::span<const uint8_t> data) {
    if (!valid_access(offset, data.size())) return;
    // BAR registers take whole dwords: merge the written bytes into what the
    // register reads now, then apply the dword.
    std::array<uint32_t, kNumBars> bar_values{};
    std::array<bool, kNumBars> bar_touched{};
    for (size_t i = 0; i < data.size(); ++i) {
        size_t off = offset + i;
        uint8_t v = data[i];
        if (off >= kRegBar0 && off < kBarRegEnd) {
            size_t rel = off - kRegBar0, reg = rel / 4;
            unsigned shift = static_cast<unsigned>(8 * (rel % 4));
            if (!bar_touched[reg]) bar_values[reg] = bar_register(static_cast<unsigned>(reg));
            bar_touched[reg] = true;
            bar_values[reg] = (bar_values[reg] & ~(0xffu << shift)) | (uint32_t{v} << shift);
            continue;
        }
        bytes_[off] = static_cast<uint8_t>((bytes_[off] & ~writable_[off]) | (v & writable_[off]));
        bytes_[off] = static_cast<uint8_t>(bytes_[off] & ~(v & w1c_[off]));
    }
    for (unsigned reg = 0; reg < kNumBars; ++reg)
        if (bar_touched[reg]) write_bar_register(reg, bar_values[reg]);
    if (offset <= kRegCommand + 1 && offset + data.size() > kRegCommand) update_intx();
}

uint32_t PciConfigSpace::load(uint16_t offset, unsigned size) const {
    uint32_t v = 0;
    for (unsigned i = 0; i < size && i < 4; ++i)
        if (size_t{offset} + i < kConfigSpaceSize) v |= uint32_t{bytes_[offset + i]} << (8 * i);
    return v;
}

void PciConfigSpace::store(uint16_t offset, uint32_t value, unsigned size) {
    for (unsigned i = 0; i < size && i < 4; ++i)
        if (size_t{offset} + i < kConfigSpaceSize) bytes_[offset + i] = static_cast<uint8_t>(value >> (8 * i));
}

base::Result<uint16_t> PciConfigSpace::add_capability(uint8_t id, std::span<const uint8_t> body,
                                                      std::span<const uint8_t> writable) {
    if (!writable.empty() && writable.size() != body.size())
        return base::Error{"PCI capability: write mask and body differ in length"};
    const uint16_t at = next_cap_;
    if (at + 2 + body.size() > kLegacyConfigSize)
        return base::Error{"PCI capability " + std::to_string(id) + ": configuration space is full"};
    store(at, id, 1);
    store(static_cast<uint16_t>(at + 1), 0, 1);
    for (size_t i = 0; i < body.size(); ++i) {
        bytes_[at + 2 + i] = body[i];
        writable_[at + 2 + i] = writable.empty() ? 0 : writable[i];
    }
    store(last_cap_ == 0 ? kRegCapPointer : static_cast<uint16_t>(last_cap_ + 1), at, 1);
    store(kRegStatus, load(kRegStatus, 2) | kStatusCapList, 2);
    last_cap_ = at;
    next_cap_ = static_cast<uint16_t>((at + 2 + body.size() + 3) & ~size_t{3});
    return at;
}

void PciConfigSpace::connect_intx(IrqLine* line, uint8_t irq) {
    if (intx_ != nullptr && intx_out_) intx_->set_level(false);
    intx_out_ = false;
    intx_ = line;
    store(kRegInterruptPin, line != nullptr ? kPinIntA : 0, 1);
    store(kRegInterruptLine, line != nullptr ? irq : 0, 1);
    update_intx();
}

void PciConfigSpace::set_intx_level(bool level) {
    intx_level_ = level;
    update_intx();
}

void PciConfigSpace::update_intx() {
    uint16_t status = static_cast<uint16_t>(load(kRegStatus, 2));
    status = static_cast<uint16_t>(intx_level_ ? (status | kStatusIntx) : (status & ~kStatusIntx));
    store(kRegStatus, status, 2);
    bool out = intx_level_ && (command() & kCommandIntxDisable) == 0 && intx_ != nullptr;
    if (out == intx_out_) return;
    intx_out_ = out;
    if (intx_ != nullptr) intx_->set_level(out);
}

}  // namespace popek::devices::pci
