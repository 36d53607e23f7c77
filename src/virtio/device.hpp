// What a virtio device implements; the PCI transport (virtio/pci) drives it.
//
// Threading: every device runs on its own event-loop thread. The transport
// calls activate(), process_queue() and reset() on that thread; config-space
// reads and writes come from vCPU threads and must lock whatever they share.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "base/event_loop.hpp"
#include "base/result.hpp"
#include "memory/guest_memory.hpp"
#include "virtio/queue.hpp"

namespace popek::virtio {

enum class DeviceType : uint32_t { Net = 1, Block = 2, Console = 3, Rng = 4 };

// How a device tells the driver something happened.
class Interrupt {
public:
    virtual ~Interrupt() = default;
    virtual void signal_queue(uint16_t queue) = 0;  // used buffers in `queue`
    virtual void signal_config() = 0;               // device config changed
};

// Counters every device keeps (exported as metrics later).
struct DeviceMetrics {
    uint64_t requests = 0;
    uint64_t bytes_read = 0;     // from the backend into the guest
    uint64_t bytes_written = 0;  // from the guest into the backend
    uint64_t errors = 0;
};

// Handed to activate(): everything the device may use while active.
struct ActivateContext {
    const memory::GuestMemory& mem;
    std::span<SplitQueue> queues;  // activated queues, indexed like the device's queues
    Interrupt& interrupt;
    base::EventLoop& loop;         // the device's own thread: add backend fds here
    uint64_t features;             // negotiated feature bits
    // Has the transport call process_queue(queue) on the device thread soon,
    // as a notification from the driver would: for a device that found a
    // broken queue outside process_queue() and must report it from there.
    std::function<void(uint16_t)> kick;
};

class VirtioDevice {
public:
    virtual ~VirtioDevice() = default;

    [[nodiscard]] virtual DeviceType type() const = 0;
    [[nodiscard]] virtual std::string id() const = 0;   // stable id, e.g. "blk0" (snapshot key)
    [[nodiscard]] virtual uint16_t num_queues() const = 0;
    [[nodiscard]] virtual uint16_t queue_max_size() const = 0;
    // Device-specific feature bits plus the generic ones the device can use
    // (kFeatureEventIdx, kFeatureIndirectDesc); the transport adds VERSION_1.
    [[nodiscard]] virtual uint64_t features() const = 0;

    // The device-specific configuration structure (vCPU threads).
    virtual void read_config(uint64_t offset, std::span<uint8_t> data) = 0;
    virtual void write_config(uint64_t offset, std::span<const uint8_t> data) = 0;

    // DRIVER_OK. An error puts the device into DEVICE_NEEDS_RESET.
    virtual base::Result<void> activate(const ActivateContext& ctx) = 0;
    // The driver notified `queue`. Return an error when the guest broke the
    // rules (malformed chain): the transport sets DEVICE_NEEDS_RESET.
    virtual base::Result<void> process_queue(uint16_t queue) = 0;
    // Stop using the queues, finish or drop in-flight work, remove fds from
    // the loop; afterwards the device is as after construction.
    virtual void reset() = 0;

    // The VM is pausing (snapshot, migration): finish or hand back every
    // request in flight and stop touching guest memory until resume(). Both
    // run on the device thread while the device is active.
    virtual void pause() {}
    virtual void resume() {}

    [[nodiscard]] virtual DeviceMetrics metrics() const = 0;
};

}  // namespace popek::virtio
