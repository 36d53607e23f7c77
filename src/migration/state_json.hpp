// JSON forms of the VM configuration and of every device's State, for the
// snapshot tree. Reading uses nlohmann's at()/get(), which throw on a
// missing field or a wrong type: only the snapshot reader decodes these, and
// it turns every json::exception into one Error (snapshot.cpp).
#pragma once

#include <nlohmann/json.hpp>

#include "devices/legacy/ged.hpp"
#include "devices/legacy/i8042.hpp"
#include "migration/memory_file.hpp"
#include "devices/legacy/post_code.hpp"
#include "devices/pci/msix.hpp"
#include "devices/serial/serial.hpp"
#include "virtio/blk/state.hpp"
#include "virtio/console/state.hpp"
#include "virtio/net/state.hpp"
#include "virtio/pci/virtio_pci.hpp"
#include "virtio/queue.hpp"
#include "vmm/config.hpp"

namespace popek::migration {
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(MemoryFileInfo, size, pages_written, digest)
}

namespace popek::vmm {

NLOHMANN_JSON_SERIALIZE_ENUM(SerialMode, {{SerialMode::Stdio, "stdio"},
                                          {SerialMode::File, "file"},
                                          {SerialMode::Pty, "pty"},
                                          {SerialMode::None, "none"}})
NLOHMANN_JSON_SERIALIZE_ENUM(ConsoleDevice, {{ConsoleDevice::Serial, "serial"}, {ConsoleDevice::Virtio, "virtio"}})
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(DiskConfig, path, readonly, id, engine, queues)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(NetConfig, tap, mac, mac_given, id)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(VmConfig, kernel_path, initrd_path, cmdline, cpus, memory_bytes, serial,
                                   serial_path, kvm_device, disks, nets, rng, console)

}  // namespace popek::vmm

namespace popek::devices {

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Serial::State, ier, lcr, mcr, scr, dll, dlm, fcr, thr_empty_pending, rx)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(I8042::State, command_byte, pending_command, output)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(PostCode::State, last_code, writes)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Ged::State, pending)

}  // namespace popek::devices

namespace popek::devices::pci {

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Msix::Entry, address, data, control)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Msix::State, enabled, function_masked, entries, pending)

}  // namespace popek::devices::pci

namespace popek::virtio {

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(SplitQueue::State, size, ready, desc_addr, avail_addr, used_addr, next_avail,
                                   next_used, msix_vector, event_idx, indirect)

}  // namespace popek::virtio

namespace popek::virtio::pci {

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(VirtioPciDevice::State, status, config_generation, isr, device_feature_select,
                                   driver_feature_select, driver_features, queue_select, config_msix_vector, queues,
                                   msix, pci_config)

}  // namespace popek::virtio::pci

namespace popek::virtio::blk {
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(State, capacity, read_only, num_queues, features)
}
namespace popek::virtio::net {
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(State, mac, link_up, mtu)
}
namespace popek::virtio::console {
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(State, pending_input)
}
