// The destination of a live migration: `popek run --incoming tcp:ADDR:PORT`.
// Listens, accepts one source, reserves what its configuration needs, fills
// guest RAM from the stream, checks it, builds the Machine (activation is
// Machine::run, the caller's). After a post-copy switch the Machine is built
// over RAM still arriving: `postcopy` serves its missing pages while it runs
// and stops it (one error line) if the source is lost before the last page.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "base/result.hpp"
#include "migration/postcopy.hpp"
#include "vmm/machine.hpp"

namespace popek::vmm {

struct IncomingOptions {
    std::string listen;           // tcp:ADDR:PORT
    std::string serial;           // "" keeps the source's serial setting; else like --serial
    uint64_t max_memory = 0;      // refuse VMs with more RAM than this (0: no limit)
};

struct IncomingVm {
    std::unique_ptr<Machine> machine;
    std::unique_ptr<migration::PostcopyIncoming> postcopy;  // declared last: ends before the machine
    // After the VM ended: waits (bounded) for post-copy to finish so the
    // source can end cleanly; false if post-copy failed (its error was printed).
    bool finish_postcopy();
};

base::Result<IncomingVm> receive_migration(const IncomingOptions& options);

}  // namespace popek::vmm
