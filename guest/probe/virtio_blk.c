/* Probe guest: virtio-blk driver and the blk-test / blk-bench workloads.
 * Uses the first virtio-blk function on bus 0. Negotiates INDIRECT_DESC and
 * EVENT_IDX when offered, so every request (header, data, status) is one
 * ring descriptor pointing to an indirect table. */
#include "virtio_blk.h"

void blk_start(struct blk *b, u64 features, u16 vector) {
    u64 f = virtio_negotiate(&b->d, features);
    virtio_setup_queue_vector(&b->d, &b->q, 0, BLK_QUEUE_SIZE, vector);
    virtio_driver_ok(&b->d);
    b->capacity = virtio_cfg64(&b->d, VIRTIO_BLK_CFG_CAPACITY);
    b->size_max = f & VIRTIO_BLK_F_SIZE_MAX ? virtio_cfg32(&b->d, VIRTIO_BLK_CFG_SIZE_MAX) : 0;
    b->seg_max = f & VIRTIO_BLK_F_SEG_MAX ? virtio_cfg32(&b->d, VIRTIO_BLK_CFG_SEG_MAX) : 0;
    b->ro = f & VIRTIO_BLK_F_RO;
    b->flush = f & VIRTIO_BLK_F_FLUSH;
}

void blk_open(struct blk *b, u32 nslots) {
    virtio_open(&b->d, VIRTIO_ID_BLOCK, 0);
    blk_start(b, BLK_FEATURES, VIRTIO_MSI_NO_VECTOR);
    b->slots = dma_alloc(sizeof(struct blk_slot) * nslots, 64);
}

bool blk_submit(struct blk *b, u32 slot, u32 type, u64 sector, void *buf, u32 len) {
    struct blk_slot *s = &b->slots[slot];
    s->type = type;
    s->reserved = 0;
    s->sector = sector;
    s->status = 0xff;

    struct vbuf v[VQ_MAX_SG];
    u32 n = 0;
    v[n++] = (struct vbuf){(u64)s, 16, false};
    bool dev_writes = type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID;
    u32 segs = 0;
    for (u32 off = 0; off < len; segs++) {
        u32 chunk = len - off;
        if (b->size_max && chunk > b->size_max) chunk = b->size_max;
        if (n + 2 > VQ_MAX_SG || (b->seg_max && segs >= b->seg_max))
            probe_error("blk: request exceeds the device's segment limits", NULL);
        v[n++] = (struct vbuf){(u64)buf + off, chunk, dev_writes};
        off += chunk;
    }
    v[n++] = (struct vbuf){(u64)&s->status, 1, true};
    return vq_add(&b->q, v, n, slot);
}

/* One request, waited for; returns its status byte. */
static u8 blk_sync(struct blk *b, u32 type, u64 sector, void *buf, u32 len, const char *what) {
    if (!blk_submit(b, 0, type, sector, buf, len)) probe_error("blk: ring full", NULL);
    vq_kick(&b->q);
    u32 token;
    vq_wait(&b->q, &token, NULL, what);
    return b->slots[token].status;
}

#define BLK_TEST_SECTOR 8
#define BLK_TEST_BYTES 65536u

static void put_status_error(const char *what, u8 status) {
    put_str("PROBE-ERROR blk-test ");
    put_str(what);
    put_str(" status=");
    put_dec(status);
    put_char('\n');
    probe_exit(1);
}

/* blk-test [ROUNDS]: capacity, id, then write / flush / read back / compare
 * a 64 KiB pattern at sector 8, ROUNDS times (default 1: long runs give a
 * snapshot or migration time to land in the middle); or, on a read-only
 * device, a refused write and a read of sectors 0-7. */
