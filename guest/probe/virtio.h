/* Probe guest: PCI enumeration and modern virtio-pci (virtio 1.2) drivers.
 * Everything runs in ring 3 and polls: no interrupts, MSI-X left disabled,
 * every queue's MSI-X vector set to NO_VECTOR. Device registers (ECAM, BARs)
 * are plain MMIO through the identity map, one VM exit per access, so the
 * drivers touch them as little as possible: completions are found by
 * polling the used ring in RAM, never the ISR register. */
#ifndef PROBE_VIRTIO_H
#define PROBE_VIRTIO_H

#include "probe.h"

/* ---- MMIO and port I/O: one instruction each, exact width ------------ */
/* Device-register accesses made by the drivers (MMIO and PCI config port
 * I/O): each one is a VM exit. blk-bench reports it. */
extern u64 g_reg_accesses;

static inline u8 mmio_ld8(u64 a) {
    u8 v;
    g_reg_accesses++;
    __asm__ volatile("movb (%1), %0" : "=q"(v) : "r"(a) : "memory");
    return v;
}
static inline u16 mmio_ld16(u64 a) {
    u16 v;
    g_reg_accesses++;
    __asm__ volatile("movw (%1), %0" : "=r"(v) : "r"(a) : "memory");
    return v;
}
static inline u32 mmio_ld32(u64 a) {
    u32 v;
    g_reg_accesses++;
    __asm__ volatile("movl (%1), %0" : "=r"(v) : "r"(a) : "memory");
    return v;
}
static inline void mmio_st8(u64 a, u8 v) {
    g_reg_accesses++;
    __asm__ volatile("movb %0, (%1)" ::"q"(v), "r"(a) : "memory");
}
static inline void mmio_st16(u64 a, u16 v) {
    g_reg_accesses++;
    __asm__ volatile("movw %0, (%1)" ::"r"(v), "r"(a) : "memory");
}
static inline void mmio_st32(u64 a, u32 v) {
    g_reg_accesses++;
    __asm__ volatile("movl %0, (%1)" ::"r"(v), "r"(a) : "memory");
}

static inline u32 pio_inl(u16 port) {
    u32 v;
    g_reg_accesses++;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline void pio_outl(u16 port, u32 v) {
    g_reg_accesses++;
    __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port));
}

/* x86 is TSO: the only reordering a device can observe is a later load
 * passing an earlier store, which mfence prevents. */
static inline void compiler_barrier(void) { __asm__ volatile("" ::: "memory"); }
static inline void full_barrier(void) { __asm__ volatile("mfence" ::: "memory"); }

/* ---- PCI (pci.c) ------------------------------------------------------ */
#define PCI_VENDOR_VIRTIO 0x1af4

struct pci_dev {
    u8 bus, dev, fn;
    u16 vendor, device, subsys;
    u64 ecam;     /* config space address of this function, 0 = use 0xcf8/0xcfc */
    u64 bar[6];   /* memory BAR addresses after pci_enable() (0: none / I/O) */
};

u32 pci_read32(const struct pci_dev *p, u16 off);
u16 pci_read16(const struct pci_dev *p, u16 off);
u8 pci_read8(const struct pci_dev *p, u16 off);
void pci_write32(const struct pci_dev *p, u16 off, u32 v);
void pci_write16(const struct pci_dev *p, u16 off, u16 v);
/* The nth (0-based) virtio function of `type` on bus 0 (modern id
 * 0x1040 + type, or a transitional 0x1000-0x103f whose subsystem id is
 * `type`); false if there is none. */
bool pci_find_virtio(u16 type, u32 nth, struct pci_dev *out);
/* Reads (and if needed assigns) the memory BARs, then enables memory space
 * and bus mastering. */
void pci_enable(struct pci_dev *p);
/* Config-space offset of the first capability with `id`, 0 if none. */
u8 pci_find_cap(const struct pci_dev *p, u8 id);

/* ---- virtio-pci transport and split virtqueues (virtio.c) ------------ */
#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG 4

#define VIRTIO_F_INDIRECT_DESC (1ull << 28)
#define VIRTIO_F_EVENT_IDX (1ull << 29)
#define VIRTIO_F_VERSION_1 (1ull << 32)

#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED 0x80

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY 1

struct virtq_desc {
    u64 addr;
    u32 len;
    u16 flags, next;
};
struct virtq_avail {
    u16 flags, idx;
    u16 ring[]; /* size entries, then used_event */
};
struct virtq_used_elem {
    u32 id, len;
};
struct virtq_used {
    u16 flags, idx;
    struct virtq_used_elem ring[]; /* size entries, then avail_event */
};

/* Largest chain vq_add() accepts; also the size of each indirect table. */
#define VQ_MAX_SG 32

