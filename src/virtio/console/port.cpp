#include "virtio/console/port.hpp"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace popek::virtio::console {

namespace {
constexpr int kOutputStallMs = 1000;  // a full output gets this long before bytes are dropped
constexpr size_t kChunk = 16 * 1024;
}  // namespace

size_t write_output(int fd, std::span<const uint8_t> bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n > 0) {
            done += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            pollfd p{fd, POLLOUT, 0};
            if (::poll(&p, 1, kOutputStallMs) == 1 && (p.revents & POLLOUT) != 0) continue;
        }
        break;
    }
    return done;
}

size_t transmit_chain(const memory::GuestMemory& mem, const DescriptorChain& chain, int fd,
                      std::vector<uint8_t>& scratch, bool& failed) {
    const uint64_t total = chain.readable_bytes();
    scratch.resize(static_cast<size_t>(std::min<uint64_t>(total, kChunk)));
    size_t written = 0;
    failed = false;
    for (uint64_t off = 0; off < total;) {
        const size_t n = read_chain(mem, chain, off, std::span(scratch).first(
                                                         static_cast<size_t>(std::min<uint64_t>(total - off, kChunk))));
        if (n == 0) break;
        const size_t w = write_output(fd, std::span(scratch).first(n));
        written += w;
        if (w < n) {
            failed = true;
            break;
        }
        off += n;
    }
    return written;
}

InputBuffer::InputBuffer(std::vector<uint8_t> initial) : bytes_(std::move(initial)) {
    if (bytes_.size() > kCapacity) bytes_.resize(kCapacity);
}

void InputBuffer::append(std::span<const uint8_t> b) {
    const size_t n = std::min(b.size(), room());
    if (start_ > 0 && start_ >= bytes_.size() / 2) {  // compact before growing
        bytes_.erase(bytes_.begin(), bytes_.begin() + static_cast<std::ptrdiff_t>(start_));
        start_ = 0;
    }
    bytes_.insert(bytes_.end(), b.begin(), b.begin() + static_cast<std::ptrdiff_t>(n));
}

uint32_t InputBuffer::deliver(const memory::GuestMemory& mem, const DescriptorChain& chain) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(size(), chain.writable_bytes()));
    const size_t copied = write_chain(mem, chain, 0, std::span(bytes_).subspan(start_, n));
    start_ += copied;
    if (start_ == bytes_.size()) clear();
    return static_cast<uint32_t>(copied);
}

std::vector<uint8_t> InputBuffer::contents() const {
    return {bytes_.begin() + static_cast<std::ptrdiff_t>(start_), bytes_.end()};
}

void InputBuffer::clear() {
    bytes_.clear();
    start_ = 0;
}

}  // namespace popek::virtio::console
