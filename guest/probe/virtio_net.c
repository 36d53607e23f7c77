/* Probe guest: virtio-net and the net-test workload. Negotiates MAC,
 * STATUS and EVENT_IDX only: no offloads, no mergeable buffers, no
 * control queue, one queue pair (receiveq 0, transmitq 1). With VERSION_1
 * every packet starts with a 12-byte struct virtio_net_hdr (num_buffers
 * included), all zero on transmit. */
#include "virtio.h"

#define VIRTIO_NET_F_MAC (1ull << 5)
#define VIRTIO_NET_F_STATUS (1ull << 16)
#define VIRTIO_NET_CFG_MAC 0
#define VIRTIO_NET_CFG_STATUS 6
#define VIRTIO_NET_S_LINK_UP 1

#define NET_HDR 12
#define ETH_HDR 14
#define ETHERTYPE_PROBE 0x88b5 /* IEEE local experimental */
#define NET_PAYLOAD 64
#define NET_BUF 2048u /* >= 12 + 1514: enough without MRG_RXBUF or TSO */
#define NET_RX_BUFS 64u
#define NET_TX_BUFS 64u
/* At most this many frames sent but not yet back: an echo path with small
 * buffers (a UDP socket, a tap queue) then never has to drop any. */
#define NET_WINDOW 32u
#define RECEIVEQ 0
#define TRANSMITQ 1

static void put_mac(const u8 *mac) {
    for (int i = 0; i < 6; i++) {
        if (i) put_char(':');
        put_char("0123456789abcdef"[mac[i] >> 4]);
        put_char("0123456789abcdef"[mac[i] & 15]);
    }
}

/* net-test N: sends N broadcast frames of ethertype 0x88b5 and counts the
 * frames of that ethertype that come back (a host-side echo returns them).
 * Stops when N have come back, or after NET_IDLE_S seconds without
 * progress (then exit status 1): frames can be lost, completions cannot. */
#define NET_IDLE_S 2

void workload_net_test(u64 n) {
    struct virtio_dev d;
    struct virtq rx, tx;
    virtio_open(&d, VIRTIO_ID_NET, 0);
    u64 f = virtio_negotiate(&d, VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS | VIRTIO_F_EVENT_IDX);
    virtio_setup_queue(&d, &rx, RECEIVEQ, 128);
    virtio_setup_queue(&d, &tx, TRANSMITQ, 128);

    u8 mac[6] = {0x02, 0, 0, 0, 0, 0x01}; /* locally administered, if the device has none */
    if (f & VIRTIO_NET_F_MAC)
        for (u32 i = 0; i < 6; i++) mac[i] = virtio_cfg8(&d, VIRTIO_NET_CFG_MAC + i);
    virtio_driver_ok(&d);
    int link = f & VIRTIO_NET_F_STATUS ? virtio_cfg16(&d, VIRTIO_NET_CFG_STATUS) & VIRTIO_NET_S_LINK_UP : -1;
    put_str("PROBE-NET mac=");
    put_mac(mac);
    put_str(" link=");
    if (link < 0) put_str("unknown");
    else put_dec((u64)link);
    put_char('\n');

    u8 *rxbufs = dma_alloc((u64)NET_BUF * NET_RX_BUFS, 4096);
    u8 *txbufs = dma_alloc((u64)NET_BUF * NET_TX_BUFS, 4096);
    for (u32 i = 0; i < NET_RX_BUFS; i++) {
        struct vbuf v = {(u64)(rxbufs + (u64)i * NET_BUF), NET_BUF, true};
        if (!vq_add(&rx, &v, 1, i)) probe_error("net: receiveq full", NULL);
    }
    vq_kick(&rx);

    u32 tx_free[NET_TX_BUFS];
    u32 ntx_free = 0;
    for (u32 i = 0; i < NET_TX_BUFS; i++) tx_free[ntx_free++] = i;

    u64 sent = 0, received = 0, bytes = 0;
    u64 last_progress = rdtsc();
    u64 timeout = tsc_hz() * NET_IDLE_S;
    while (received < n) {
        bool progress = false;
        u32 token, len;
        while (vq_poll(&tx, &token, NULL)) {
            tx_free[ntx_free++] = token;
            progress = true;
        }
        while (sent < n && ntx_free && sent - received < NET_WINDOW) {
            u32 slot = tx_free[ntx_free - 1];
            u8 *p = txbufs + (u64)slot * NET_BUF;
            memset(p, 0, NET_HDR);
            u8 *eth = p + NET_HDR;
            memset(eth, 0xff, 6);
            memcpy(eth + 6, mac, 6);
            eth[12] = ETHERTYPE_PROBE >> 8;
            eth[13] = ETHERTYPE_PROBE & 0xff;
            u8 *payload = eth + ETH_HDR;
            memcpy(payload, "PROBENET", 8);
            u32 seq = (u32)sent;
            memcpy(payload + 8, &seq, 4);
            for (u32 j = 12; j < NET_PAYLOAD; j++) payload[j] = (u8)(seq + j);
            struct vbuf v = {(u64)p, NET_HDR + ETH_HDR + NET_PAYLOAD, false};
            if (!vq_add(&tx, &v, 1, slot)) break;
            ntx_free--;
            sent++;
            progress = true;
        }
        vq_kick(&tx);
        bool refill = false;
        while (vq_poll(&rx, &token, &len)) {
            const u8 *eth = rxbufs + (u64)token * NET_BUF + NET_HDR;
            if (len >= NET_HDR + ETH_HDR && len <= NET_BUF && eth[12] == (ETHERTYPE_PROBE >> 8) &&
                eth[13] == (ETHERTYPE_PROBE & 0xff)) {
                received++;
                bytes += len - NET_HDR - ETH_HDR;
            }
            struct vbuf v = {(u64)(rxbufs + (u64)token * NET_BUF), NET_BUF, true};
            if (!vq_add(&rx, &v, 1, token)) probe_error("net: receiveq full", NULL);
            refill = progress = true;
        }
        if (refill) vq_kick(&rx);
        if (progress) last_progress = rdtsc();
        else if (rdtsc() - last_progress > timeout) break;
        else cpu_relax();
    }

    put_str("PROBE-DONE net-test sent=");
    put_dec(sent);
    put_str(" received=");
    put_dec(received);
    put_str(" bytes=");
    put_dec(bytes);
    put_char('\n');
    if (received < n) probe_exit(1);
}
