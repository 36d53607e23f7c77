// virtio-net (virtio 1.2 section 5.1): one queue pair, receiveq 0 and
// transmitq 1, no control queue, in front of a net::NetBackend (a TAP).
//
// Features: MAC, STATUS, MTU, EVENT_IDX, INDIRECT_DESC; CSUM, HOST_TSO4/6
// and HOST_ECN when the backend takes offloaded frames; GUEST_CSUM,
// GUEST_TSO4/6 and GUEST_ECN for the offloads the backend can deliver; at
// activation the backend is told (set_offloads) exactly the GUEST_* ones the
// driver accepted. No MRG_RXBUF: a received frame must fit one chain.
//
// Receive: the backend fd sits in the device's EventLoop while the driver
// has receive buffers. Each frame is read straight into the next chain
// (header into our copy, fitted to the driver, then written). When the
// receive queue runs dry the fd leaves the loop, frames wait in the kernel,
// and the driver's next receive-queue notification brings it back.
// Transmit: each chain is checked (parse_tx_request) and written with one
// writev; when the backend would block, the rest waits for EPOLLOUT.
//
// What the hostile guest gets (nothing here crashes or leaves guest RAM):
// - a queue structure error (pop() fails: bad index, loop, buffer outside
//   RAM...) is an Error from process_queue; the transport sets
//   DEVICE_NEEDS_RESET. Found while handling the backend fd, it is kept and
//   returned by the next process_queue call, and receiving stops.
// - a transmit chain whose content is wrong (too short or long, writable
//   buffers, header fields the features do not allow) is returned with
//   length 0 and counted in tx_dropped; the queue goes on.
// - a receive chain with device-readable buffers or too small for a header
//   and an Ethernet header is returned unused (length 0) and counted in
//   rx_bad_buffers; no frame is lost to it.
// - a received frame that does not fit the chain, or that the driver's
//   features do not allow, is dropped and counted in rx_dropped; the chain
//   is reused for the next frame.
// No chain is held between calls: a chain taken but not used is given back
// (the next pop() reads and checks it again), so the rings always describe
// every buffer the driver handed over, as a snapshot needs.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/unique_fd.hpp"
#include "net/backend.hpp"
#include "virtio/device.hpp"
#include "virtio/net/metrics.hpp"
#include "virtio/net/request.hpp"
#include "virtio/net/spec.hpp"
#include "virtio/net/state.hpp"

namespace popek::virtio::net {

class NetDevice final : public VirtioDevice {
public:
    // The device owns its backend. A fresh boot passes State{mac}; a
    // restore passes the saved State.
    NetDevice(std::string id, std::unique_ptr<popek::net::NetBackend> backend, State state);
    ~NetDevice() override;
    NetDevice(const NetDevice&) = delete;
    NetDevice& operator=(const NetDevice&) = delete;

    [[nodiscard]] DeviceType type() const override { return DeviceType::Net; }
    [[nodiscard]] std::string id() const override { return id_; }
    [[nodiscard]] uint16_t num_queues() const override { return 2; }
    [[nodiscard]] uint16_t queue_max_size() const override { return 256; }
    [[nodiscard]] uint64_t features() const override { return offered_; }

    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    // The configuration is read-only for a virtio 1.x driver: ignored.
    void write_config(uint64_t offset, std::span<const uint8_t> data) override;

    base::Result<void> activate(const ActivateContext& ctx) override;
    base::Result<void> process_queue(uint16_t queue) override;
    void reset() override;
    // Stops reading the backend (frames wait in the TAP) / starts again.
    void pause() override;
    void resume() override;

    [[nodiscard]] DeviceMetrics metrics() const override { return metrics_.device_metrics(); }
    [[nodiscard]] NetCounters counters() const { return metrics_.snapshot(); }
    // Why the last frame or chain was dropped ("" if none was): for logs.
    [[nodiscard]] std::string last_drop() const;

    // Link status (any thread): the config status field, plus a config
    // change interrupt when the driver negotiated STATUS. While the link is
    // down, transmitted frames are dropped and received ones discarded.
    void set_link_up(bool up);
    [[nodiscard]] bool link_up() const { return link_up_.load(); }

    [[nodiscard]] State save() const;

private:
    // What became of one chain: used (push it with the bytes written),
    // returned unused (push it with 0), or given back to the ring for the
    // next frame; WouldBlock and Failed also give it back.
    enum class Outcome { Used, ReturnedUnused, GivenBack, WouldBlock, Failed };

    // rx.cpp (device thread)
    base::Result<void> receive_frames();
    Outcome receive_into(const DescriptorChain& chain, uint32_t& written);
    void discard_frames();
    base::Result<void> start_rx();
    void stop_rx();
    // tx.cpp (device thread)
    base::Result<void> transmit_frames();
    Outcome transmit(const DescriptorChain& chain);
    base::Result<void> wait_writable();
    bool on_writable();

    void drop(std::atomic<uint64_t>& counter, const std::string& why);
    void signal_used(uint16_t queue);

    const std::string id_;
    const std::unique_ptr<popek::net::NetBackend> backend_;
    const std::array<uint8_t, 6> mac_;
    const uint16_t mtu_;
    const uint64_t offered_;
    std::atomic<bool> link_up_;

    // Device thread, set while active.
    const memory::GuestMemory* mem_ = nullptr;
    std::span<SplitQueue> queues_;
    base::EventLoop* loop_ = nullptr;
    Negotiated negotiated_;
    bool rx_armed_ = false;         // the backend fd is in the loop (EPOLLIN)
    bool tx_blocked_ = false;       // the backend would block: wait for EPOLLOUT
    bool tx_wait_armed_ = false;    // tx_wait_fd_ is in the loop
    base::UniqueFd tx_wait_fd_;     // a dup of the backend fd, watched for EPOLLOUT
    std::optional<base::Error> failed_;  // a queue error found off process_queue
    std::vector<uint8_t> bounce_;   // a whole frame, when a chain has too many pieces
    std::vector<iovec> iov_;

    // interrupt_ is written on the device thread under irq_mu_; set_link_up
    // reads it from other threads under irq_mu_.
    mutable std::mutex irq_mu_;
    Interrupt* interrupt_ = nullptr;
    bool status_negotiated_ = false;

    NetMetrics metrics_;
    mutable std::mutex drop_mu_;
    std::string last_drop_;
};

}  // namespace popek::virtio::net
