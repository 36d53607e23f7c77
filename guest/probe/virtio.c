/* Probe guest: the virtio-pci modern transport (virtio 1.2 section 4.1) and
 * split virtqueues (section 2.7), driver side, all ring 3 and polling.
 *
 * VM exits per request: the used ring, avail ring and descriptors are RAM,
 * so the only exit on the data path is the 16-bit write to the queue's
 * notify address in vq_kick(), and none when the device has suppressed
 * notifications (VIRTQ_USED_F_NO_NOTIFY, or avail_event with EVENT_IDX).
 * Completions are found by polling used->idx; the ISR register is never
 * read. Interrupts stay off: MSI-X is never enabled, each queue's vector is
 * NO_VECTOR, and the driver asks for no used-buffer notifications
 * (VIRTQ_AVAIL_F_NO_INTERRUPT, or used_event kept far ahead). The one
 * exception is blk-msix (virtio_blk_msix.c), which enables MSI-X itself and
 * gives its queue a vector through virtio_setup_queue_vector(). */
#include "virtio.h"

/* struct virtio_pci_common_cfg */
#define CC_DEVICE_FEATURE_SELECT 0x00
#define CC_DEVICE_FEATURE 0x04
#define CC_DRIVER_FEATURE_SELECT 0x08
#define CC_DRIVER_FEATURE 0x0c
#define CC_CONFIG_MSIX_VECTOR 0x10
#define CC_NUM_QUEUES 0x12
#define CC_DEVICE_STATUS 0x14
#define CC_CONFIG_GENERATION 0x15
#define CC_QUEUE_SELECT 0x16
#define CC_QUEUE_SIZE 0x18
#define CC_QUEUE_MSIX_VECTOR 0x1a
#define CC_QUEUE_ENABLE 0x1c
#define CC_QUEUE_NOTIFY_OFF 0x1e
#define CC_QUEUE_DESC 0x20
#define CC_QUEUE_DRIVER 0x28
#define CC_QUEUE_DEVICE 0x30

/* struct virtio_pci_cap */
#define PCI_CAP_ID_VNDR 0x09
#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG 3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4

u64 virtio_timeout_ticks(void) {
    static u64 ticks;
    if (!ticks) ticks = tsc_hz() * VIRTIO_TIMEOUT_S;
    return ticks;
}

/* ---- DMA memory ------------------------------------------------------- */
static u64 dma_next;

/* [base, end) is RAM in the PVH memory map (adjacent entries are fine).
 * Without a memory map (the bzImage's 16-bit protocol under QEMU passes
 * none) the region is taken on trust. */
static bool dma_region_ok(u64 base, u64 end) { return !have_memmap() || memmap_covers(base, end); }

void *dma_alloc_raw(u64 size, u64 align) {
    if (!dma_next) {
        if (!dma_region_ok(DMA_BASE, DMA_BASE + DMA_SIZE))
            probe_error("virtio: DMA region 32-48 MiB is not RAM (give the guest at least 48 MiB)", NULL);
        dma_next = DMA_BASE;
    }
    u64 a = (dma_next + align - 1) & ~(align - 1);
    if (a + size > DMA_BASE + DMA_SIZE) probe_error("virtio: out of DMA memory", NULL);
    dma_next = a + size;
    return (void *)a;
}

void *dma_alloc(u64 size, u64 align) {
    void *p = dma_alloc_raw(size, align);
    memset(p, 0, size);
    return p;
}

/* ---- common configuration ---------------------------------------------- */
static u8 cc_r8(const struct virtio_dev *d, u32 off) { return mmio_ld8(d->common + off); }
static u16 cc_r16(const struct virtio_dev *d, u32 off) { return mmio_ld16(d->common + off); }
static u32 cc_r32(const struct virtio_dev *d, u32 off) { return mmio_ld32(d->common + off); }
static void cc_w8(const struct virtio_dev *d, u32 off, u8 v) { mmio_st8(d->common + off, v); }
static void cc_w16(const struct virtio_dev *d, u32 off, u16 v) { mmio_st16(d->common + off, v); }
static void cc_w32(const struct virtio_dev *d, u32 off, u32 v) { mmio_st32(d->common + off, v); }
static void cc_w64(const struct virtio_dev *d, u32 off, u64 v) {
    cc_w32(d, off, (u32)v);
    cc_w32(d, off + 4, (u32)(v >> 32));
}

u8 virtio_status(const struct virtio_dev *d) { return cc_r8(d, CC_DEVICE_STATUS); }

static void put_dev_name(const struct virtio_dev *d) {
    static const char *const names[] = {"?", "net", "blk", "console", "rng"};
    put_str(d->type < 5 ? names[d->type] : "?");
}

