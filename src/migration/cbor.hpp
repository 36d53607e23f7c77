// CBOR for snapshot files, read safely. nlohmann's CBOR reader recurses once
// per nesting level (100 KB of nested arrays overflows the stack) and throws
// on some declared sizes even with allow_exceptions = false; decode_cbor
// checks the structure first (nesting depth, declared lengths against the
// bytes there are) and keeps any exception from escaping.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/result.hpp"

namespace popek::migration {

inline constexpr size_t kMaxCborDepth = 64;

std::vector<uint8_t> encode_cbor(const nlohmann::json& j);
// One CBOR item that fills `bytes` exactly, nested at most kMaxCborDepth deep.
base::Result<nlohmann::json> decode_cbor(std::span<const uint8_t> bytes);

}  // namespace popek::migration
