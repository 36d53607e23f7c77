// virtio-blk requests (virtio 1.2, 5.2.6): the wire constants and the one
// place that parses what the guest wrote. parse_request() is a pure function
// of a descriptor chain and guest memory, so it can be fuzzed on its own
// (fuzz/fuzz_blk_request.cpp).
//
// A request is a device-readable stream (16-byte header, then write data or
// discard segments) and a device-writable stream (read data, then one status
// byte, its last byte), however the driver splits them into descriptors.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <vector>

#include "base/result.hpp"
#include "memory/guest_memory.hpp"
#include "virtio/queue.hpp"

namespace popek::virtio::blk {

constexpr uint64_t kSectorSize = 512;
constexpr unsigned kSectorShift = 9;
constexpr uint64_t kHeaderSize = 16;
constexpr uint64_t kSegmentSize = 16;  // struct virtio_blk_discard_write_zeroes
constexpr uint64_t kIdBytes = 20;      // GET_ID: NUL-padded serial

// Feature bits (5.2.3).
constexpr uint64_t kFeatureSizeMax = 1ull << 1;
constexpr uint64_t kFeatureSegMax = 1ull << 2;
constexpr uint64_t kFeatureGeometry = 1ull << 4;
constexpr uint64_t kFeatureRo = 1ull << 5;
constexpr uint64_t kFeatureBlkSize = 1ull << 6;
constexpr uint64_t kFeatureFlush = 1ull << 9;
constexpr uint64_t kFeatureTopology = 1ull << 10;
constexpr uint64_t kFeatureMq = 1ull << 12;
constexpr uint64_t kFeatureDiscard = 1ull << 13;
constexpr uint64_t kFeatureWriteZeroes = 1ull << 14;

// Request types (5.2.6); others, like GET_LIFETIME and SECURE_ERASE, are
// answered UNSUPP.
enum class RequestType : uint32_t {
    In = 0,
    Out = 1,
    Flush = 4,
    GetId = 8,
    Discard = 11,
    WriteZeroes = 13,
};

constexpr uint8_t kStatusOk = 0;
constexpr uint8_t kStatusIoErr = 1;
constexpr uint8_t kStatusUnsupp = 2;

constexpr uint32_t kSegmentFlagUnmap = 1;  // WRITE_ZEROES only; reserved for DISCARD

// What the device accepts; requests outside these limits fail with IOERR.
struct Limits {
    uint64_t capacity = 0;  // in 512-byte sectors
    bool read_only = false;
    uint32_t seg_max = 0;  // data buffers (iovecs) per read/write
    uint32_t max_discard_sectors = 0, max_discard_seg = 0;
    uint32_t max_write_zeroes_sectors = 0, max_write_zeroes_seg = 0;
    bool discard = false;       // VIRTIO_BLK_F_DISCARD negotiated
    bool write_zeroes = false;  // VIRTIO_BLK_F_WRITE_ZEROES negotiated
};

struct Segment {
    uint64_t sector;
    uint32_t num_sectors;
    bool unmap;
};

struct Request {
    RequestType type = RequestType::In;
    uint64_t sector = 0;
    // In and GetId: where the device writes; Out: what it reads. Host
    // addresses inside guest RAM, in stream order.
    std::vector<iovec> data;
    uint64_t data_len = 0;
    std::vector<Segment> segments;  // Discard, WriteZeroes
};

struct ParsedRequest {
    uint64_t status_addr = 0;     // guest-physical address of the status byte
    uint8_t status = kStatusOk;   // not OK: complete at once with this status
    Request request;              // meaningful when status == kStatusOk
};

// Validates every field. Returns an Error only when the chain has no
// device-writable byte to put a status in (the guest broke the framing);
// every other problem is a ParsedRequest with status IOERR or UNSUPP.
base::Result<ParsedRequest> parse_request(const DescriptorChain& chain, const memory::GuestMemory& mem,
                                          const Limits& limits);

}  // namespace popek::virtio::blk
