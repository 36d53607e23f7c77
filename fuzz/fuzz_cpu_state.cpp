// libFuzzer target: vCPU and VM state read back from a snapshot's CBOR.
//
// Input layout:
//   [0]    bit 0: read as a VM state, else as a vCPU state
//   [1..]  CBOR
//
// decode_cbor refuses hostile structure (deep nesting, huge declared sizes)
// and lets no exception out; the strict readers either refuse with an error
// or return a state that serializes back to a value they read as the same
// state.
#include "fuzz_common.hpp"

#include <cstdint>
#include <span>

#include "migration/cbor.hpp"
#include "migration/cpu_state.hpp"

using nlohmann::json;
using popek::fuzz::check;
namespace migration = popek::migration;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    popek::fuzz::Input in(data, size);
    const bool vm = (in.u8() & 1) != 0;
    std::span<const uint8_t> cbor = in.rest();
    auto decoded = migration::decode_cbor(cbor);
    if (!decoded.ok()) return 0;
    const json& j = *decoded;
    if (vm) {
        auto s = migration::vm_state_from_json(j);
        if (!s.ok()) return 0;
        auto again = migration::vm_state_from_json(migration::vm_state_to_json(*s));
        check(again.ok() && *again == *s);
    } else {
        auto s = migration::vcpu_state_from_json(j);
        if (!s.ok()) return 0;
        auto again = migration::vcpu_state_from_json(migration::vcpu_state_to_json(*s));
        check(again.ok() && *again == *s);
    }
    return 0;
}
