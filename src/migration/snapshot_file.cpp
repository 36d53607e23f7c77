#include "migration/snapshot_file.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstring>

#include "base/bytes.hpp"
#include "base/file.hpp"
#include "base/unique_fd.hpp"
#include "migration/cbor.hpp"

namespace popek::migration {

using base::Error;
using base::Result;

namespace {

constexpr char kMagic[8] = {'P', 'O', 'P', 'E', 'K', 'S', 'N', 'P'};

Result<void> write_all(int fd, std::span<const uint8_t> bytes, const std::string& path) {
    size_t done = 0;
    while (done < bytes.size()) {
        ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return Error::from_errno("writing " + path);
        done += static_cast<size_t>(n);
    }
    return {};
}

}  // namespace

std::vector<uint8_t> encode_state(const nlohmann::json& tree) {
    std::vector<uint8_t> payload = nlohmann::json::to_cbor(tree);
    std::vector<uint8_t> out(kSnapshotHeaderSize + payload.size());
    std::memcpy(out.data(), kMagic, sizeof kMagic);
    base::store<uint32_t>(out, 8, kSnapshotVersion);
    base::store<uint32_t>(out, 12, static_cast<uint32_t>(kSnapshotHeaderSize));
    base::store<uint64_t>(out, 16, payload.size());
    base::store<uint64_t>(out, 24, XXH64(payload.data(), payload.size(), 0));
    std::memcpy(out.data() + kSnapshotHeaderSize, payload.data(), payload.size());
    return out;
}

Result<nlohmann::json> decode_state(std::span<const uint8_t> bytes) {
    if (bytes.size() < kSnapshotHeaderSize)
        return Error{"not a popek snapshot: " + std::to_string(bytes.size()) + " bytes, shorter than its header"};
    if (std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) return Error{"not a popek snapshot (bad magic)"};
    const auto version = base::load<uint32_t>(bytes, 8);
    if (version != kSnapshotVersion)
        return Error{"snapshot format version " + std::to_string(version) + ", this popek reads version " +
                     std::to_string(kSnapshotVersion)};
    const auto header = base::load<uint32_t>(bytes, 12);
    const auto size = base::load<uint64_t>(bytes, 16);
    if (header != kSnapshotHeaderSize) return Error{"snapshot header size " + std::to_string(header) + " is wrong"};
    if (size > kMaxSnapshotPayload || size != bytes.size() - kSnapshotHeaderSize)
        return Error{"snapshot is truncated or has trailing bytes: header says " + std::to_string(size) +
                     " payload bytes, the file has " + std::to_string(bytes.size() - kSnapshotHeaderSize)};
    auto payload = bytes.subspan(kSnapshotHeaderSize);
    if (XXH64(payload.data(), payload.size(), 0) != base::load<uint64_t>(bytes, 24))
        return Error{"snapshot checksum mismatch: the state file is corrupted"};
    auto tree = decode_cbor(payload);
    if (!tree || !tree->is_object()) return Error{"snapshot state is not a valid CBOR object"};
    return tree;
}

Result<nlohmann::json> read_state_file(const std::string& path) {
    auto bytes = base::read_file(path, "snapshot state", kSnapshotHeaderSize + kMaxSnapshotPayload);
    if (!bytes) return bytes.error();
    auto tree = decode_state(*bytes);
    if (!tree) return tree.error().context(path);
    return tree;
}

Result<void> write_state_file(const std::string& path, const nlohmann::json& tree) {
    const std::vector<uint8_t> bytes = encode_state(tree);
    const std::string tmp = path + ".tmp";
    base::UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd.valid()) return Error::from_errno("creating " + tmp);
    POPEK_TRY(write_all(fd.get(), bytes, tmp));
    if (::fsync(fd.get()) != 0) return Error::from_errno("fsync " + tmp);
    if (::rename(tmp.c_str(), path.c_str()) != 0) return Error::from_errno("renaming " + tmp + " to " + path);
    return {};
}

}  // namespace popek::migration
