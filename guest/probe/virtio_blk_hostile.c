/* Probe guest: the blk-hostile workload. A driver that breaks the virtio
 * rules on purpose, one malformed request at a time, to check that the
 * device (the VMM) survives: it should refuse the request, set
 * DEVICE_NEEDS_RESET (virtio 1.2, 2.1.2), and work again after a reset.
 *
 * Every case builds its request by hand in the freshly initialized queue
 * (descriptors 0-2, indirect tables of its own), publishes it and always
 * notifies. The hostile request is a 4 KiB write of 0xee bytes to
 * HOSTILE_SECTOR: a device that carried it out anyway leaves a trace in the
 * disk image. After each case: reset, full re-initialization and a valid
 * 4 KiB write and read back at sector 8 * case number (1-based), with the
 * blk-test pattern. `blk-hostile CASE` runs only that case. */
#include "virtio_blk.h"

#define HOSTILE_SECTOR 2048u /* 1 MiB into the disk: no valid request goes there */
#define HOSTILE_BYTES 4096u
#define HOSTILE_HIGH_ADDR 0x7f0000000000ull /* far above any RAM (PML4 slot 0xfe) */
#define ROUND_TRIP_BYTES 4096u

enum {
    C_LOOP,            /* desc 0 -> 1 -> 0, both device-readable */
    C_ADDR_HIGH,       /* data buffer at 0x7f0000000000 */
    C_ADDR_BEYOND_RAM, /* data buffer 1 GiB above the end of RAM */
    C_ADDR_STRADDLE,   /* data buffer whose second half lies past the end of RAM */
    C_ZERO_LEN,        /* data buffer of length 0 */
    C_HEAD_OOB,        /* avail ring entry = queue size */
    C_AVAIL_JUMP,      /* avail idx queue size + 1 ahead */
    C_NESTED_INDIRECT, /* an indirect table whose entry is INDIRECT again */
    NCASES
};
static const char *const case_names[NCASES] = {
    "loop",     "addr-high", "addr-beyond-ram", "addr-straddle",
    "zero-len", "head-oob",  "avail-jump",      "nested-indirect",
};

/* End of the highest RAM entry in the memory map: the byte after it is not
 * RAM (no other entry can cover it). */
static u64 ram_end(void) {
    const struct hvm_start_info *si = g_start_info;
    if (si->version < 1 || !si->memmap_paddr || !si->memmap_entries)
        probe_error("blk-hostile: no memory map", NULL);
    const struct hvm_memmap_entry *map = (const struct hvm_memmap_entry *)si->memmap_paddr;
    u64 end = 0;
    for (u32 i = 0; i < si->memmap_entries; i++)
        if (map[i].type == 1 && map[i].addr + map[i].size > end) end = map[i].addr + map[i].size;
    return end;
}

static void set_desc(struct virtq_desc *d, u64 addr, u32 len, u16 flags, u16 next) {
    d->addr = addr;
    d->len = len;
    d->flags = flags;
    d->next = next;
}

struct hostile {
    struct blk b;
    struct blk_slot *hdr;         /* the hostile request's header and status */
    u8 *data;                     /* HOSTILE_BYTES of 0xee */
    struct virtq_desc *t1, *t2;   /* indirect tables for nested-indirect */
    u64 ram_end;
};

/* Puts case `c`'s request into the queue, publishes it and notifies. */
static void submit_hostile(struct hostile *h, u32 c) {
    struct virtq *q = &h->b.q;
    struct virtq_desc *d = q->desc;
    h->hdr->type = VIRTIO_BLK_T_OUT;
    h->hdr->reserved = 0;
    h->hdr->sector = HOSTILE_SECTOR;
    h->hdr->status = 0xff;
    /* A valid header, data, status chain at descriptors 0-2, then the
     * case's change to it. */
    set_desc(&d[0], (u64)h->hdr, 16, VIRTQ_DESC_F_NEXT, 1);
    set_desc(&d[1], (u64)h->data, HOSTILE_BYTES, VIRTQ_DESC_F_NEXT, 2);
    set_desc(&d[2], (u64)&h->hdr->status, 1, VIRTQ_DESC_F_WRITE, 0);
    u16 head = 0, advance = 1;
    switch (c) {
    case C_LOOP: d[1].next = 0; break;
    case C_ADDR_HIGH: d[1].addr = HOSTILE_HIGH_ADDR; break;
    case C_ADDR_BEYOND_RAM: d[1].addr = h->ram_end + (1ull << 30); break;
    case C_ADDR_STRADDLE: d[1].addr = h->ram_end - HOSTILE_BYTES / 2; break;
    case C_ZERO_LEN: d[1].len = 0; break;
    case C_HEAD_OOB: head = q->size; break;
    case C_AVAIL_JUMP:
        /* Every ring entry names the valid chain; only the index is wrong. */
        for (u16 i = 0; i < q->size; i++) q->avail->ring[i] = 0;
        advance = (u16)(q->size + 1);
        break;
    case C_NESTED_INDIRECT:
        set_desc(&h->t2[0], (u64)h->hdr, 16, VIRTQ_DESC_F_NEXT, 1);
        set_desc(&h->t2[1], (u64)h->data, HOSTILE_BYTES, VIRTQ_DESC_F_NEXT, 2);
        set_desc(&h->t2[2], (u64)&h->hdr->status, 1, VIRTQ_DESC_F_WRITE, 0);
        set_desc(&h->t1[0], (u64)h->t2, 3 * 16, VIRTQ_DESC_F_INDIRECT, 0);
        set_desc(&d[0], (u64)h->t1, 16, VIRTQ_DESC_F_INDIRECT, 0);
        break;
    }
    q->avail->ring[q->avail_shadow & (q->size - 1)] = head;
    compiler_barrier();
    *(volatile u16 *)&q->avail->idx = (u16)(q->avail_shadow + advance);
    full_barrier();
    mmio_st16(q->notify_addr, q->index); /* always, whatever avail_event says */
}

