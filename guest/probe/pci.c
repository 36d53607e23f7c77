/* Probe guest: PCI configuration space and bus-0 enumeration (ring 3).
 *
 * Config space comes from ECAM when ACPI has an MCFG table (segment 0) or,
 * failing that, the host bridge's _CBA in the DSDT; otherwise from
 * configuration mechanism #1 (ports 0xcf8/0xcfc; the TSS I/O
 * bitmap allows every port). Each config access is one VM exit (ECAM: an
 * MMIO exit, ~4 us from ring 3; mechanism #1: two port exits), so the scan
 * reads only what it needs: the vendor/device word of slots 0-31, and the
 * rest only for functions that are present. */
#include "virtio.h"

#define PCI_CFG_ADDR 0xcf8
#define PCI_CFG_DATA 0xcfc

#define PCI_COMMAND 0x04
#define PCI_COMMAND_MEMORY 0x2
#define PCI_COMMAND_MASTER 0x4
#define PCI_HEADER_TYPE 0x0e
#define PCI_BAR0 0x10
#define PCI_SUBSYSTEM_ID 0x2e

/* Where BARs left unassigned (QEMU microvm assigns none) get placed: QEMU
 * microvm's GPEX 32-bit window is 0xc0000000-0xdfffffff, popek's MMIO gap
 * starts at 0xc0000000 too. Capped below the ECAM area if that lies in it. */
#define PCI_WINDOW_BASE 0xc0000000ull
#define PCI_WINDOW_END 0xe0000000ull

u64 g_reg_accesses;

static bool ecam_probed;
static u64 ecam_base; /* bus 0 of segment 0; 0: use mechanism #1 */

/* The ECAM base from the DSDT's _CBA of the host bridge: QEMU's GPEX (e.g.
 * microvm,pcie=on in QEMU 7.2, which has no MCFG) declares it as
 * `Method (_CBA) { Return (base) }`; `Name (_CBA, base)` is accepted too.
 * A byte scan for the name, not an AML interpreter. 0 if not found. */
static u64 dsdt_cba(void) {
    const u8 *fadt = (const u8 *)acpi_lookup("FACP");
    if (!fadt) return 0;
    u32 fadt_len = ((const struct acpi_header *)fadt)->length;
    u64 dsdt = fadt_len >= 148 ? *(const u64 *)(fadt + 140) : 0; /* X_DSDT */
    if (!dsdt && fadt_len >= 44) dsdt = *(const u32 *)(fadt + 40);
    if (!dsdt || dsdt >= (4ull << 30)) return 0;
    const u8 *p = (const u8 *)dsdt;
    u32 len = ((const struct acpi_header *)p)->length;
    for (u32 i = sizeof(struct acpi_header); i + 16 <= len; i++) {
        if (memcmp(p + i, "_CBA", 4)) continue;
        const u8 *q = p + i + 4;
        if (p[i - 1] != 0x08) { /* not NameOp: MethodOp, flags, ReturnOp */
            if (q[0] > 0x0f || q[1] != 0xa4) continue;
            q += 2;
        }
        if (q[0] == 0x0c) return *(const u32 *)(q + 1); /* DWordPrefix */
        if (q[0] == 0x0e) return *(const u64 *)(q + 1); /* QWordPrefix */
    }
    return 0;
}

static void ecam_probe(void) {
    if (ecam_probed) return;
    ecam_probed = true;
    const struct acpi_header *mcfg = acpi_lookup("MCFG");
    if (mcfg) {
        /* Header, 8 reserved bytes, then 16-byte allocations: u64 base,
         * u16 segment, u8 start bus, u8 end bus, u32 reserved. */
        const u8 *p = (const u8 *)mcfg + sizeof(*mcfg) + 8;
        const u8 *end = (const u8 *)mcfg + mcfg->length;
        for (; p + 16 <= end; p += 16) {
            u64 base = *(const u64 *)p;
            u16 segment = *(const u16 *)(p + 8);
            if (segment != 0 || p[10] != 0) continue; /* need bus 0 of segment 0 */
            if (base == 0 || base >= (4ull << 30)) continue; /* outside the identity map */
            ecam_base = base;
            return;
        }
    }
    u64 cba = dsdt_cba();
    if (cba && cba < (4ull << 30)) ecam_base = cba;
}

static u64 cf8_addr(const struct pci_dev *p, u16 off) {
    return 0x80000000u | (u32)p->bus << 16 | (u32)p->dev << 11 | (u32)p->fn << 8 | (off & 0xfc);
}

