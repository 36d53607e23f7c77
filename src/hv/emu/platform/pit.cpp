// 8254 PIT. Counting is computed from the guest clock: a channel remembers
// when it started and how many ticks it had counted before its gate last
// went low. Linux's i8253 clockevent (mode 2 periodic, mode 0 one-shot on
// channel 0) and its PIT TSC calibration (channel 2 in mode 0, gate and
// output through port 0x61, MSB polling without latches) drive this.
#include "hv/emu/platform/pit.hpp"

#include "hv/emu/platform/blob.hpp"
#include "hv/emu/platform/muldiv.hpp"

namespace popek::hv::emu::platform {

namespace {

constexpr uint32_t kMagic = 0x31544950;  // "PIT1"
constexpr uint32_t kBlobVersion = 1;
constexpr uint64_t kNsPerSec = 1'000'000'000;
constexpr uint64_t kRefreshNs = 15085;  // port 0x61 bit 4 toggles at this period

uint64_t ns_to_ticks(uint64_t ns) { return muldiv(ns, Pit::kHz, kNsPerSec); }
uint64_t ticks_to_ns_up(uint64_t ticks) { return muldiv_up(ticks, kNsPerSec, Pit::kHz); }

// Modes 1 and 5 are started by the gate and are not paused by it.
bool gate_triggered(uint8_t mode) { return mode == 1 || mode == 5; }

}  // namespace

Pit::Pit() {
    for (Channel& c : ch_) c.gate = true;
    ch_[2].gate = false;  // port 0x61 bit 0 is clear at power-on
}

uint64_t Pit::elapsed_ticks(const Channel& c, uint64_t now_ns) const {
    if (!c.counting) return c.frozen_ticks;
    if (!c.gate && !gate_triggered(c.mode)) return c.frozen_ticks;
    return c.frozen_ticks + (now_ns > c.start_ns ? ns_to_ticks(now_ns - c.start_ns) : 0);
}

uint16_t Pit::count_at(const Channel& c, uint64_t now_ns) const {
    if (!c.counting) return static_cast<uint16_t>(c.reload);
    const uint64_t e = elapsed_ticks(c, now_ns);
    const uint64_t n = c.reload;
    switch (c.mode) {
    case 2: return static_cast<uint16_t>(n - e % n);
    case 3: {
        // Counts down by two through each half of the period.
        const uint64_t p = e % n;
        const uint64_t high = (n + 1) / 2;
        return static_cast<uint16_t>((n - 2 * (p < high ? p : p - high)) & 0xfffe);
    }
    default:  // 0, 1, 4, 5: count down once, then wrap and go on
        return static_cast<uint16_t>((n - e % 0x10000) & 0xffff);
    }
}

bool Pit::output_at(const Channel& c, uint64_t now_ns) const {
    if (!c.counting) return c.mode != 0 && c.mode != 1;  // 0/1: low until TC; others idle high
    if (!c.gate && (c.mode == 2 || c.mode == 3)) return true;
    const uint64_t e = elapsed_ticks(c, now_ns);
    const uint64_t n = c.reload;
    switch (c.mode) {
    case 0:
    case 1: return e >= n;
    case 2: return n < 2 || e % n != n - 1;  // low for the clock before reload
    case 3: return e % n < (n + 1) / 2;
    default: return e != n;  // 4, 5: one low clock at terminal count
    }
}

void Pit::schedule_irq(uint64_t now_ns) {
    Channel& c = ch_[0];
    c.next_irq_ns = UINT64_MAX;
    if (!c.counting) return;
    const uint64_t e = elapsed_ticks(c, now_ns);
    uint64_t at;  // tick count of the next rising edge of OUT0
    switch (c.mode) {
    case 0:
    case 4:
        if (e >= c.reload) return;  // one interrupt per count
        at = c.reload;
        break;
    case 2:
    case 3: at = (e / c.reload + 1) * c.reload; break;
    default: return;  // 1, 5: channel 0's gate never triggers
    }
    c.next_irq_ns = sat_add(c.start_ns, ticks_to_ns_up(at - c.frozen_ticks));
}

bool Pit::tick_locked(uint64_t now_ns) {
    Channel& c = ch_[0];
    if (c.next_irq_ns > now_ns) return false;
    // Channel 0 is never paused (its gate is tied high), so the schedule
    // computed at load time is exact; missed periods coalesce.
    schedule_irq(now_ns);
    return true;
}

void Pit::tick(uint64_t now_ns) {
    std::lock_guard order(notify_mu_);
    bool fire;
    {
        std::lock_guard lock(mu_);
        fire = tick_locked(now_ns);
    }
    if (fire && on_irq0) {
        on_irq0(true);
        on_irq0(false);
    }
}

uint64_t Pit::next_event_ns() const {
    std::lock_guard lock(mu_);
    return ch_[0].next_irq_ns;
}

void Pit::load_count(unsigned ch, uint32_t value, uint64_t now_ns) {
    Channel& c = ch_[ch];
    // A new count takes effect at once (the 8254 waits for the end of the
    // current period in modes 2/3; no guest we know depends on that).
    c.reload = value == 0 ? 0x10000 : value;
    c.loaded = true;
    c.null_count = false;
    c.frozen_ticks = 0;
    c.start_ns = now_ns;
    c.counting = !gate_triggered(c.mode);
    if (ch == 0) schedule_irq(now_ns);
}

void Pit::set_gate(Channel& c, bool gate, uint64_t now_ns) {
    if (gate == c.gate) return;
    if (!gate) {
        if (!gate_triggered(c.mode)) {
            c.frozen_ticks = elapsed_ticks(c, now_ns);  // counting pauses
            c.start_ns = now_ns;
        }
        c.gate = false;
        return;
    }
    c.gate = true;
    if (c.mode == 0 || c.mode == 4) {
        c.start_ns = now_ns;  // resume where it paused
    } else if (c.loaded) {
        c.frozen_ticks = 0;  // 1, 2, 3, 5: a rising gate (re)starts the count
        c.start_ns = now_ns;
        c.counting = true;
    }
}

uint8_t Pit::status_byte(const Channel& c, uint64_t now_ns) const {
    return static_cast<uint8_t>((output_at(c, now_ns) ? 0x80 : 0) | (c.null_count ? 0x40 : 0) | (c.access << 4) |
                                (c.mode << 1) | (c.bcd ? 1 : 0));
}

void Pit::write_control(uint8_t value, uint64_t now_ns) {
    const unsigned sc = value >> 6;
    if (sc == 3) {  // read-back: bit 5 clear latches counts, bit 4 clear latches status
        for (unsigned i = 0; i < 3; ++i) {
            if (!(value & (2u << i))) continue;
            Channel& c = ch_[i];
            if (!(value & 0x10) && !c.status_latched) {
                c.status = status_byte(c, now_ns);
                c.status_latched = true;
            }
            if (!(value & 0x20) && !c.latched) {
                c.latch_value = count_at(c, now_ns);
                c.latched = true;
                c.latch_hi_next = false;
            }
        }
        return;
    }
    Channel& c = ch_[sc];
    const uint8_t access = (value >> 4) & 3;
    if (access == 0) {  // counter latch command; a second one before the read is ignored
        if (!c.latched) {
            c.latch_value = count_at(c, now_ns);
            c.latched = true;
            c.latch_hi_next = false;
        }
        return;
    }
    c.access = access;
    c.mode = (value >> 1) & 7;
    if (c.mode > 5) c.mode &= 3;  // 6 and 7 are aliases of 2 and 3
    c.bcd = value & 1;
    c.loaded = c.counting = false;
    c.null_count = true;
    c.frozen_ticks = 0;
    c.write_hi_next = c.read_hi_next = false;
    c.latched = c.status_latched = false;
    if (sc == 0) c.next_irq_ns = UINT64_MAX;
}

uint8_t Pit::read_counter(Channel& c, uint64_t now_ns) {
    if (c.status_latched) {
        c.status_latched = false;
        return c.status;
    }
    uint16_t v;
    bool hi;
    if (c.latched) {
        v = c.latch_value;
        if (c.access == 3 && !c.latch_hi_next) {
            c.latch_hi_next = true;
            hi = false;
        } else {
            hi = c.access != 1;
            c.latched = false;
        }
    } else {
        v = count_at(c, now_ns);
        if (c.access == 3) {
            hi = c.read_hi_next;
            c.read_hi_next = !c.read_hi_next;
        } else {
            hi = c.access == 2;
        }
    }
    return static_cast<uint8_t>(hi ? v >> 8 : v & 0xff);
}

uint8_t Pit::read(uint16_t port, uint64_t now_ns) {
    std::lock_guard lock(mu_);
    switch (port) {
    case 0x40:
    case 0x41:
    case 0x42: return read_counter(ch_[port - 0x40], now_ns);
    case 0x43: return 0xff;  // the control register is write-only
    case 0x61:
        return static_cast<uint8_t>(port61_ | ((now_ns / kRefreshNs) & 1 ? 0x10 : 0) |
                                    (output_at(ch_[2], now_ns) ? 0x20 : 0));
    default: return 0xff;
    }
}

void Pit::write(uint16_t port, uint8_t value, uint64_t now_ns) {
    std::lock_guard lock(mu_);
    switch (port) {
    case 0x40:
    case 0x41:
    case 0x42: {
        const unsigned ch = port - 0x40u;
        Channel& c = ch_[ch];
        switch (c.access) {
        case 1: load_count(ch, value, now_ns); break;
        case 2: load_count(ch, static_cast<uint32_t>(value) << 8, now_ns); break;
        default:
            if (!c.write_hi_next) {
                c.write_lo = value;
                c.write_hi_next = true;
                // Mode 0: writing the first byte stops the count.
                if (c.mode == 0 && c.counting) {
                    c.counting = false;  // OUT stays low until the new count runs out
                    if (ch == 0) c.next_irq_ns = UINT64_MAX;
                }
            } else {
                c.write_hi_next = false;
                load_count(ch, c.write_lo | (static_cast<uint32_t>(value) << 8), now_ns);
            }
            break;
        }
        break;
    }
    case 0x43: write_control(value, now_ns); break;
    case 0x61:
        port61_ = value & 0x0f;
        set_gate(ch_[2], value & 1, now_ns);
        break;
    default: break;
    }
}

std::vector<uint8_t> Pit::save() const {
    std::lock_guard lock(mu_);
    BlobWriter w(kMagic, kBlobVersion);
    for (const Channel& c : ch_) {
        w.u8(c.mode);
        w.u8(c.access);
        w.boolean(c.bcd);
        w.u32(c.reload);
        w.boolean(c.loaded);
        w.boolean(c.counting);
        w.u64(c.start_ns);
        w.u64(c.frozen_ticks);
        w.boolean(c.gate);
        w.boolean(c.write_hi_next);
        w.boolean(c.read_hi_next);
        w.u8(c.write_lo);
        w.boolean(c.null_count);
        w.boolean(c.latched);
        w.u16(c.latch_value);
        w.boolean(c.latch_hi_next);
        w.boolean(c.status_latched);
        w.u8(c.status);
        w.u64(c.next_irq_ns);
    }
    w.u8(port61_);
    return w.take();
}

bool Pit::restore(std::span<const uint8_t> blob) {
    BlobReader r(blob, kMagic, kBlobVersion);
    std::array<Channel, 3> chs{};
    for (unsigned i = 0; i < 3; ++i) {
        Channel& c = chs[i];
        c.mode = r.u8();
        c.access = r.u8();
        c.bcd = r.boolean();
        c.reload = r.u32();
        c.loaded = r.boolean();
        c.counting = r.boolean();
        c.start_ns = r.u64();
        c.frozen_ticks = r.u64();
        c.gate = r.boolean();
        c.write_hi_next = r.boolean();
        c.read_hi_next = r.boolean();
        c.write_lo = r.u8();
        c.null_count = r.boolean();
        c.latched = r.boolean();
        c.latch_value = r.u16();
        c.latch_hi_next = r.boolean();
        c.status_latched = r.boolean();
        c.status = r.u8();
        c.next_irq_ns = r.u64();
        r.check(c.mode <= 5 && c.access >= 1 && c.access <= 3 && c.reload >= 1 && c.reload <= 0x10000 &&
                (!c.counting || c.loaded) && (i == 0 || c.next_irq_ns == UINT64_MAX) && (i == 2 || c.gate));
    }
    const uint8_t port61 = r.u8();
    r.check(port61 <= 0x0f && chs[2].gate == ((port61 & 1) != 0));
    if (!r.done()) return false;
    std::lock_guard lock(mu_);
    ch_ = chs;
    port61_ = port61;
    return true;
}

}  // namespace popek::hv::emu::platform
