// IOAPIC (82093AA datasheet; Linux's io_apic.c shows what a kernel relies on:
// masking while reprogramming, Remote-IRR cleared by the LAPIC EOI broadcast).
#include "hv/emu/platform/ioapic.hpp"

#include "hv/emu/platform/blob.hpp"

namespace popek::hv::emu::platform {

namespace {

constexpr uint32_t kMagic = 0x50414f49;  // "IOAP"
constexpr uint32_t kBlobVersion = 1;

constexpr uint32_t kRegId = 0x00;
constexpr uint32_t kRegVersion = 0x01;
constexpr uint32_t kRegArbitration = 0x02;
constexpr uint32_t kRegRedirBase = 0x10;

constexpr uint64_t kRemoteIrr = 1u << 14;
constexpr uint64_t kLevel = 1u << 15;
constexpr uint64_t kMasked = 1u << 16;
// Writable bits: vector, delivery mode, destination mode, polarity, trigger
// mode, mask; destination (bits 63:56).
constexpr uint64_t kLowWritable = 0x0001afff;
constexpr uint64_t kHighWritable = 0xff000000;
constexpr uint64_t kEntryBits = kLowWritable | kRemoteIrr | (kHighWritable << 32);

}  // namespace

IoApic::IoApic(std::function<void(const InterruptMessage&)> deliver) : deliver_(std::move(deliver)) {
    redir_.fill(kMasked);
}

uint64_t IoApic::redirection(unsigned pin) const {
    std::lock_guard lock(mu_);
    return pin < kPins ? redir_[pin] : 0;
}

InterruptMessage IoApic::message(unsigned pin) const {
    const uint64_t e = redir_[pin];
    InterruptMessage m;
    m.vector = static_cast<uint8_t>(e & 0xff);
    m.delivery_mode = static_cast<uint8_t>((e >> 8) & 7);
    m.logical = (e >> 11) & 1;
    m.level = (e & kLevel) != 0;
    m.assert = true;
    m.dest = static_cast<uint32_t>(e >> 56);
    return m;
}

void IoApic::service(unsigned pin, std::vector<InterruptMessage>& out) {
    uint64_t& e = redir_[pin];
    if ((e & kMasked) || !((line_ >> pin) & 1)) return;
    if (e & kLevel) {
        if (e & kRemoteIrr) return;  // still in service at the LAPIC
        e |= kRemoteIrr;
    }
    out.push_back(message(pin));
}

void IoApic::run(const std::vector<InterruptMessage>& out) {
    if (!deliver_) return;
    for (const auto& m : out) deliver_(m);
}

uint32_t IoApic::read(uint32_t offset) {
    std::lock_guard lock(mu_);
    if (offset == kRegSel) return regsel_;
    if (offset != kWindow) return 0;
    switch (regsel_) {
    case kRegId:
    case kRegArbitration: return id_ << 24;
    case kRegVersion: return ((kPins - 1) << 16) | kVersion;
    default: break;
    }
    if (regsel_ >= kRegRedirBase && regsel_ < kRegRedirBase + 2 * kPins) {
        const uint64_t e = redir_[(regsel_ - kRegRedirBase) / 2];
        return static_cast<uint32_t>((regsel_ & 1) ? e >> 32 : e);
    }
    return 0;
}

void IoApic::write(uint32_t offset, uint32_t value) {
    std::vector<InterruptMessage> out;
    {
        std::lock_guard lock(mu_);
        if (offset == kRegSel)
            regsel_ = value & 0xff;
        else if (offset == kWindow)
            write_register(regsel_, value, out);
    }
    run(out);
}

void IoApic::write_register(uint32_t index, uint32_t value, std::vector<InterruptMessage>& out) {
    if (index == kRegId) {
        id_ = (value >> 24) & 0xf;
        return;
    }
    if (index < kRegRedirBase || index >= kRegRedirBase + 2 * kPins) return;  // read-only or absent
    const unsigned pin = (index - kRegRedirBase) / 2;
    uint64_t& e = redir_[pin];
    if (index & 1) {
        e = (e & 0xffffffffull) | (static_cast<uint64_t>(value & kHighWritable) << 32);
        return;
    }
    e = (e & ~kLowWritable) | (value & kLowWritable);
    if (!(e & kLevel)) e &= ~kRemoteIrr;  // edge mode has no Remote-IRR
    // Unmasking (or switching to level) with the line asserted delivers
    // for level pins; an edge seen while masked is lost, as on hardware.
    if (e & kLevel) service(pin, out);
}

void IoApic::set_irq(unsigned pin, bool level) {
    if (pin >= kPins) return;
    std::vector<InterruptMessage> out;
    {
        std::lock_guard lock(mu_);
        const bool old = (line_ >> pin) & 1;
        line_ = level ? (line_ | (1u << pin)) : (line_ & ~(1u << pin));
        if (redir_[pin] & kLevel)
            service(pin, out);
        else if (level && !old)
            service(pin, out);
    }
    run(out);
}

void IoApic::eoi(uint8_t vector) {
    std::vector<InterruptMessage> out;
    {
        std::lock_guard lock(mu_);
        for (unsigned pin = 0; pin < kPins; ++pin) {
            uint64_t& e = redir_[pin];
            if ((e & 0xff) != vector || !(e & kLevel) || !(e & kRemoteIrr)) continue;
            e &= ~kRemoteIrr;
            service(pin, out);  // still asserted: deliver again
        }
    }
    run(out);
}

std::vector<uint8_t> IoApic::save() const {
    std::lock_guard lock(mu_);
    BlobWriter w(kMagic, kBlobVersion);
    w.u32(id_);
    w.u32(regsel_);
    for (uint64_t e : redir_) w.u64(e);
    w.u32(line_);
    return w.take();
}

bool IoApic::restore(std::span<const uint8_t> blob) {
    BlobReader r(blob, kMagic, kBlobVersion);
    const uint32_t id = r.u32();
    const uint32_t regsel = r.u32();
    std::array<uint64_t, kPins> redir{};
    for (auto& e : redir) {
        e = r.u64();
        r.check((e & ~kEntryBits) == 0 && ((e & kLevel) || !(e & kRemoteIrr)));
    }
    const uint32_t line = r.u32();
    r.check(id <= 0xf && regsel <= 0xff && line < (1u << kPins));
    if (!r.done()) return false;
    std::lock_guard lock(mu_);
    id_ = id;
    regsel_ = regsel;
    redir_ = redir;
    line_ = line;
    return true;
}

}  // namespace popek::hv::emu::platform
