#include "block/io_engine.hpp"

#include "block/io_uring_engine.hpp"
#include "block/sync_engine.hpp"

namespace popek::block {

const char* engine_name(EngineKind kind) {
    switch (kind) {
        case EngineKind::Sync:
            return "sync";
        case EngineKind::IoUring:
            return "io_uring";
    }
    return "unknown";
}

base::Result<std::unique_ptr<IoEngine>> make_engine(EngineKind kind, unsigned queue_depth) {
    switch (kind) {
        case EngineKind::Sync:
            return SyncEngine::create();
        case EngineKind::IoUring:
            return IoUringEngine::create(queue_depth);
    }
    return base::Error{"unknown I/O engine"};
}

}  // namespace popek::block
