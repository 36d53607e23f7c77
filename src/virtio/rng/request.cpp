#include "virtio/rng/request.hpp"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>

namespace popek::virtio::rng {

base::Result<void> get_random(std::span<uint8_t> out) {
    size_t done = 0;
    while (done < out.size()) {
        const ssize_t n = ::getrandom(out.data() + done, out.size() - done, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return base::Error::from_errno("getrandom");
        }
        done += static_cast<size_t>(n);
    }
    return {};
}

base::Result<uint32_t> fill_request(const memory::GuestMemory& mem, const DescriptorChain& chain,
                                    std::vector<uint8_t>& scratch) {
    const auto len = static_cast<uint32_t>(std::min<uint64_t>(chain.writable_bytes(), kMaxRequestBytes));
    scratch.resize(len);
    POPEK_TRY(get_random(scratch));
    return static_cast<uint32_t>(write_chain(mem, chain, 0, scratch));
}

}  // namespace popek::virtio::rng