/* PROBE-ERROR <what> <dev>: status=... and exit 1. */
static __attribute__((noreturn)) void virtio_fail(const struct virtio_dev *d, const char *what) {
    put_str("PROBE-ERROR ");
    put_str(what);
    put_str(" virtio-");
    put_dev_name(d);
    put_str(" status=");
    put_hex(virtio_status(d));
    put_char('\n');
    probe_exit(1);
}

/* ---- device discovery ------------------------------------------------ */
void virtio_open(struct virtio_dev *d, u16 type, u32 nth) {
    memset(d, 0, sizeof(*d));
    d->type = type;
    if (!pci_find_virtio(type, nth, &d->pci)) {
        put_str("PROBE-ERROR no virtio-");
        put_dev_name(d);
        put_str(" device on PCI bus 0\n");
        probe_exit(1);
    }
    struct pci_dev *p = &d->pci;
    pci_enable(p);

    if (!(pci_read16(p, 0x06) & 0x10)) probe_error("virtio: PCI function has no capability list", NULL);
    u8 ptr = pci_read8(p, 0x34) & 0xfc;
    for (int guard = 0; ptr && guard < 48; guard++) {
        u32 head = pci_read32(p, ptr); /* id, next, cap_len, cfg_type */
        u8 next = (u8)(head >> 8) & 0xfc;
        if ((head & 0xff) == PCI_CAP_ID_VNDR) {
            u8 cfg_type = (u8)(head >> 24);
            u8 bar = pci_read8(p, (u16)(ptr + 4));
            u32 offset = pci_read32(p, (u16)(ptr + 8));
            /* Only the first capability of each type counts (4.1.4.1). */
            bool wanted = (cfg_type == VIRTIO_PCI_CAP_COMMON_CFG && !d->common) ||
                          (cfg_type == VIRTIO_PCI_CAP_NOTIFY_CFG && !d->notify_base) ||
                          (cfg_type == VIRTIO_PCI_CAP_ISR_CFG && !d->isr) ||
                          (cfg_type == VIRTIO_PCI_CAP_DEVICE_CFG && !d->device_cfg);
            if (wanted && bar < 6 && p->bar[bar]) {
                u64 addr = p->bar[bar] + offset;
                switch (cfg_type) {
                case VIRTIO_PCI_CAP_COMMON_CFG: d->common = addr; break;
                case VIRTIO_PCI_CAP_NOTIFY_CFG:
                    d->notify_base = addr;
                    d->notify_mult = pci_read32(p, (u16)(ptr + 16));
                    break;
                case VIRTIO_PCI_CAP_ISR_CFG: d->isr = addr; break;
                case VIRTIO_PCI_CAP_DEVICE_CFG: d->device_cfg = addr; break;
                }
            }
        }
        ptr = next;
    }
    if (!d->common || !d->notify_base) probe_error("virtio: no common or notify capability", NULL);
}

bool virtio_reset(struct virtio_dev *d) {
    cc_w8(d, CC_DEVICE_STATUS, 0);
    u64 start = rdtsc();
    while (cc_r8(d, CC_DEVICE_STATUS) != 0)
        if (rdtsc() - start > virtio_timeout_ticks()) return false;
    return true;
}

