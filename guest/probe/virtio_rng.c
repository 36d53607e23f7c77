/* Probe guest: virtio-rng (entropy device) and the rng-test workload. One
 * queue (requestq); the device fills device-writable buffers and reports in
 * the used ring how many bytes it wrote (possibly fewer than asked). Plain
 * (direct) descriptors, no EVENT_IDX. */
#include "virtio.h"

#define RNG_CHUNK 4096u
#define RNG_SLOTS 4u

/* rng-test N: reads N bytes, counts the distinct byte values among them. */
void workload_rng_test(u64 n) {
    struct virtio_dev d;
    struct virtq q;
    virtio_open(&d, VIRTIO_ID_RNG, 0);
    virtio_negotiate(&d, 0);
    virtio_setup_queue(&d, &q, 0, 64);
    virtio_driver_ok(&d);

    u8 *bufs = dma_alloc((u64)RNG_CHUNK * RNG_SLOTS, 4096);
    u32 slot_len[RNG_SLOTS];
    u32 idle = (1u << RNG_SLOTS) - 1; /* bitmask of free slots */
    u64 seen[4] = {0, 0, 0, 0};
    u64 got = 0, asked = 0; /* bytes received / bytes in outstanding requests */
    while (got < n) {
        /* Keep up to RNG_SLOTS requests out, never asking for more than is
         * still missing. */
        while (idle && got + asked < n) {
            u32 slot = (u32)__builtin_ctz(idle);
            u64 want = n - got - asked;
            u32 len = want < RNG_CHUNK ? (u32)want : RNG_CHUNK;
            struct vbuf v = {(u64)(bufs + (u64)slot * RNG_CHUNK), len, true};
            if (!vq_add(&q, &v, 1, slot)) break;
            idle &= ~(1u << slot);
            slot_len[slot] = len;
            asked += len;
        }
        vq_kick(&q);
        u32 slot, len;
        vq_wait(&q, &slot, &len, "rng read");
        do {
            const u8 *p = bufs + (u64)slot * RNG_CHUNK;
            if (len > slot_len[slot]) len = slot_len[slot];
            for (u32 i = 0; i < len; i++) seen[p[i] >> 6] |= 1ull << (p[i] & 63);
            got += len;
            asked -= slot_len[slot];
            idle |= 1u << slot;
        } while (vq_poll(&q, &slot, &len));
    }

    u32 distinct = 0; /* no libgcc: count bits by hand (x86-64 baseline has no popcnt) */
    for (int i = 0; i < 4; i++)
        for (u64 w = seen[i]; w; w &= w - 1) distinct++;
    put_str("PROBE-DONE rng-test bytes=");
    put_dec(got);
    put_str(" distinct=");
    put_dec(distinct);
    put_char('\n');
}
