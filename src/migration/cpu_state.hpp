// vCPU and VM state (hv::VcpuState, hv::VmState) as JSON values, written as
// CBOR in snapshot files. Registers are named fields; byte layouts the
// architecture or the backend defines (XSAVE area, LAPIC page, irqchip blobs)
// are binary values. The readers parse untrusted input: strict (every field
// present, of its type and range), they never throw and name the field that
// is wrong.
#pragma once

#include <nlohmann/json.hpp>

#include "base/result.hpp"
#include "hv/x86_state.hpp"

namespace popek::migration {

// Size bounds of the XSAVE area: the legacy region and the XSAVE header at
// least; 64 KiB is several times the largest area CPUs define today.
inline constexpr size_t kMinXsaveBytes = 512 + 64;
inline constexpr size_t kMaxXsaveBytes = 64 * 1024;
inline constexpr size_t kLapicBytes = 1024;
inline constexpr size_t kMaxMsrs = 4096;
inline constexpr size_t kMaxXcrs = 64;
inline constexpr size_t kMaxVmBlobs = 64;
inline constexpr size_t kMaxVmBlobBytes = 64 * 1024;

nlohmann::json vcpu_state_to_json(const hv::VcpuState& state);
base::Result<hv::VcpuState> vcpu_state_from_json(const nlohmann::json& j);

nlohmann::json vm_state_to_json(const hv::VmState& state);
base::Result<hv::VmState> vm_state_from_json(const nlohmann::json& j);

}  // namespace popek::migration