u64 virtio_negotiate(struct virtio_dev *d, u64 wanted) {
    if (!virtio_reset(d)) virtio_fail(d, "timeout reset");
    cc_w8(d, CC_DEVICE_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
    cc_w8(d, CC_DEVICE_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);

    u64 offered = 0;
    for (u32 sel = 0; sel < 2; sel++) {
        cc_w32(d, CC_DEVICE_FEATURE_SELECT, sel);
        offered |= (u64)cc_r32(d, CC_DEVICE_FEATURE) << (32 * sel);
    }
    d->offered = offered;
    if (!(offered & VIRTIO_F_VERSION_1)) virtio_fail(d, "no VERSION_1 (legacy-only device)");
    u64 features = (offered & wanted) | VIRTIO_F_VERSION_1;
    for (u32 sel = 0; sel < 2; sel++) {
        cc_w32(d, CC_DRIVER_FEATURE_SELECT, sel);
        cc_w32(d, CC_DRIVER_FEATURE, (u32)(features >> (32 * sel)));
    }
    u8 s = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;
    cc_w8(d, CC_DEVICE_STATUS, s);
    if (!(cc_r8(d, CC_DEVICE_STATUS) & VIRTIO_STATUS_FEATURES_OK)) virtio_fail(d, "features not accepted");
    d->features = features;
    d->num_queues = cc_r16(d, CC_NUM_QUEUES);
    cc_w16(d, CC_CONFIG_MSIX_VECTOR, VIRTIO_MSI_NO_VECTOR);
    return features;
}

void virtio_setup_queue(struct virtio_dev *d, struct virtq *q, u16 index, u16 max_size) {
    virtio_setup_queue_vector(d, q, index, max_size, VIRTIO_MSI_NO_VECTOR);
}

void virtio_setup_queue_vector(struct virtio_dev *d, struct virtq *q, u16 index, u16 max_size, u16 vector) {
    memset(q, 0, sizeof(*q));
    if (index >= d->num_queues) virtio_fail(d, "queue index beyond num_queues");
    cc_w16(d, CC_QUEUE_SELECT, index);
    u16 size = cc_r16(d, CC_QUEUE_SIZE);
    if (size == 0) virtio_fail(d, "queue not available");
    if (size > max_size) size = max_size;
    while (size & (size - 1)) size &= (u16)(size - 1); /* power of two */

    q->dev = d;
    q->index = index;
    q->size = size;
    q->indirect = d->features & VIRTIO_F_INDIRECT_DESC;
    q->event_idx = d->features & VIRTIO_F_EVENT_IDX;
    q->desc = dma_alloc(16ull * size, 4096);
    q->avail = dma_alloc(6ull + 2ull * size, 4096);
    q->used = dma_alloc(6ull + 8ull * size, 4096);
    q->used_event = (volatile u16 *)((u8 *)q->avail + 4 + 2ull * size);
    q->avail_event = (volatile u16 *)((u8 *)q->used + 4 + 8ull * size);
    if (q->indirect) q->indirect_tables = dma_alloc(16ull * VQ_MAX_SG * size, 4096);
    q->next = dma_alloc(2ull * size, 8);
    q->chain_len = dma_alloc(2ull * size, 8);
    q->token = dma_alloc(4ull * size, 8);
    for (u16 i = 0; i < size; i++) q->next[i] = (u16)(i + 1);
    q->free_head = 0;
    q->num_free = size;
    /* No used-buffer notifications wanted: we poll. With EVENT_IDX the
     * flags must stay 0 and used_event is kept 0x8000 ahead instead. With
     * an MSI-X vector: a notification for every completion (flags 0, and
     * used_event 0 = right at the first one). */
    q->irq = vector != VIRTIO_MSI_NO_VECTOR;
    if (!q->irq) {
        if (q->event_idx) *q->used_event = 0x8000;
        else q->avail->flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
    } /* else the zeroed rings already say so: flags 0, used_event 0 */

    cc_w16(d, CC_QUEUE_SIZE, size);
    cc_w16(d, CC_QUEUE_MSIX_VECTOR, vector);
    if (q->irq && cc_r16(d, CC_QUEUE_MSIX_VECTOR) != vector) virtio_fail(d, "queue MSI-X vector not accepted");
    u16 notify_off = cc_r16(d, CC_QUEUE_NOTIFY_OFF);
    q->notify_addr = d->notify_base + (u64)notify_off * d->notify_mult;
    cc_w64(d, CC_QUEUE_DESC, (u64)q->desc);
    cc_w64(d, CC_QUEUE_DRIVER, (u64)q->avail);
    cc_w64(d, CC_QUEUE_DEVICE, (u64)q->used);
    cc_w16(d, CC_QUEUE_ENABLE, 1);
}

void virtio_driver_ok(struct virtio_dev *d) {
    cc_w8(d, CC_DEVICE_STATUS,
          VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
}

u8 virtio_cfg8(const struct virtio_dev *d, u32 off) {
    if (!d->device_cfg) virtio_fail(d, "no device config capability");
    return mmio_ld8(d->device_cfg + off);
}
u16 virtio_cfg16(const struct virtio_dev *d, u32 off) {
    if (!d->device_cfg) virtio_fail(d, "no device config capability");
    return mmio_ld16(d->device_cfg + off);
}
u32 virtio_cfg32(const struct virtio_dev *d, u32 off) {
    if (!d->device_cfg) virtio_fail(d, "no device config capability");
    return mmio_ld32(d->device_cfg + off);
}
u64 virtio_cfg64(const struct virtio_dev *d, u32 off) {
    if (!d->device_cfg) virtio_fail(d, "no device config capability");
    u8 gen;
    u64 v;
    do {
        gen = cc_r8(d, CC_CONFIG_GENERATION);
        v = mmio_ld32(d->device_cfg + off) | (u64)mmio_ld32(d->device_cfg + off + 4) << 32;
    } while (gen != cc_r8(d, CC_CONFIG_GENERATION));
    return v;
}

/* ---- split virtqueue ------------------------------------------------- */
bool vq_add(struct virtq *q, const struct vbuf *bufs, u32 n, u32 token) {
    if (n == 0 || n > VQ_MAX_SG) probe_error("virtio: bad buffer count", NULL);
    bool indirect = q->indirect && n > 1;
    u16 need = indirect ? 1 : (u16)n;
    if (q->num_free < need) return false;

    u16 head = q->free_head;
    if (indirect) {
        struct virtq_desc *t = q->indirect_tables + (u64)head * VQ_MAX_SG;
        for (u32 i = 0; i < n; i++) {
            t[i].addr = bufs[i].addr;
            t[i].len = bufs[i].len;
            t[i].flags = (u16)((bufs[i].write ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
            t[i].next = (u16)(i + 1 < n ? i + 1 : 0);
        }
        q->desc[head].addr = (u64)t;
        q->desc[head].len = 16 * n;
        q->desc[head].flags = VIRTQ_DESC_F_INDIRECT;
        q->desc[head].next = 0;
        q->free_head = q->next[head];
    } else {
        u16 d = head;
        for (u32 i = 0; i < n; i++) {
            q->desc[d].addr = bufs[i].addr;
            q->desc[d].len = bufs[i].len;
            q->desc[d].flags = (u16)((bufs[i].write ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
            q->desc[d].next = i + 1 < n ? q->next[d] : 0;
            d = q->next[d];
        }
        q->free_head = d;
    }
    q->num_free = (u16)(q->num_free - need);
    q->chain_len[head] = need;
    q->token[head] = token;
    q->avail->ring[q->avail_shadow & (q->size - 1)] = head;
    q->avail_shadow++;
    return true;
}

void vq_kick(struct virtq *q) {
    u16 new_idx = q->avail_shadow, old_idx = q->avail_kicked;
    if (new_idx == old_idx) return;
    compiler_barrier(); /* descriptors and ring entries before the index (TSO) */
    *(volatile u16 *)&q->avail->idx = new_idx;
    full_barrier();     /* the index store before reading the device's flags */
    bool notify;
    if (q->event_idx) {
        u16 avail_event = *q->avail_event;
        notify = (u16)(new_idx - avail_event - 1) < (u16)(new_idx - old_idx);
    } else {
        notify = !(*(volatile u16 *)&q->used->flags & VIRTQ_USED_F_NO_NOTIFY);
    }
    q->avail_kicked = new_idx;
    q->kicks++;
    if (notify) {
        mmio_st16(q->notify_addr, q->index);
        q->notifies++;
    }
}

bool vq_poll(struct virtq *q, u32 *token, u32 *len) {
    u16 used_idx = *(volatile u16 *)&q->used->idx;
    if (used_idx == q->last_used) return false;
    compiler_barrier(); /* the entry after the index (loads are ordered on x86) */
    struct virtq_used_elem e = q->used->ring[q->last_used & (q->size - 1)];
    if (e.id >= q->size) virtio_fail(q->dev, "bad used id");
    u16 head = (u16)e.id;
    if (token) *token = q->token[head];
    if (len) *len = e.len;

    u16 tail = head;
    for (u16 i = 1; i < q->chain_len[head]; i++) tail = q->next[tail];
    q->next[tail] = q->free_head;
    q->free_head = head;
    q->num_free = (u16)(q->num_free + q->chain_len[head]);
    q->last_used++;
    if (q->event_idx) *q->used_event = (u16)(q->irq ? q->last_used : q->last_used + 0x8000);
    return true;
}

bool vq_wait_quiet(struct virtq *q, u32 *token, u32 *len) {
    u64 start = rdtsc();
    while (!vq_poll(q, token, len)) {
        if (rdtsc() - start > virtio_timeout_ticks()) return false;
        cpu_relax();
    }
    return true;
}

void vq_wait(struct virtq *q, u32 *token, u32 *len, const char *what) {
    u64 start = rdtsc();
    while (!vq_poll(q, token, len)) {
        if (rdtsc() - start > virtio_timeout_ticks()) {
            put_str("PROBE-ERROR timeout ");
            put_str(what);
            put_str(" virtio-");
            put_dev_name(q->dev);
            put_str(" status=");
            put_hex(virtio_status(q->dev));
            put_str(" queue=");
            put_dec(q->index);
            put_str(" avail=");
            put_dec(q->avail_shadow);
            put_str(" used=");
            put_dec(*(volatile u16 *)&q->used->idx);
            put_char('\n');
            probe_exit(1);
        }
        cpu_relax();
    }
}