/* Polls device_status until NEEDS_RESET or the timeout. */
static bool wait_needs_reset(struct hostile *h) {
    u64 start = rdtsc();
    while (!(virtio_status(&h->b.d) & VIRTIO_STATUS_NEEDS_RESET)) {
        if (rdtsc() - start > virtio_timeout_ticks()) return false;
        cpu_relax();
    }
    return true;
}

/* One valid request on the re-initialized device: true if it completed
 * with VIRTIO_BLK_S_OK. */
static bool round_trip_one(struct blk *b, u32 type, u64 sector, u8 *buf) {
    if (!blk_submit(b, 0, type, sector, buf, ROUND_TRIP_BYTES)) return false;
    vq_kick(&b->q);
    u32 token;
    return vq_wait_quiet(&b->q, &token, NULL) && token == 0 && b->slots[0].status == VIRTIO_BLK_S_OK;
}

/* Reset, re-initialize, write and read back 4 KiB at sector 8 * (c + 1). */
static bool recover(struct hostile *h, u32 c, u8 *wbuf, u8 *rbuf) {
    struct blk *b = &h->b;
    if (!virtio_reset(&b->d)) return false;
    blk_start(b, BLK_FEATURES, VIRTIO_MSI_NO_VECTOR);
    u64 sector = 8ull * (c + 1);
    for (u32 i = 0; i < ROUND_TRIP_BYTES; i++) wbuf[i] = blk_pattern(sector + i / SECTOR, i % SECTOR);
    memset(rbuf, 0, ROUND_TRIP_BYTES);
    if (!round_trip_one(b, VIRTIO_BLK_T_OUT, sector, wbuf)) return false;
    if (!round_trip_one(b, VIRTIO_BLK_T_IN, sector, rbuf)) return false;
    return memcmp(wbuf, rbuf, ROUND_TRIP_BYTES) == 0;
}

void workload_blk_hostile(const char *only) {
    u32 first = 0, last = NCASES - 1;
    if (only) {
        while (first < NCASES && !str_eq(only, case_names[first])) first++;
        if (first == NCASES) probe_error("unknown blk-hostile case", only);
        last = first;
    }
    static struct hostile h;
    blk_open(&h.b, 1);
    if (h.b.ro) probe_error("blk-hostile: device is read-only", NULL);
    if (h.b.capacity < HOSTILE_SECTOR + HOSTILE_BYTES / SECTOR) probe_error("blk-hostile: disk too small", NULL);
    if (!(h.b.d.features & VIRTIO_F_INDIRECT_DESC)) probe_error("blk-hostile: no INDIRECT_DESC", NULL);
    h.ram_end = ram_end();
    h.hdr = dma_alloc(sizeof(struct blk_slot), 64);
    h.data = dma_alloc(HOSTILE_BYTES, 4096);
    memset(h.data, 0xee, HOSTILE_BYTES);
    h.t1 = dma_alloc(16 * 4, 64);
    h.t2 = dma_alloc(16 * 4, 64);
    u8 *wbuf = dma_alloc(ROUND_TRIP_BYTES, 4096);
    u8 *rbuf = dma_alloc(ROUND_TRIP_BYTES, 4096);

    u32 flagged = 0, recovered = 0;
    for (u32 c = first; c <= last; c++) {
        submit_hostile(&h, c);
        bool needs_reset = wait_needs_reset(&h);
        flagged += needs_reset;
        put_str("PROBE-HOSTILE ");
        put_str(case_names[c]);
        put_str(" needs_reset=");
        put_dec(needs_reset);
        if (!needs_reset) { /* what the device did instead */
            put_str(" status=");
            put_hex(virtio_status(&h.b.d));
            put_str(" used=");
            put_dec(*(volatile u16 *)&h.b.q.used->idx);
            put_str(" req_status=");
            put_dec(h.hdr->status);
        }
        put_char('\n');

        bool ok = recover(&h, c, wbuf, rbuf);
        recovered += ok;
        put_str("PROBE-HOSTILE ");
        put_str(case_names[c]);
        put_str(" recovered=");
        put_dec(ok);
        put_char('\n');
    }
    put_str("PROBE-DONE blk-hostile cases=");
    put_dec(last - first + 1);
    put_str(" recovered=");
    put_dec(recovered);
    put_char('\n');
    if (flagged != last - first + 1 || recovered != last - first + 1) probe_exit(1);
}
