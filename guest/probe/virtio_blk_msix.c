/* Probe guest: the blk-msix workload. Used-buffer notifications of a
 * virtio-blk queue delivered as MSI-X interrupts, end to end: MSI-X table
 * entry 0 -> xAPIC message to this CPU, vector IRQ_VECTOR; boot.S's
 * irq_entry (ring 0: count, EOI, iretq) is the only handler. Ring 3 runs
 * with RFLAGS.IF=1 (gate service SYS_IRQ_ENABLE) and waits for the counter,
 * not for the used ring, so a completion that raises no interrupt is a
 * timeout. Then the masking rules: a completion while entry 0 is masked
 * sets its PBA bit and delivers nothing, unmasking delivers it. */
#include "virtio_blk.h"

#define PCI_CAP_ID_MSIX 0x11
#define MSIX_CTRL 2          /* Message Control, from the capability */
#define MSIX_TABLE 4         /* Table Offset / BIR */
#define MSIX_PBA 8           /* PBA Offset / BIR */
#define MSIX_CTRL_ENABLE 0x8000
#define MSIX_CTRL_FMASK 0x4000
#define MSIX_ENTRY_ADDR_LO 0
#define MSIX_ENTRY_ADDR_HI 4
#define MSIX_ENTRY_DATA 8
#define MSIX_ENTRY_CTRL 12
#define MSIX_ENTRY_MASKED 1

#define LAPIC_ID 0x20
#define LAPIC_SVR 0xf0
#define LAPIC_SVR_ENABLE 0x100
#define MSI_ADDR_BASE 0xfee00000u /* xAPIC, physical destination mode */

#define MSIX_REQ_BYTES 4096u
#define MSIX_BLOCKS 32u /* 4 KiB blocks used at the start of the disk */

struct msix {
    u8 cap;
    u64 table, pba;
};

/* Finds the capability, enables MSI-X with the function masked, programs
 * entry 0 (unmasked) for `apic_id`, then clears the function mask. */
static void msix_enable(struct pci_dev *p, struct msix *m, u32 apic_id) {
    m->cap = pci_find_cap(p, PCI_CAP_ID_MSIX);
    if (!m->cap) probe_error("blk-msix: no MSI-X capability", NULL);
    u32 t = pci_read32(p, (u16)(m->cap + MSIX_TABLE)), b = pci_read32(p, (u16)(m->cap + MSIX_PBA));
    if (t % 8 > 5 || b % 8 > 5 || !p->bar[t % 8] || !p->bar[b % 8])
        probe_error("blk-msix: MSI-X table or PBA in a BAR that is not mapped", NULL);
    m->table = p->bar[t % 8] + (t & ~7u);
    m->pba = p->bar[b % 8] + (b & ~7u);
    pci_write16(p, (u16)(m->cap + MSIX_CTRL), MSIX_CTRL_ENABLE | MSIX_CTRL_FMASK);
    mmio_st32(m->table + MSIX_ENTRY_ADDR_LO, MSI_ADDR_BASE | apic_id << 12);
    mmio_st32(m->table + MSIX_ENTRY_ADDR_HI, 0);
    mmio_st32(m->table + MSIX_ENTRY_DATA, IRQ_VECTOR); /* fixed, edge */
    mmio_st32(m->table + MSIX_ENTRY_CTRL, 0);
    pci_write16(p, (u16)(m->cap + MSIX_CTRL), MSIX_CTRL_ENABLE);
    u16 ctrl = pci_read16(p, (u16)(m->cap + MSIX_CTRL));
    if ((ctrl & (MSIX_CTRL_ENABLE | MSIX_CTRL_FMASK)) != MSIX_CTRL_ENABLE)
        probe_error("blk-msix: MSI-X enable did not stick", NULL);
}

static bool pba_pending(const struct msix *m) { return mmio_ld32(m->pba) & 1; }

static __attribute__((noreturn)) void msix_fail(struct blk *b, const char *what, u64 request) {
    put_str("PROBE-ERROR blk-msix ");
    put_str(what);
    put_str(" request=");
    put_dec(request);
    put_str(" status=");
    put_hex(virtio_status(&b->d));
    put_str(" avail=");
    put_dec(b->q.avail_shadow);
    put_str(" used=");
    put_dec(*(volatile u16 *)&b->q.used->idx);
    put_str(" irqs=");
    put_dec(irq_count);
    put_char('\n');
    probe_exit(1);
}

/* Spins until irq_count differs from `before`; false at the timeout. */
static bool wait_irq(u32 before) {
    u64 start = rdtsc();
    while (irq_count == before) {
        if (rdtsc() - start > virtio_timeout_ticks()) return false;
        cpu_relax();
    }
    return true;
}

