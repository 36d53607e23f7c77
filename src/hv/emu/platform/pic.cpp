// 8259A pair. Behaviour from the Intel 8259A datasheet; Linux's i8259.c
// (init_8259A, mask_and_ack_8259A's spurious-IRQ check via the ISR) and
// SeaBIOS's pic setup show which parts a guest exercises.
#include "hv/emu/platform/pic.hpp"

#include "hv/emu/platform/blob.hpp"

namespace popek::hv::emu::platform {

namespace {

constexpr uint32_t kMagic = 0x32434950;  // "PIC2"
constexpr uint32_t kBlobVersion = 1;
constexpr unsigned kCascade = 2;

// Priority rank of an IR level: 0 is the highest, 7 the lowest.
unsigned rank(uint8_t lowest_priority, unsigned irq) { return (irq - lowest_priority - 1u) & 7u; }

}  // namespace

PicPair::PicPair() {
    for (Chip& c : chips_) c.imr = 0xff;  // nothing gets through before the guest programs it
    chips_[0].elcr_mask = 0xf8;           // IRQ0-2 are always edge-triggered
    chips_[1].elcr_mask = 0xde;           // and IRQ8, IRQ13
}

int PicPair::priority(const Chip& c, uint8_t mask_bits) {
    for (unsigned k = 0; k < 8; ++k) {
        const unsigned irq = (c.lowest_priority + 1u + k) & 7u;
        if (mask_bits & (1u << irq)) return static_cast<int>(irq);
    }
    return -1;
}

int PicPair::pending_irq(const Chip& c, bool is_master) const {
    const int irq = priority(c, static_cast<uint8_t>(c.irr & ~c.imr));
    if (irq < 0) return -1;
    uint8_t in_service = c.isr;
    if (c.special_mask) in_service &= static_cast<uint8_t>(~c.imr);  // masked levels do not block
    // Special fully nested mode: more slave requests may nest in IR2.
    if (is_master && c.special_fully_nested) in_service &= static_cast<uint8_t>(~(1u << kCascade));
    const int cur = priority(c, in_service);
    if (cur >= 0 && rank(c.lowest_priority, static_cast<unsigned>(irq)) >=
                        rank(c.lowest_priority, static_cast<unsigned>(cur)))
        return -1;
    return irq;
}

void PicPair::set_line(Chip& c, unsigned pin, bool level) {
    const auto m = static_cast<uint8_t>(1u << pin);
    if (c.elcr & m) {
        c.irr = level ? (c.irr | m) : (c.irr & ~m);  // level: IRR follows the line
    } else if (level && !(c.line & m)) {
        c.irr |= m;  // edge: latched on the rising edge, kept until INTA
    }
    c.line = level ? (c.line | m) : (c.line & ~m);
}

void PicPair::update_cascade() {
    if (chips_[0].single) return;
    set_line(chips_[0], kCascade, pending_irq(chips_[1], false) >= 0);
}

void PicPair::set_irq(unsigned irq, bool level) {
    if (irq >= 16 || irq == kCascade) return;  // IRQ2 is the cascade input
    {
        std::lock_guard lock(mu_);
        set_line(chips_[irq / 8], irq % 8, level);
        update_cascade();
    }
    notify();
}

bool PicPair::output() const {
    std::lock_guard lock(mu_);
    return pending_irq(chips_[0], true) >= 0;
}

uint8_t PicPair::ack_chip(Chip& c, int irq) {
    const auto m = static_cast<uint8_t>(1u << irq);
    if (!(c.elcr & m)) c.irr &= static_cast<uint8_t>(~m);
    if (c.auto_eoi) {
        if (c.rotate_on_aeoi) c.lowest_priority = static_cast<uint8_t>(irq);
    } else {
        c.isr |= m;
    }
    return static_cast<uint8_t>(c.vector_base + irq);
}

uint8_t PicPair::acknowledge() {
    uint8_t vector;
    {
        std::lock_guard lock(mu_);
        Chip& master = chips_[0];
        Chip& slave = chips_[1];
        const int irq = pending_irq(master, true);
        if (irq < 0) {
            vector = static_cast<uint8_t>(master.vector_base + 7);  // spurious IRQ7: no ISR bit
        } else if (irq == static_cast<int>(kCascade) && !master.single) {
            (void)ack_chip(master, irq);
            const int sirq = pending_irq(slave, false);
            // Spurious IRQ15: the master's IR2 stays in service, as on hardware.
            vector = sirq < 0 ? static_cast<uint8_t>(slave.vector_base + 7) : ack_chip(slave, sirq);
            // The slave's INT drops during INTA; a request still pending there
            // raises it again, which the master sees as a new edge.
            set_line(master, kCascade, false);
            update_cascade();
        } else {
            vector = ack_chip(master, irq);
        }
    }
    notify();
    return vector;
}

uint8_t PicPair::poll_chip(Chip& c, bool is_master) {
    const int irq = pending_irq(c, is_master);
    if (irq < 0) return 0;
    (void)ack_chip(c, irq);
    return static_cast<uint8_t>(0x80 | irq);
}

void PicPair::eoi_chip(Chip& c, int irq, bool rotate) {
    if (irq < 0) return;
    c.isr &= static_cast<uint8_t>(~(1u << irq));
    if (rotate) c.lowest_priority = static_cast<uint8_t>(irq);
}

void PicPair::write_chip(Chip& c, bool is_master, unsigned a0, uint8_t value) {
    (void)is_master;
    if (a0 == 0) {
        if (value & 0x10) {  // ICW1
            // LTIM (bit 3, all levels level-triggered) is not modelled: the ELCR does that on PCs.
            c.init_step = 1;
            c.icw4_needed = value & 1;
            c.single = value & 2;
            c.imr = 0;
            c.isr = 0;
            c.irr &= c.elcr;  // pending edges are forgotten
            c.lowest_priority = 7;
            c.auto_eoi = c.rotate_on_aeoi = false;
            c.special_mask = c.special_fully_nested = false;
            c.read_isr = c.poll = false;
            return;
        }
        if (value & 0x08) {  // OCW3
            if (value & 0x04) c.poll = true;
            if (value & 0x02) c.read_isr = value & 1;
            if (value & 0x40) c.special_mask = (value >> 5) & 1;
            return;
        }
        switch (value >> 5) {  // OCW2
        case 0: c.rotate_on_aeoi = false; break;
        case 4: c.rotate_on_aeoi = true; break;
        case 1: eoi_chip(c, priority(c, c.isr), false); break;  // non-specific EOI
        case 5: eoi_chip(c, priority(c, c.isr), true); break;   // rotate on non-specific EOI
        case 3: eoi_chip(c, value & 7, false); break;            // specific EOI
        case 7: eoi_chip(c, value & 7, true); break;             // rotate on specific EOI
        case 6: c.lowest_priority = value & 7; break;            // set priority
        default: break;                                          // 2: no operation
        }
        return;
    }
    switch (c.init_step) {
    case 1:  // ICW2: vector base (8086 mode)
        c.vector_base = value & 0xf8;
        c.init_step = c.single ? (c.icw4_needed ? 3 : 0) : 2;
        break;
    case 2:  // ICW3: cascade wiring is fixed (slave on IR2)
        c.init_step = c.icw4_needed ? 3 : 0;
        break;
    case 3:  // ICW4: 8086 mode assumed (bit 0), buffered mode ignored
        c.auto_eoi = value & 2;
        c.special_fully_nested = value & 0x10;
        c.init_step = 0;
        break;
    default:  // OCW1
        c.imr = value;
        break;
    }
}

uint8_t PicPair::read_chip(Chip& c, bool is_master, unsigned a0) {
    if (c.poll) {
        // A poll command makes the next read an interrupt acknowledge.
        c.poll = false;
        return poll_chip(c, is_master);
    }
    if (a0 == 1) return c.imr;
    return c.read_isr ? c.isr : c.irr;
}

uint8_t PicPair::read(uint16_t port) {
    uint8_t v;
    {
        std::lock_guard lock(mu_);
        switch (port) {
        case 0x20:
        case 0x21: v = read_chip(chips_[0], true, port & 1); break;
        case 0xa0:
        case 0xa1: v = read_chip(chips_[1], false, port & 1); break;
        case 0x4d0: v = chips_[0].elcr; break;
        case 0x4d1: v = chips_[1].elcr; break;
        default: return 0xff;
        }
        update_cascade();
    }
    notify();
    return v;
}

void PicPair::write(uint16_t port, uint8_t value) {
    {
        std::lock_guard lock(mu_);
        switch (port) {
        case 0x20:
        case 0x21: write_chip(chips_[0], true, port & 1, value); break;
        case 0xa0:
        case 0xa1: write_chip(chips_[1], false, port & 1, value); break;
        case 0x4d0:
        case 0x4d1: {
            Chip& c = chips_[port & 1];
            c.elcr = value & c.elcr_mask;
            // Level pins take their IRR from the line from now on.
            c.irr = static_cast<uint8_t>((c.irr & ~c.elcr) | (c.line & c.elcr));
            break;
        }
        default: return;
        }
        update_cascade();
    }
    notify();
}

void PicPair::notify() {
    std::lock_guard order(notify_mu_);
    bool out;
    {
        std::lock_guard lock(mu_);
        out = pending_irq(chips_[0], true) >= 0;
        if (out == notified_output_) return;
        notified_output_ = out;
    }
    if (on_output) on_output(out);
}

std::vector<uint8_t> PicPair::save() const {
    std::lock_guard lock(mu_);
    BlobWriter w(kMagic, kBlobVersion);
    for (const Chip& c : chips_) {
        w.u8(c.irr);
        w.u8(c.isr);
        w.u8(c.imr);
        w.u8(c.line);
        w.u8(c.elcr);
        w.u8(c.vector_base);
        w.u8(c.lowest_priority);
        w.u8(c.init_step);
        w.boolean(c.icw4_needed);
        w.boolean(c.single);
        w.boolean(c.auto_eoi);
        w.boolean(c.rotate_on_aeoi);
        w.boolean(c.special_mask);
        w.boolean(c.special_fully_nested);
        w.boolean(c.read_isr);
        w.boolean(c.poll);
    }
    return w.take();
}

bool PicPair::restore(std::span<const uint8_t> blob) {
    BlobReader r(blob, kMagic, kBlobVersion);
    Chip chips[2];
    for (unsigned i = 0; i < 2; ++i) {
        Chip& c = chips[i];
        c.elcr_mask = chips_[i].elcr_mask;
        c.irr = r.u8();
        c.isr = r.u8();
        c.imr = r.u8();
        c.line = r.u8();
        c.elcr = r.u8();
        c.vector_base = r.u8();
        c.lowest_priority = r.u8();
        c.init_step = r.u8();
        c.icw4_needed = r.boolean();
        c.single = r.boolean();
        c.auto_eoi = r.boolean();
        c.rotate_on_aeoi = r.boolean();
        c.special_mask = r.boolean();
        c.special_fully_nested = r.boolean();
        c.read_isr = r.boolean();
        c.poll = r.boolean();
        r.check((c.elcr & ~c.elcr_mask) == 0 && (c.vector_base & 7) == 0 && c.lowest_priority < 8 &&
                c.init_step < 4);
    }
    if (!r.done()) return false;
    {
        std::lock_guard lock(mu_);
        chips_[0] = chips[0];
        chips_[1] = chips[1];
    }
    notify();
    return true;
}

}  // namespace popek::hv::emu::platform
