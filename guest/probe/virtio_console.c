/* Probe guest: virtio-console and the console-test workload. No features
 * beyond VERSION_1 (in particular not MULTIPORT), so the device has exactly
 * port 0's two queues: receiveq 0 and transmitq 1. Only the transmitq is set
 * up. */
#include "virtio.h"

#define CONSOLE_TRANSMITQ 1

void workload_console_test(void) {
    static const char msg[] = "PROBE-VIRTIO-CONSOLE hello\n";
    struct virtio_dev d;
    struct virtq q;
    virtio_open(&d, VIRTIO_ID_CONSOLE, 0);
    virtio_negotiate(&d, 0);
    virtio_setup_queue(&d, &q, CONSOLE_TRANSMITQ, 16);
    virtio_driver_ok(&d);

    u32 len = sizeof(msg) - 1;
    char *buf = dma_alloc(len, 64);
    memcpy(buf, msg, len);
    struct vbuf v = {(u64)buf, len, false};
    if (!vq_add(&q, &v, 1, 0)) probe_error("console: ring full", NULL);
    vq_kick(&q);
    vq_wait(&q, NULL, NULL, "console write");
    put_str("PROBE-DONE console-test\n");
}
