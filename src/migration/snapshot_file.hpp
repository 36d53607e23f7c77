// The snapshot's state file: a fixed header (magic, format version,
// payload length, XXH64 of the payload) followed by the state tree as CBOR.
//
//   offset 0   "POPEKSNP"      8 bytes
//          8   version         u32, little endian (kSnapshotVersion)
//         12   header size     u32 (32)
//         16   payload size    u64
//         24   payload XXH64   u64 (seed 0)
//         32   payload         CBOR
//
// A reader refuses another magic, another version, a short or long file and
// a checksum mismatch, each with its own message, before decoding anything.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/result.hpp"

namespace popek::migration {

constexpr uint32_t kSnapshotVersion = 1;
constexpr size_t kSnapshotHeaderSize = 32;
constexpr uint64_t kMaxSnapshotPayload = 256ull << 20;  // the state tree, not guest memory

// Encodes `tree` and writes it to `path` atomically (a temporary file, fsync, rename).
base::Result<void> write_state_file(const std::string& path, const nlohmann::json& tree);
// Checks and decodes a state file's bytes.
base::Result<nlohmann::json> decode_state(std::span<const uint8_t> bytes);
base::Result<nlohmann::json> read_state_file(const std::string& path);
// The bytes write_state_file() writes (for tests and fuzz seeds).
std::vector<uint8_t> encode_state(const nlohmann::json& tree);

}  // namespace popek::migration
