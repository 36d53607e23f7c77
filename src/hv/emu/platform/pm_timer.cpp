#include "hv/emu/platform/pm_timer.hpp"

#include "hv/emu/platform/blob.hpp"
#include "hv/emu/platform/muldiv.hpp"

namespace popek::hv::emu::platform {

namespace {
constexpr uint32_t kMagic = 0x4d544d50;  // "PMTM"
constexpr uint32_t kBlobVersion = 1;
}  // namespace

uint32_t PmTimer::read(uint64_t now_ns) const {
    const uint64_t ticks = muldiv(now_ns, kHz, 1'000'000'000);
    return bits32_ ? static_cast<uint32_t>(ticks) : static_cast<uint32_t>(ticks & 0xffffff);
}

std::vector<uint8_t> PmTimer::save() const {
    BlobWriter w(kMagic, kBlobVersion);
    w.boolean(bits32_);
    return w.take();
}

bool PmTimer::restore(std::span<const uint8_t> blob) {
    BlobReader r(blob, kMagic, kBlobVersion);
    const bool b = r.boolean();
    if (!r.done()) return false;
    bits32_ = b;
    return true;
}

}  // namespace popek::hv::emu::platform
