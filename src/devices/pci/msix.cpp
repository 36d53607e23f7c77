#include "devices/pci/msix.hpp"

#include <string>

#include "base/bytes.hpp"

namespace popek::devices::pci {

namespace {

constexpr uint32_t kEntryMaskBit = 1u;
constexpr uint16_t kCapControl = 2;  // Message Control, from the capability's start

bool aligned_dword_or_qword(uint64_t offset, size_t size) {
    return (size == 4 || size == 8) && offset % size == 0;
}

}  // namespace

base::Result<std::unique_ptr<Msix>> Msix::create(InterruptManager& irqs, uint16_t vectors, uint8_t bar,
                                                 uint32_t table_offset, uint32_t pba_offset) {
    if (vectors == 0 || vectors > kMsixMaxVectors)
        return base::Error{"MSI-X: " + std::to_string(vectors) + " vectors requested; 1 to 2048 are possible"};
    if (bar >= kNumBars || table_offset % 8 != 0 || pba_offset % 8 != 0)
        return base::Error{"MSI-X: table and PBA must be 8-byte aligned in BAR 0-5"};
    const uint64_t table_end = uint64_t{table_offset} + uint64_t{vectors} * kMsixEntrySize;
    const uint64_t pba_end = uint64_t{pba_offset} + (vectors + 63u) / 64u * 8u;
    if (table_offset < pba_end && pba_offset < table_end) return base::Error{"MSI-X: table and PBA overlap"};
    std::vector<std::unique_ptr<MsiVector>> v;
    v.reserve(vectors);
    for (uint16_t i = 0; i < vectors; ++i) {
        auto vec = irqs.create_msi_vector();
        if (!vec.ok()) return vec.error().context("MSI-X vector " + std::to_string(i));
        v.push_back(std::move(vec).value());
    }
    return std::unique_ptr<Msix>(new Msix(std::move(v), bar, table_offset, pba_offset));
}

Msix::Msix(std::vector<std::unique_ptr<MsiVector>> vectors, uint8_t bar, uint32_t table_offset,
           uint32_t pba_offset)
    : vectors_(std::move(vectors)),
      bar_(bar),
      table_offset_(table_offset),
      pba_offset_(pba_offset),
      entries_(vectors_.size()),
      pending_(vectors_.size(), false),
      stale_(vectors_.size(), true) {}

base::Result<uint16_t> Msix::add_capability(PciConfigSpace& config) {
    // Message Control (table size - 1, Function Mask, Enable), Table
    // Offset/BIR, PBA Offset/BIR. Only Function Mask and Enable are writable.
    std::vector<uint8_t> body(10, 0), writable(10, 0);
    const uint16_t control = static_cast<uint16_t>(vectors_.size() - 1);
    base::store<uint16_t>(body, 0, control);
    base::store<uint32_t>(body, 2, table_offset_ | bar_);
    base::store<uint32_t>(body, 6, pba_offset_ | bar_);
    writable[1] = static_cast<uint8_t>((kMsixControlEnable | kMsixControlFunctionMask) >> 8);
    auto at = config.add_capability(kCapIdMsix, body, writable);
    if (at.ok()) cap_offset_ = *at;
    return at;
}

void Msix::config_written(const PciConfigSpace& config) {
    if (cap_offset_ == 0) return;
    const uint32_t control = config.load(static_cast<uint16_t>(cap_offset_ + kCapControl), 2);
    const bool enable = (control & kMsixControlEnable) != 0;
    const bool fmask = (control & kMsixControlFunctionMask) != 0;
    std::lock_guard lock(mu_);
    if (enable == enabled_.load() && fmask == function_masked_) return;
    enabled_.store(enable, std::memory_order_release);
    function_masked_ = fmask;
    for (size_t i = 0; i < vectors_.size(); ++i) unmasked(i);
}

bool Msix::masked(size_t vector) const {
    return !enabled_.load() || function_masked_ || (entries_[vector].control & kEntryMaskBit) != 0;
}

void Msix::unmasked(size_t vector) {
    if (masked(vector)) return;
    if (stale_[vector]) {
        (void)vectors_[vector]->update(entries_[vector].address, entries_[vector].data);
        stale_[vector] = false;
    }
    if (pending_[vector]) {
        pending_[vector] = false;
        vectors_[vector]->trigger();
    }
}

void Msix::deliver(size_t vector) {
    if (masked(vector)) {
        pending_[vector] = true;
        return;
    }
    unmasked(vector);  // programs a changed route first
    vectors_[vector]->trigger();
}

void Msix::trigger(uint16_t vector) {
    if (!enabled() || vector >= vectors_.size()) return;
    std::lock_guard lock(mu_);
    if (!enabled_.load()) return;
    deliver(vector);
}

void Msix::table_read(uint64_t offset, std::span<uint8_t> data) {
    for (auto& b : data) b = 0;
    if (!aligned_dword_or_qword(offset, data.size()) || offset >= table_bytes()) return;
    std::lock_guard lock(mu_);
    const Entry& e = entries_[offset / kMsixEntrySize];
    uint8_t raw[kMsixEntrySize];
    std::span<uint8_t> bytes(raw);
    base::store<uint64_t>(bytes, 0, e.address);
    base::store<uint32_t>(bytes, 8, e.data);
    base::store<uint32_t>(bytes, 12, e.control);
    const size_t at = offset % kMsixEntrySize;
    for (size_t i = 0; i < data.size(); ++i) data[i] = raw[at + i];
}

void Msix::table_write(uint64_t offset, std::span<const uint8_t> data) {
    if (!aligned_dword_or_qword(offset, data.size()) || offset >= table_bytes()) return;
    std::lock_guard lock(mu_);
    const size_t index = offset / kMsixEntrySize;
    Entry& e = entries_[index];
    const bool was_masked = masked(index);
    const size_t first = offset % kMsixEntrySize / 4;
    for (size_t k = 0; k < data.size() / 4; ++k) {
        const uint32_t v = base::load<uint32_t>(data, 4 * k);
        switch (first + k) {
            case 0:
                if (static_cast<uint32_t>(e.address) != v) stale_[index] = true;
                e.address = (e.address & ~uint64_t{0xffffffff}) | v;
                break;
            case 1:
                if (static_cast<uint32_t>(e.address >> 32) != v) stale_[index] = true;
                e.address = (e.address & 0xffffffff) | (uint64_t{v} << 32);
                break;
            case 2:
                if (e.data != v) stale_[index] = true;
                e.data = v;
                break;
            default: e.control = v & kEntryMaskBit; break;  // the other bits are reserved
        }
    }
    // Unmasking, or a new message while unmasked: program it now.
    if (!masked(index) && (was_masked || stale_[index])) unmasked(index);
}

void Msix::pba_read(uint64_t offset, std::span<uint8_t> data) {
    for (auto& b : data) b = 0;
    if (!aligned_dword_or_qword(offset, data.size()) || offset >= pba_bytes()) return;
    std::lock_guard lock(mu_);
    for (size_t i = 0; i < data.size() * 8; ++i) {
        const size_t vector = offset * 8 + i;
        if (vector < pending_.size() && pending_[vector]) data[i / 8] = static_cast<uint8_t>(data[i / 8] | (1u << (i % 8)));
    }
}

base::Result<void> Msix::restore(const State& s) {
    if (s.entries.size() != vectors_.size() || s.pending.size() != vectors_.size())
        return base::Error{"MSI-X state has " + std::to_string(s.entries.size()) + " vectors, the device has " +
                           std::to_string(vectors_.size())};
    std::lock_guard lock(mu_);
    entries_ = s.entries;
    pending_ = s.pending;
    function_masked_ = s.function_masked;
    enabled_.store(s.enabled, std::memory_order_release);
    stale_.assign(vectors_.size(), true);
    for (size_t i = 0; i < vectors_.size(); ++i) unmasked(i);
    return {};
}

Msix::State Msix::save() const {
    std::lock_guard lock(mu_);
    return State{enabled_.load(), function_masked_, entries_, pending_};
}

}  // namespace popek::devices::pci
