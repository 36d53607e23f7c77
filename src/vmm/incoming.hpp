// The destination of a live migration: `popek run --incoming tcp:ADDR:PORT`.
// Listens, accepts one source, reserves what its configuration needs, fills
// guest RAM from the stream, checks it, builds the Machine (activation is
// Machine::run, the caller's).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "base/result.hpp"
#include "vmm/machine.hpp"

namespace popek::vmm {

struct IncomingOptions {
    std::string listen;           // tcp:ADDR:PORT
    std::string serial;           // "" keeps the source's serial setting; else like --serial
    uint64_t max_memory = 0;      // refuse VMs with more RAM than this (0: no limit)
};

base::Result<std::unique_ptr<Machine>> receive_migration(const IncomingOptions& options);

}  // namespace popek::vmm