void workload_blk_test(u64 rounds) {
    struct blk b;
    blk_open(&b, 1);

    char *id = dma_alloc(VIRTIO_BLK_ID_BYTES + 1, 64);
    u8 st = blk_sync(&b, VIRTIO_BLK_T_GET_ID, 0, id, VIRTIO_BLK_ID_BYTES, "blk get-id");
    if (st != VIRTIO_BLK_S_OK) id[0] = 0; /* unsupported: empty id */
    for (u32 i = 0; i < VIRTIO_BLK_ID_BYTES && id[i]; i++)
        if (id[i] <= ' ' || id[i] > '~') id[i] = '?';
    put_str("PROBE-BLK capacity=");
    put_dec(b.capacity);
    put_str(" id=");
    put_str(id);
    put_str(" ro=");
    put_dec(b.ro);
    put_char('\n');

    u8 *wbuf = dma_alloc(BLK_TEST_BYTES, 4096);
    u8 *rbuf = dma_alloc(BLK_TEST_BYTES, 4096);

    if (b.ro) {
        for (u32 i = 0; i < SECTOR; i++) wbuf[i] = blk_pattern(BLK_TEST_SECTOR, i);
        u8 wst = blk_sync(&b, VIRTIO_BLK_T_OUT, BLK_TEST_SECTOR, wbuf, SECTOR, "blk write (read-only)");
        u32 n = b.capacity < 8 ? (u32)b.capacity : 8;
        st = blk_sync(&b, VIRTIO_BLK_T_IN, 0, rbuf, n * SECTOR, "blk read");
        if (st != VIRTIO_BLK_S_OK) put_status_error("read", st);
        put_str("PROBE-BLK read sectors=");
        put_dec(n);
        put_str(" fnv=");
        put_hex16(fnv1a64(FNV64_INIT, rbuf, n * SECTOR));
        put_str("\nPROBE-DONE blk-test ro-refused status=");
        put_dec(wst);
        put_char('\n');
        if (wst != VIRTIO_BLK_S_IOERR) probe_exit(1);
        return;
    }

    if (b.capacity < BLK_TEST_SECTOR + BLK_TEST_BYTES / SECTOR) probe_error("blk-test: disk too small", NULL);
    for (u32 i = 0; i < BLK_TEST_BYTES; i++) wbuf[i] = blk_pattern(BLK_TEST_SECTOR + i / SECTOR, i % SECTOR);
    u64 fnv = fnv1a64(FNV64_INIT, wbuf, BLK_TEST_BYTES);

    for (u64 r = 0; r < rounds; r++) {
        for (u32 i = 0; i < BLK_TEST_BYTES; i++) rbuf[i] = 0;
        st = blk_sync(&b, VIRTIO_BLK_T_OUT, BLK_TEST_SECTOR, wbuf, BLK_TEST_BYTES, "blk write");
        if (st != VIRTIO_BLK_S_OK) put_status_error("write", st);
        if (b.flush) {
            st = blk_sync(&b, VIRTIO_BLK_T_FLUSH, 0, NULL, 0, "blk flush");
            if (st != VIRTIO_BLK_S_OK) put_status_error("flush", st);
        }
        st = blk_sync(&b, VIRTIO_BLK_T_IN, BLK_TEST_SECTOR, rbuf, BLK_TEST_BYTES, "blk read");
        if (st != VIRTIO_BLK_S_OK) put_status_error("read", st);
        for (u32 i = 0; i < BLK_TEST_BYTES; i++) {
            if (rbuf[i] != wbuf[i]) {
                put_str("PROBE-ERROR blk-test read back differs at byte ");
                put_dec(i);
                put_char('\n');
                probe_exit(1);
            }
        }
    }
    put_str("PROBE-DONE blk-test written=");
    put_dec(BLK_TEST_BYTES);
    put_str(" fnv=");
    put_hex16(fnv);
    put_char('\n');
}

/* ---- blk-bench MODE N ---------------------------------------------------- */
#define BENCH_RAND_QD 32
#define BENCH_SEQ_QD 8
#define BENCH_MAX_QD 32

void workload_blk_bench(const char *mode, const char *count) {
    u64 n;
    if (!mode) probe_error("missing argument for", "blk-bench");
    if (!count) probe_error("missing argument for", "blk-bench MODE");
    if (!parse_u64(count, &n)) probe_error("bad number", count);

    u32 qd, bytes, type;
    bool random = false;
    if (str_eq(mode, "randread4k")) {
        qd = BENCH_RAND_QD, bytes = 4096, type = VIRTIO_BLK_T_IN, random = true;
    } else if (str_eq(mode, "seqread1m")) {
        qd = BENCH_SEQ_QD, bytes = 1u << 20, type = VIRTIO_BLK_T_IN;
    } else if (str_eq(mode, "seqwrite1m")) {
        qd = BENCH_SEQ_QD, bytes = 1u << 20, type = VIRTIO_BLK_T_OUT;
    } else {
        probe_error("unknown blk-bench mode", mode);
    }

    struct blk b;
    blk_open(&b, qd);
    if (type == VIRTIO_BLK_T_OUT && b.ro) probe_error("blk-bench: device is read-only", NULL);
    u64 span = b.capacity / (bytes / SECTOR); /* request-sized blocks on the disk */
    if (span == 0) probe_error("blk-bench: disk smaller than one request", NULL);

    /* Buffers are allocated zeroed, which also faults them in before the
     * clock starts. Writes send whatever is there (zeros plus a stamp). */
    u8 *bufs = dma_alloc((u64)qd * bytes, 4096);
    for (u32 i = 0; i < qd; i++) bufs[(u64)i * bytes] = (u8)(i + 1);
    u32 free_slots[BENCH_MAX_QD];
    u32 nfree = 0;
    for (u32 i = 0; i < qd; i++) free_slots[nfree++] = qd - 1 - i;

    u64 rng = 0x9e3779b97f4a7c15ull;
    u64 submitted = 0, completed = 0;
    u64 start = rdtsc();
    while (completed < n) {
        while (submitted < n && nfree) {
            u64 block;
            if (random) {
                rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17; /* xorshift64 */
                block = rng % span;
            } else {
                block = submitted % span;
            }
            u32 slot = free_slots[nfree - 1];
            if (!blk_submit(&b, slot, type, block * (bytes / SECTOR), bufs + (u64)slot * bytes, bytes)) break;
            nfree--;
            submitted++;
        }
        vq_kick(&b.q);
        u32 slot;
        vq_wait(&b.q, &slot, NULL, "blk-bench");
        do {
            if (b.slots[slot].status != VIRTIO_BLK_S_OK) {
                put_str("PROBE-ERROR blk-bench request status=");
                put_dec(b.slots[slot].status);
                put_char('\n');
                probe_exit(1);
            }
            free_slots[nfree++] = slot;
            completed++;
        } while (vq_poll(&b.q, &slot, NULL));
    }
    u64 cycles = rdtsc() - start;
    u64 regs = g_reg_accesses;

    put_str("PROBE-DONE blk-bench ");
    put_str(mode);
    put_str(" n=");
    put_dec(n);
    put_str(" cycles=");
    put_dec(cycles);
    put_str(" notifies=");
    put_dec(b.q.notifies);
    put_str(" regs=");
    put_dec(regs);
    put_char('\n');
}
