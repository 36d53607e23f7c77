// A live migration the source Machine runs on its own thread
// (PUT /vm/migrate); vmm/migrate.cpp. The protocol is migration/precopy.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>

#include "migration/precopy.hpp"
#include "migration/stream.hpp"

namespace popek::vmm {

struct MigrationJob {
    migration::MigrateOptions options;
    migration::MigrationProgress progress;
    std::atomic<bool> cancel{false};
    std::atomic<bool> active{false};
    std::atomic<bool> report_read{false};  // GET /vm/migration saw the end (the source may exit now)
    std::mutex conn_mu;          // guards conn's assignment against cancel()
    migration::Connection conn;
    std::thread thread;

    // Makes the thread give up soon (its socket I/O fails) and waits for it.
    void cancel_and_join() {
        {
            std::lock_guard lock(conn_mu);
            cancel = true;
            conn.shutdown();
        }
        if (thread.joinable()) thread.join();
    }
    ~MigrationJob() { cancel_and_join(); }
};

}  // namespace popek::vmm
