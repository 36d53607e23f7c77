/* Probe guest: the virtio-blk driver shared by virtio_blk.c (blk-test,
 * blk-bench), virtio_blk_hostile.c (blk-hostile) and virtio_blk_msix.c
 * (blk-msix). Ring 3, first virtio-blk function on bus 0. */
#ifndef PROBE_VIRTIO_BLK_H
#define PROBE_VIRTIO_BLK_H

#include "virtio.h"

#define VIRTIO_BLK_F_SIZE_MAX (1ull << 1)
#define VIRTIO_BLK_F_SEG_MAX (1ull << 2)
#define VIRTIO_BLK_F_RO (1ull << 5)
#define VIRTIO_BLK_F_BLK_SIZE (1ull << 6)
#define VIRTIO_BLK_F_FLUSH (1ull << 9)

#define VIRTIO_BLK_CFG_CAPACITY 0
#define VIRTIO_BLK_CFG_SIZE_MAX 8
#define VIRTIO_BLK_CFG_SEG_MAX 12

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_ID_BYTES 20

#define SECTOR 512ull
#define BLK_QUEUE_SIZE 128

/* What blk_open() negotiates when the device offers it. */
#define BLK_FEATURES                                                                                  \
    (VIRTIO_BLK_F_SIZE_MAX | VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_RO | VIRTIO_BLK_F_BLK_SIZE |         \
     VIRTIO_BLK_F_FLUSH | VIRTIO_F_INDIRECT_DESC | VIRTIO_F_EVENT_IDX)

/* One request's header and status byte (DMA memory). */
struct blk_slot {
    u32 type, reserved;
    u64 sector;
    u8 status;
    u8 pad[7];
};

struct blk {
    struct virtio_dev d;
    struct virtq q;
    u64 capacity; /* 512-byte sectors */
    u32 size_max; /* per data segment, 0 = no limit */
    u32 seg_max;  /* data segments per request, 0 = no limit */
    bool ro, flush;
    struct blk_slot *slots;
};

/* virtio_open, blk_start(BLK_FEATURES, no vector), and `nslots` slots. */
void blk_open(struct blk *b, u32 nslots);
/* Reset and feature negotiation (`features` & offered), queue 0 (new ring
 * memory, MSI-X `vector` or VIRTIO_MSI_NO_VECTOR), DRIVER_OK, then the
 * configuration. For an opened device: also re-initializes it after a
 * reset. */
void blk_start(struct blk *b, u64 features, u16 vector);
/* Queues request `slot`: header, data (split at size_max), status. False if
 * the ring is full. Not kicked. */
bool blk_submit(struct blk *b, u32 slot, u32 type, u64 sector, void *buf, u32 len);

/* The test pattern: byte i (0-511) of sector s. */
static inline u8 blk_pattern(u64 s, u64 i) { return (u8)(s * 131 + (s >> 8) * 17 + i * 7 + (i >> 8) * 3); }

#endif