struct virtq {
    struct virtio_dev *dev;
    u16 index, size;
    bool indirect;  /* VIRTIO_F_INDIRECT_DESC negotiated: chains of 2+ use a table */
    bool event_idx; /* VIRTIO_F_EVENT_IDX negotiated */
    bool irq;       /* used-buffer notifications wanted (an MSI-X vector is set) */
    struct virtq_desc *desc;
    struct virtq_avail *avail;
    struct virtq_used *used;
    volatile u16 *used_event;  /* &avail->ring[size]: driver -> device */
    volatile u16 *avail_event; /* &used->ring[size]: device -> driver */
    struct virtq_desc *indirect_tables; /* size tables of VQ_MAX_SG, one per head */
    u64 notify_addr;
    u16 free_head, num_free;
    u16 avail_shadow;  /* next avail->idx to publish */
    u16 avail_kicked;  /* avail->idx at the last vq_kick() */
    u16 last_used;
    u16 *next;         /* shadow of desc[].next: the device may not change ours */
    u16 *chain_len;    /* per head: ring descriptors it holds */
    u32 *token;        /* per head: the caller's token */
    u64 notifies;      /* notify-register writes (VM exits) done by vq_kick() */
    u64 kicks;         /* vq_kick() calls that published something */
};

struct virtio_dev {
    struct pci_dev pci;
    u16 type;
    u64 common;         /* virtio_pci_common_cfg */
    u64 notify_base;
    u32 notify_mult;
    u64 isr;
    u64 device_cfg;     /* device-specific configuration, 0 if absent */
    u64 features;       /* negotiated */
    u64 offered;        /* what the device offered */
    u16 num_queues;
};

/* One buffer of a request: guest-physical (= virtual) address and length;
 * `write` means device-writable. Readable buffers must come first. */
struct vbuf {
    u64 addr;
    u32 len;
    bool write;
};

/* Finds the nth device of `type` and maps its capabilities; probe_error if
 * there is none. */
void virtio_open(struct virtio_dev *d, u16 type, u32 nth);
/* Reset, ACKNOWLEDGE, DRIVER, features (VERSION_1 plus `wanted` & offered),
 * FEATURES_OK. Returns the negotiated set. */
u64 virtio_negotiate(struct virtio_dev *d, u64 wanted);
/* Sets up queue `index` with at most `max_size` entries (rounded down to a
 * power of two) in DMA memory and enables it. */
void virtio_setup_queue(struct virtio_dev *d, struct virtq *q, u16 index, u16 max_size);
/* The same, with queue_msix_vector = `vector` (read back: virtio_fail if the
 * device refuses it). With a vector other than VIRTIO_MSI_NO_VECTOR the
 * driver asks for a used-buffer notification after every completion
 * (avail flags 0, or used_event = the next used index with EVENT_IDX). */
void virtio_setup_queue_vector(struct virtio_dev *d, struct virtq *q, u16 index, u16 max_size, u16 vector);
/* Writes device_status 0 and waits until it reads back 0; false after
 * VIRTIO_TIMEOUT_S seconds. */
bool virtio_reset(struct virtio_dev *d);
void virtio_driver_ok(struct virtio_dev *d);
u8 virtio_status(const struct virtio_dev *d);
/* Device-specific configuration reads at `off` (config_generation checked
 * for the 64-bit one). */
u8 virtio_cfg8(const struct virtio_dev *d, u32 off);
u16 virtio_cfg16(const struct virtio_dev *d, u32 off);
u32 virtio_cfg32(const struct virtio_dev *d, u32 off);
u64 virtio_cfg64(const struct virtio_dev *d, u32 off);

/* Adds one request (n buffers) and remembers `token` for its completion.
 * Not visible to the device before vq_kick(). Returns false if the ring is
 * full. */
bool vq_add(struct virtq *q, const struct vbuf *bufs, u32 n, u32 token);
/* Publishes the added requests and notifies the device unless it asked not
 * to be (VIRTQ_USED_F_NO_NOTIFY, or avail_event with EVENT_IDX). */
void vq_kick(struct virtq *q);
/* Takes one completion off the used ring, if there is one. */
bool vq_poll(struct virtq *q, u32 *token, u32 *len);
/* vq_poll until a completion arrives; after VIRTIO_TIMEOUT_S seconds without
 * one, PROBE-ERROR timeout <what> (with the device status). */
void vq_wait(struct virtq *q, u32 *token, u32 *len, const char *what);
/* vq_poll until a completion arrives; false after VIRTIO_TIMEOUT_S seconds
 * (no PROBE-ERROR). */
bool vq_wait_quiet(struct virtq *q, u32 *token, u32 *len);
/* Free ring descriptors. */
static inline u16 vq_free(const struct virtq *q) { return q->num_free; }

/* How long a device may owe an expected completion, reset or interrupt.
 * Generous: on a loaded host an fsync behind other tests' writeback, or a
 * device thread waiting for a core, takes seconds, and the guest's TSC runs
 * on meanwhile. The tests driving the probe keep their own deadlines. */
#define VIRTIO_TIMEOUT_S 10
/* VIRTIO_TIMEOUT_S in TSC ticks. */
u64 virtio_timeout_ticks(void);

#define VIRTIO_MSI_NO_VECTOR 0xffff

/* ---- DMA memory: a bump allocator over [32 MiB, 48 MiB) --------------- */
#define DMA_BASE (32ull << 20)
#define DMA_SIZE (16ull << 20)
/* Zeroed, `align` a power of two; probe_error when the region is used up or
 * is not RAM. */
void *dma_alloc(u64 size, u64 align);
/* Like dma_alloc but not zeroed (large data buffers). */
void *dma_alloc_raw(u64 size, u64 align);

/* ---- shared helpers ---------------------------------------------------- */
#define FNV64_INIT 0xcbf29ce484222325ull
static inline u64 fnv1a64(u64 h, const u8 *p, u64 n) {
    for (u64 i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

#endif