/* Request i: even i write the pattern to block (i / 2) % MSIX_BLOCKS, odd i
 * read it back. */
static void submit_nth(struct blk *b, u64 i, u8 *wbuf, u8 *rbuf) {
    u64 sector = 8 * ((i / 2) % MSIX_BLOCKS);
    if (i % 2 == 0) {
        for (u32 k = 0; k < MSIX_REQ_BYTES; k++) wbuf[k] = blk_pattern(sector + k / SECTOR, k % SECTOR);
        if (!blk_submit(b, 0, VIRTIO_BLK_T_OUT, sector, wbuf, MSIX_REQ_BYTES)) msix_fail(b, "ring full", i);
    } else {
        memset(rbuf, 0, MSIX_REQ_BYTES);
        if (!blk_submit(b, 0, VIRTIO_BLK_T_IN, sector, rbuf, MSIX_REQ_BYTES)) msix_fail(b, "ring full", i);
    }
    vq_kick(&b->q);
}

static void check_nth(struct blk *b, u64 i, const u8 *wbuf, const u8 *rbuf) {
    if (b->slots[0].status != VIRTIO_BLK_S_OK) msix_fail(b, "request failed", i);
    if (i % 2 == 1 && memcmp(wbuf, rbuf, MSIX_REQ_BYTES)) msix_fail(b, "read back differs", i);
}

void workload_blk_msix(u64 n) {
    static struct blk b;
    struct msix m;
    virtio_open(&b.d, VIRTIO_ID_BLOCK, 0);

    /* This CPU's APIC ID (not CPUID's, see smp.c), and the LAPIC
     * software-enabled: a disabled one drops fixed interrupts. */
    u32 apic_id = mmio_read32(LAPIC_BASE + LAPIC_ID) >> 24;
    mmio_write32(LAPIC_BASE + LAPIC_SVR, mmio_read32(LAPIC_BASE + LAPIC_SVR) | LAPIC_SVR_ENABLE);
    msix_enable(&b.d.pci, &m, apic_id);

    /* No EVENT_IDX: with NO_INTERRUPT clear, one interrupt per completion.
     * Config changes get no vector (virtio_negotiate sets NO_VECTOR). */
    blk_start(&b, BLK_FEATURES & ~VIRTIO_F_EVENT_IDX, 0);
    b.slots = dma_alloc(sizeof(struct blk_slot), 64);
    if (b.ro) probe_error("blk-msix: device is read-only", NULL);
    if (b.capacity < 8 * MSIX_BLOCKS) probe_error("blk-msix: disk too small", NULL);
    u8 *wbuf = dma_alloc(MSIX_REQ_BYTES, 4096);
    u8 *rbuf = dma_alloc(MSIX_REQ_BYTES, 4096);

    syscall2(SYS_IRQ_ENABLE, 0, 0);

    u32 start = irq_count;
    for (u64 i = 0; i < n; i++) {
        u32 before = irq_count;
        submit_nth(&b, i, wbuf, rbuf);
        if (!wait_irq(before)) msix_fail(&b, "timeout interrupt", i);
        /* The device publishes the used entry before it signals. */
        if (!vq_poll(&b.q, NULL, NULL)) msix_fail(&b, "interrupt but no used entry", i);
        check_nth(&b, i, wbuf, rbuf);
    }
    u32 interrupts = irq_count - start;

    /* Masked: the completion shows up in the used ring, its interrupt only
     * in the PBA, until the entry is unmasked. */
    u32 before = irq_count;
    mmio_st32(m.table + MSIX_ENTRY_CTRL, MSIX_ENTRY_MASKED);
    submit_nth(&b, n & ~1ull, wbuf, rbuf); /* a write */
    if (!vq_wait_quiet(&b.q, NULL, NULL)) msix_fail(&b, "timeout masked request", n);
    check_nth(&b, n & ~1ull, wbuf, rbuf);
    /* The device signals right after publishing: give the pending bit the
     * same timeout. */
    bool pending = false;
    u64 t0 = rdtsc();
    while (!(pending = pba_pending(&m)) && rdtsc() - t0 < virtio_timeout_ticks()) cpu_relax();
    bool masked_pending = pending && irq_count == before;
    mmio_st32(m.table + MSIX_ENTRY_CTRL, 0);
    bool delivered = wait_irq(before) && irq_count == before + 1 && !pba_pending(&m);

    put_str("PROBE-MSIX masked_pending=");
    put_dec(masked_pending);
    put_str(" delivered_on_unmask=");
    put_dec(delivered);
    put_str("\nPROBE-DONE blk-msix requests=");
    put_dec(n);
    put_str(" interrupts=");
    put_dec(interrupts);
    put_char('\n');
    if (interrupts < n || !masked_pending || !delivered) probe_exit(1);
}
