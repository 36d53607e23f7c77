// libFuzzer target: the snapshot reader (what `popek restore` trusts least).
//
// Input layout:
//   [0]     mode: even — the bytes after it are a whole state file
//           (header + payload) for decode_state; odd — they are the CBOR
//           payload alone, framed with a correct header and checksum here,
//           so the fuzzer reaches the tree decoder past the checksum
//   [1..]   the bytes
//
// Whatever the input: decode_state() and decode_snapshot_tree() return an
// Error or a snapshot whose vCPU count matches its configuration; nothing
// throws, crashes or reads out of bounds.
#include "fuzz_common.hpp"

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "migration/cbor.hpp"
#include "migration/snapshot_file.hpp"
#include "vmm/snapshot.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    const bool framed_here = (data[0] & 1) != 0;
    std::vector<uint8_t> bytes(data + 1, data + size);
    if (framed_here) {
        auto tree = popek::migration::decode_cbor(bytes);
        if (!tree) return 0;
        bytes = popek::migration::encode_state(*tree);
    }
    auto tree = popek::migration::decode_state(bytes);
    if (!tree) return 0;
    auto snap = popek::vmm::decode_snapshot_tree(*tree);
    if (snap) popek::fuzz::check(snap->vcpus.size() == snap->config.cpus);
    return 0;
}
