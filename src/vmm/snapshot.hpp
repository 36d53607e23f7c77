// Snapshot directories: what popek writes on `PUT /vm/snapshot` and reads
// on `popek restore`.
//
//   DIR/state.snap   the state tree (migration/snapshot_file.hpp: magic,
//                    version, checksum, CBOR): config, vCPUs, VM (irqchip,
//                    PIT, clock), every device keyed by its stable id
//   DIR/memory.bin   guest RAM, sparse (migration/memory_file.hpp)
//
// state.snap is written last, so a directory whose save failed half-way
// has no state file and is refused.
#pragma once

#include <map>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/result.hpp"
#include "devices/legacy/ged.hpp"
#include "devices/legacy/i8042.hpp"
#include "devices/legacy/post_code.hpp"
#include "devices/serial/serial.hpp"
#include "hv/x86_state.hpp"
#include "migration/memory_file.hpp"
#include "virtio/blk/state.hpp"
#include "virtio/console/state.hpp"
#include "virtio/net/state.hpp"
#include "virtio/pci/virtio_pci.hpp"
#include "virtio/rng/state.hpp"
#include "vmm/config.hpp"

namespace popek::vmm {

constexpr const char* kStateFileName = "state.snap";
constexpr const char* kMemoryFileName = "memory.bin";

struct RestoreOptions {
    std::string dir;
    bool eager = false;           // read all of memory up front (else map it copy-on-write)
    std::string serial;           // "" keeps the snapshot's serial setting; else like --serial
    HvEngine engine = HvEngine::Auto;  // Auto: the backend that saved the snapshot
};

// A virtio device as saved: its transport's registers and its own State.
struct SavedVirtio {
    virtio::pci::VirtioPciDevice::State transport;
    std::variant<virtio::blk::State, virtio::net::State, virtio::console::State, virtio::rng::State> device;
};

// Every device's saved state, keyed as in the snapshot tree.
struct SavedDevices {
    devices::Serial::State com1;
    devices::I8042::State i8042;
    devices::PostCode::State post_code;
    devices::Ged::State ged;
    std::map<std::string, SavedVirtio> virtio;  // by device id ("disk0", "net0", "rng0", "console0")
};

// A snapshot whose state file checked out and decoded completely: every
// byte of it is read here (and fuzzed), before anything is built.
struct LoadedSnapshot {
    std::string dir;
    bool eager = false;
    VmConfig config;
    migration::MemoryFileInfo memory;
    hv::VmState vm;
    std::vector<hv::VcpuState> vcpus;
    SavedDevices devices;
};

// Decodes a checked state tree (the configuration decides which devices
// must be present and of which type). Never throws.
base::Result<LoadedSnapshot> decode_snapshot_tree(const nlohmann::json& tree);
// Reads DIR/state.snap, checks and decodes it.
base::Result<LoadedSnapshot> load_snapshot(const RestoreOptions& options);

}  // namespace popek::vmm
