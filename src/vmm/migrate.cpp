// The source side of live migration: PUT /vm/migrate starts a thread that
// runs migration::send_vm against this Machine (MachineMigrationSource).
#include <chrono>
#include <cstdio>
#include <thread>

#include "block/disk_image.hpp"
#include "migration/state_json.hpp"
#include "virtio/blk/device.hpp"
#include "virtio/pci/virtio_pci.hpp"
#include "vmm/machine.hpp"

namespace popek::vmm {

using base::Error;
using base::Result;
using nlohmann::json;

class MachineMigrationSource final : public migration::MigrationSource {
public:
    explicit MachineMigrationSource(Machine& m) : m_(m) {}

    const memory::GuestMemory& memory() override { return m_.memory_; }
    json config_json() override { return json(m_.cfg_); }
    std::string backend() override { return m_.hv_->name(); }

    Result<void> start_dirty_log() override {
        // Host writes first: a device write between the two is then logged.
        m_.memory_.start_dirty_tracking();
        auto r = m_.vm_->start_dirty_log();
        if (!r.ok()) m_.memory_.stop_dirty_tracking();
        return r;
    }

    Result<void> fetch_dirty(std::vector<uint64_t>& bits) override {
        POPEK_ASSIGN_OR_RETURN(auto logs, m_.vm_->fetch_dirty_log());
        for (const hv::SlotDirtyLog& log : logs) {
            const uint64_t base = m_.memory_.page_index(log.gpa);
            if (base == UINT64_MAX) return Error{"dirty log of a slot that is not guest RAM"};
            for (size_t w = 0; w < log.bitmap.size(); ++w) {
                uint64_t word = log.bitmap[w];
                while (word != 0) {
                    const uint64_t page = base + w * 64 + static_cast<uint64_t>(__builtin_ctzll(word));
                    word &= word - 1;
                    if (page / 64 < bits.size()) bits[page / 64] |= 1ull << (page % 64);
                }
            }
        }
        m_.memory_.take_dirty(bits);
        return {};
    }

    void set_throttle(uint32_t percent) override {
        if (!throttle_) {
            if (percent == 0) return;
            std::vector<VcpuThread*> vcpus;
            for (auto& v : m_.vcpus_) vcpus.push_back(v.get());
            throttle_ = std::make_unique<VcpuThrottle>(std::move(vcpus));
        }
        throttle_->set(percent);
    }

    void stop_dirty_log() override {
        (void)m_.vm_->stop_dirty_log();
        m_.memory_.stop_dirty_tracking();
    }

    Result<json> pause_and_save() override {
        std::lock_guard lock(m_.control_mu_);
        {
            std::lock_guard exit_lock(m_.exit_mu_);
            if (m_.exit_) return Error{"the VM is stopping (" + m_.exit_->detail + ")"};
        }
        if (m_.run_state_ != RunState::Running && m_.run_state_ != RunState::Paused)
            return Error{"the VM is not running"};
        paused_here_ = m_.run_state_ == RunState::Running;
        if (paused_here_) {
            m_.pause_all();
            m_.run_state_ = RunState::Paused;
        }
        // Devices are drained: what they wrote goes to stable storage before
        // the destination can open the image.
        for (block::DiskImage* d : disks(m_)) {
            if (auto f = d->flush(); !f.ok()) return f.error().context("stop-and-copy");
        }
        POPEK_ASSIGN_OR_RETURN(json tree, m_.save_state_tree());
        tree["memory"] = migration::MemoryFileInfo{m_.memory_.ram_size(), 0, 0};
        return tree;
    }

    void resume() override {
        std::lock_guard lock(m_.control_mu_);
        {
            std::lock_guard exit_lock(m_.exit_mu_);
            if (m_.exit_) return;  // stopping anyway
        }
        if (paused_here_ && m_.run_state_ == RunState::Paused) {
            m_.resume_all();
            m_.run_state_ = RunState::Running;
        }
        paused_here_ = false;
    }

    // Commitment: the destination owns the VM; its disks' locks go to it.
    // (The VM stays paused here until the process ends.)
    void release_disks() override {
        std::lock_guard lock(m_.control_mu_);
        for (block::DiskImage* d : disks(m_)) d->unlock();
    }