static inline u16 pio_inw(u16 port) {
    u16 v;
    g_reg_accesses++;
    __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline void pio_outw(u16 port, u16 v) {
    g_reg_accesses++;
    __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port));
}
static inline u8 pio_inb(u16 port) {
    u8 v;
    g_reg_accesses++;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

u32 pci_read32(const struct pci_dev *p, u16 off) {
    if (p->ecam) return mmio_ld32(p->ecam + off);
    pio_outl(PCI_CFG_ADDR, (u32)cf8_addr(p, off));
    return pio_inl(PCI_CFG_DATA);
}

u16 pci_read16(const struct pci_dev *p, u16 off) {
    if (p->ecam) return mmio_ld16(p->ecam + off);
    pio_outl(PCI_CFG_ADDR, (u32)cf8_addr(p, off));
    return pio_inw((u16)(PCI_CFG_DATA + (off & 2)));
}

u8 pci_read8(const struct pci_dev *p, u16 off) {
    if (p->ecam) return mmio_ld8(p->ecam + off);
    pio_outl(PCI_CFG_ADDR, (u32)cf8_addr(p, off));
    return pio_inb((u16)(PCI_CFG_DATA + (off & 3)));
}

void pci_write32(const struct pci_dev *p, u16 off, u32 v) {
    if (p->ecam) {
        mmio_st32(p->ecam + off, v);
        return;
    }
    pio_outl(PCI_CFG_ADDR, (u32)cf8_addr(p, off));
    pio_outl(PCI_CFG_DATA, v);
}

void pci_write16(const struct pci_dev *p, u16 off, u16 v) {
    if (p->ecam) {
        mmio_st16(p->ecam + off, v);
        return;
    }
    pio_outl(PCI_CFG_ADDR, (u32)cf8_addr(p, off));
    pio_outw((u16)(PCI_CFG_DATA + (off & 2)), v);
}

/* Fills bus/dev/fn/ecam and the ids; false if nothing answers there. */
static bool pci_at(u8 bus, u8 dev, u8 fn, struct pci_dev *p) {
    memset(p, 0, sizeof(*p));
    p->bus = bus;
    p->dev = dev;
    p->fn = fn;
    if (ecam_base) p->ecam = ecam_base + ((u64)bus << 20 | (u64)dev << 15 | (u64)fn << 12);
    u32 id = pci_read32(p, 0);
    if ((id & 0xffff) == 0xffff || (id & 0xffff) == 0) return false;
    p->vendor = (u16)id;
    p->device = (u16)(id >> 16);
    return true;
}

/* Calls fn(p, arg) for every function on bus 0 until it returns true. */
static bool pci_scan(bool (*fn)(struct pci_dev *p, void *arg), void *arg) {
    ecam_probe();
    struct pci_dev p;
    for (u8 dev = 0; dev < 32; dev++) {
        if (!pci_at(0, dev, 0, &p)) continue;
        bool multi = pci_read8(&p, PCI_HEADER_TYPE) & 0x80;
        if (fn(&p, arg)) return true;
        for (u8 f = 1; multi && f < 8; f++)
            if (pci_at(0, dev, f, &p) && fn(&p, arg)) return true;
    }
    return false;
}

struct find_args {
    u16 type;
    u32 nth;
    struct pci_dev *out;
};

static bool match_virtio(struct pci_dev *p, void *arg) {
    struct find_args *a = arg;
    if (p->vendor != PCI_VENDOR_VIRTIO) return false;
    u16 type;
    if (p->device >= 0x1040 && p->device <= 0x107f) {
        type = (u16)(p->device - 0x1040);
    } else if (p->device >= 0x1000 && p->device <= 0x103f) {
        p->subsys = pci_read16(p, PCI_SUBSYSTEM_ID); /* transitional: subsystem id is the type */
        type = p->subsys;
    } else {
        return false;
    }
    if (type != a->type) return false;
    if (a->nth--) return false;
    *a->out = *p;
    return true;
}

bool pci_find_virtio(u16 type, u32 nth, struct pci_dev *out) {
    struct find_args a = {type, nth, out};
    return pci_scan(match_virtio, &a);
}

u8 pci_find_cap(const struct pci_dev *p, u8 id) {
    if (!(pci_read16(p, 0x06) & 0x10)) return 0; /* no capability list */
    u8 ptr = pci_read8(p, 0x34) & 0xfc;
    for (int guard = 0; ptr && guard < 48; guard++) {
        u16 head = pci_read16(p, ptr); /* id, next */
        if ((head & 0xff) == id) return ptr;
        ptr = (u8)(head >> 8) & 0xfc;
    }
    return 0;
}

/* ---- BARs --------------------------------------------------------------- */
static bool bar_is_64(u32 v) { return !(v & 1) && ((v >> 1) & 3) == 2; }

/* Size of memory BAR i (0 if unimplemented); decoding is turned off while
 * the all-ones pattern is in the register. */
static u64 bar_size(const struct pci_dev *p, int i) {
    u16 off = (u16)(PCI_BAR0 + 4 * i);
    u16 cmd = pci_read16(p, PCI_COMMAND);
    pci_write16(p, PCI_COMMAND, cmd & ~(PCI_COMMAND_MEMORY | 1));
    u32 lo = pci_read32(p, off);
    pci_write32(p, off, ~0u);
    u32 mlo = pci_read32(p, off) & ~0xfu;
    pci_write32(p, off, lo);
    u32 mhi = ~0u;
    if (bar_is_64(lo)) {
        u32 hi = pci_read32(p, (u16)(off + 4));
        pci_write32(p, (u16)(off + 4), ~0u);
        mhi = pci_read32(p, (u16)(off + 4));
        pci_write32(p, (u16)(off + 4), hi);
    }
    pci_write16(p, PCI_COMMAND, cmd);
    if (!mlo && (!bar_is_64(lo) || !mhi)) return 0;
    u64 mask = (u64)mhi << 32 | mlo;
    return ~mask + 1;
}

static u64 bar_addr(const struct pci_dev *p, int i) {
    u32 v = pci_read32(p, (u16)(PCI_BAR0 + 4 * i));
    if (v & 1) return 0;
    u64 a = v & ~0xfull;
    if (bar_is_64(v)) a |= (u64)pci_read32(p, (u16)(PCI_BAR0 + 4 * i + 4)) << 32;
    return a;
}

/* Next free address in the window: above every memory BAR already in it
 * (found, and sized, on the first call). */
static u64 window_next;

static bool note_bars(struct pci_dev *p, void *arg) {
    (void)arg;
    int nbars = (pci_read8(p, PCI_HEADER_TYPE) & 0x7f) == 1 ? 2 : 6;
    for (int i = 0; i < nbars; i++) {
        u32 v = pci_read32(p, (u16)(PCI_BAR0 + 4 * i));
        u64 a = bar_addr(p, i);
        if (a >= PCI_WINDOW_BASE && a < PCI_WINDOW_END) {
            u64 end = a + bar_size(p, i);
            if (end > window_next) window_next = end;
        }
        if (bar_is_64(v)) i++;
    }
    return false;
}

static u64 window_alloc(u64 size) {
    if (!window_next) {
        window_next = PCI_WINDOW_BASE;
        pci_scan(note_bars, NULL);
    }
    u64 limit = PCI_WINDOW_END;
    if (ecam_base > PCI_WINDOW_BASE && ecam_base < limit) limit = ecam_base;
    u64 a = (window_next + size - 1) & ~(size - 1);
    if (a + size > limit) probe_error("pci: no room for a BAR in the 32-bit window", NULL);
    window_next = a + size;
    return a;
}

void pci_enable(struct pci_dev *p) {
    for (int i = 0; i < 6; i++) {
        u32 v = pci_read32(p, (u16)(PCI_BAR0 + 4 * i));
        bool is64 = bar_is_64(v);
        if (v & 1) continue; /* I/O BAR: virtio 1.x does not need it */
        u64 a = bar_addr(p, i);
        /* Unassigned, or above the 4 GiB identity map: place it ourselves. */
        if (a == 0 || a >= (4ull << 30)) {
            u64 size = bar_size(p, i);
            if (size) {
                a = window_alloc(size);
                pci_write32(p, (u16)(PCI_BAR0 + 4 * i), (u32)a | (v & 0xf));
                if (is64) pci_write32(p, (u16)(PCI_BAR0 + 4 * i + 4), 0);
            } else {
                a = 0;
            }
        }
        p->bar[i] = a;
        if (is64) i++;
    }
    u16 cmd = pci_read16(p, PCI_COMMAND);
    pci_write16(p, PCI_COMMAND, cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
}
