// Whole-file reads for user-supplied inputs (kernel, initrd).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.hpp"

namespace popek::base {

// Reads `path`; `what` names the file in errors ("kernel", "initrd"). Refuses
// directories and files larger than `max_bytes`.
Result<std::vector<uint8_t>> read_file(const std::string& path, const std::string& what,
                                       uint64_t max_bytes);

}  // namespace popek::base