    static std::vector<block::DiskImage*> disks(Machine& m) {
        std::vector<block::DiskImage*> out;
        for (auto* t : m.virtio_)
            if (auto* blk = dynamic_cast<virtio::blk::BlockDevice*>(&t->device())) out.push_back(&blk->disk());
        return out;
    }

    void abandon(const std::string& why) override {
        m_.request_exit({devices::GuestExitKind::Terminated, 0, "migration: " + why});
    }

private:
    Machine& m_;
    bool paused_here_ = false;
    std::unique_ptr<VcpuThrottle> throttle_;  // lifted when the source goes
};

Result<void> Machine::lock_disks_for_activation(uint32_t wait_ms) {
    for (block::DiskImage* d : MachineMigrationSource::disks(*this)) POPEK_TRY(d->lock_waiting(wait_ms));
    disks_lock_later_ = false;
    return {};
}

bool Machine::migration_active() {
    std::lock_guard lock(migration_mu_);
    return migration_ && migration_->active;
}

Reply Machine::migration_status() {
    std::shared_ptr<MigrationJob> job;
    {
        std::lock_guard lock(migration_mu_);
        job = migration_;
    }
    if (!job) return Reply::ok({{"phase", "none"}});
    json status = job->progress.to_json();
    if (!job->active && status.value("phase", "") == "completed") job->report_read = true;
    return Reply::ok(status);
}

void Machine::end_migration() {
    std::shared_ptr<MigrationJob> job;
    {
        std::lock_guard lock(migration_mu_);
        job = migration_;
    }
    if (!job) return;
    job->cancel_and_join();
    // A source whose VM left: give `popek migrate` (polling GET /vm/migration)
    // up to 2 s to read the final report before the API goes away.
    for (int i = 0; i < 200 && job->progress.get().phase == "completed" && !job->report_read; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

// control_mu_ held.
Reply Machine::migrate_command(const MigrateCommand& c) {
    if (run_state_ != RunState::Running && run_state_ != RunState::Paused)
        return Reply::error(ReplyStatus::Conflict, "cannot migrate a VM that is not running");
    auto codec = migration::compress::parse_codec(c.compress);
    if (!codec) return Reply::error(ReplyStatus::BadRequest, codec.error().message);
    auto addr = migration::parse_tcp_address(c.to);
    if (!addr) return Reply::error(ReplyStatus::BadRequest, addr.error().message);

    auto job = std::make_shared<MigrationJob>();
    job->options = migration::MigrateOptions{c.to, c.downtime_ms, c.max_rounds, *codec};
    job->options.bandwidth = c.bandwidth;
    job->options.auto_converge = c.auto_converge;
    job->options.threads = c.threads;
    job->options.timeout_ms = c.timeout_ms;
    auto postcopy = migration::parse_postcopy_mode(c.postcopy);  // post-copy hook
    if (!postcopy) return Reply::error(ReplyStatus::BadRequest, postcopy.error().message);
    job->options.postcopy = {*postcopy, c.postcopy_after_rounds, c.postcopy_recover_ms};
    job->active = true;
    {
        std::lock_guard lock(migration_mu_);
        if (migration_) migration_->cancel_and_join();  // finished: reap its thread
        migration_ = job;
    }
    MigrationJob* j = job.get();
    const migration::TcpAddress to = *addr;
    j->thread = std::thread([this, j, to] {
        MachineMigrationSource source(*this);
        auto conn = migration::tcp_connect(to, 5000);
        if (!conn) {
            migration::log_phase("failed", conn.error().message + " (the VM runs on here)");
            j->progress.finish(false, conn.error().message, json{{"error", conn.error().message}});
            j->active = false;
            return;
        }
        {
            std::lock_guard lock(j->conn_mu);
            j->conn = std::move(conn).value();
            if (j->cancel) j->conn.shutdown();
        }
        auto r = migration::send_vm(source, j->conn, j->options, j->progress, j->cancel, &j->conn_mu);
        if (r.ok()) source.release_disks();
        j->active = false;
        if (r.ok())
            request_exit({devices::GuestExitKind::PowerOff, 0, "migrated to " + j->options.to});
    });
    return Reply::ok({{"state", "started"}, {"to", c.to}});
}

}  // namespace popek::vmm
