// popek vs QEMU-KVM live migration of the probe guest, in the same run, over
// the same veth link between two network namespaces (bench/run.sh makes them).
//
// For each workload (idle, dirtying ~RATE MiB/s, dirtying as fast as it can),
// each downtime limit and without/with compression, both VMMs migrate the
// same 1 GiB probe VM from namespace A to namespace B:
//   popek: `popek run --incoming tcp:B:PORT` in B, `popek run --api-sock` in
//          A, `popek migrate --downtime-ms L [--compress C]`; its JSON report.
//   QEMU:  `-incoming defer` in B, the source in A, over QMP:
//          migrate-set-parameters downtime-limit, migrate, query-migrate.
// The guest-seen downtime is the probe's own: the largest gap between two
// readings of its clock (PROBE-CLOCK max_gap_cycles) in the windows around
// the switch, printed by the destination.
//
// Usage: popek_migration_bench --popek BIN --probe ELF --ns-src A --ns-dst B
//          --addr-src IP --addr-dst IP [--qemu BIN] [--memory MIB] [--fill MIB]
//          [--rate MIBPS] [--limits 300,10] [--workloads idle,rate,fast]
//          [--popek-compress auto] [--qemu-compress multifd-zstd|xbzrle]
//          [--dir DIR] [--timeout S]
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <x86intrin.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/core.h>

#include "bench_util.hpp"
#include "control_clients.hpp"

namespace {

using namespace popek::bench;
using nlohmann::json;
namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;

struct Opts {
    std::string popek, probe, qemu = "/usr/bin/qemu-system-x86_64";
    std::string ns[2], addr[2];
    long memory_mib = 1024, fill_mib = 896, rate_mibps = 50;
    std::vector<int> limits{300, 10};
    std::vector<std::string> workloads{"idle", "rate", "fast"};
    std::string popek_compress = "auto", qemu_compress = "multifd-zstd";
    std::string dir = "/dev/shm";
    int timeout_s = 120;
};

// ---- namespaces and the link --------------------------------------------------

// Moves the calling thread into a named network namespace (setns is per thread).
bool enter_netns(const std::string& name) {
    const int fd = ::open(("/run/netns/" + name).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    const bool ok = ::setns(fd, CLONE_NEWNET) == 0;
    ::close(fd);
    return ok;
}

std::vector<std::string> in_ns(const std::string& ns, std::vector<std::string> argv) {
    argv.insert(argv.begin(), {"/usr/sbin/ip", "netns", "exec", ns});
    return argv;
}

// A plain TCP transfer of `bytes` from A to B over the veth: MiB/s.
double link_mibps(const Opts& o, uint64_t bytes) {
    constexpr uint16_t port = 47999;
    std::atomic<bool> listening{false};
    double mibps = -1;
    std::thread rx([&] {
        if (!enter_netns(o.ns[1])) return;
        const int l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        ::setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        ::inet_pton(AF_INET, o.addr[1].c_str(), &a.sin_addr);
        if (::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(l, 1) != 0) {
            ::close(l);
            listening = true;
            return;
        }
        listening = true;
        const int c = ::accept(l, nullptr, nullptr);
        ::close(l);
        if (c < 0) return;
        std::vector<char> buf(1 << 20);
        uint64_t got = 0;
        Clock::time_point t0{};
        ssize_t n;
        while ((n = ::read(c, buf.data(), buf.size())) > 0) {
            if (got == 0) t0 = Clock::now();
            got += static_cast<uint64_t>(n);
        }
        if (got >= bytes) mibps = static_cast<double>(got) / (1 << 20) / (ms_since(t0) / 1000.0);
        ::close(c);
    });
    std::thread tx([&] {
        if (!enter_netns(o.ns[0])) return;
        while (!listening) std::this_thread::sleep_for(milliseconds(1));
        const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        ::inet_pton(AF_INET, o.addr[1].c_str(), &a.sin_addr);
        if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
            std::vector<char> buf(1 << 20, 'x');
            for (uint64_t sent = 0; sent < bytes;) {
                const ssize_t n = ::write(s, buf.data(), buf.size());
                if (n <= 0) break;
                sent += static_cast<uint64_t>(n);
            }
        }
        ::close(s);
    });
    tx.join();
    rx.join();
    return mibps;
}

// Bytes sent so far by the namespace's interfaces other than lo (the veth
// end): what a migration put on the wire, whatever the VMM counts.
double wire_tx_bytes(const std::string& ns) {
    Child c = Child::spawn({"/usr/sbin/ip", "-j", "-s", "-n", ns, "link", "show"});
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(c.out(), buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    c.wait();
    const json j = json::parse(out, nullptr, false);
    double bytes = 0;
    if (!j.is_array()) return -1;
    for (const auto& link : j) {
        if (link.value("ifname", "") == "lo" || !link.contains("stats64")) continue;
        bytes += link["stats64"]["tx"].value("bytes", 0.0);
    }
    return bytes;
}

// The host's TSC rate (the guest's under KVM without TSC scaling), in Hz.
double tsc_hz() {
    const auto t0 = Clock::now();
    const uint64_t c0 = __rdtsc();
    std::this_thread::sleep_for(milliseconds(300));
    const uint64_t c1 = __rdtsc();
    return static_cast<double>(c1 - c0) / (ms_since(t0) / 1000.0);
}

// ---- a VM's console -----------------------------------------------------------

// Drains a VMM's stdout (the guest's serial line) on a thread and keeps its
// PROBE- lines, so the guest never blocks on a full pipe.
class Console {
public:
    Console(const std::vector<std::string>& argv, const std::string& log)
        : child_(Child::spawn(argv, log)), reader_([this] { read(); }) {}
    ~Console() { stop(); }
    Console(const Console&) = delete;
    Console& operator=(const Console&) = delete;

    [[nodiscard]] pid_t pid() const { return child_.pid(); }
    void stop() {
        if (child_.valid()) ::kill(child_.pid(), SIGKILL);
        if (reader_.joinable()) reader_.join();
        child_.wait();
    }
    // Waits for a line (from line `from` on) for which `pred` is true; its index or -1.
    template <typename P>
    long wait_line(P pred, seconds timeout, size_t from = 0) {
        const auto t0 = Clock::now();
        for (;;) {
            {
                std::lock_guard lock(mu_);
                for (size_t i = from; i < lines_.size(); i++)
                    if (pred(lines_[i])) return static_cast<long>(i);
                if (eof_) return -1;
            }
            if (Clock::now() - t0 > timeout) return -1;
            std::this_thread::sleep_for(milliseconds(5));
        }
    }
    std::vector<std::string> lines() {
        std::lock_guard lock(mu_);
        return lines_;
    }

private:
    void read() {
        std::string partial;
        char buf[65536];
        for (;;) {
            const ssize_t n = ::read(child_.out(), buf, sizeof buf);
            if (n <= 0) break;
            partial.append(buf, static_cast<size_t>(n));
            size_t nl;
            while ((nl = partial.find('\n')) != std::string::npos) {
                std::string line = partial.substr(0, nl);
                partial.erase(0, nl + 1);
                const auto at = line.find("PROBE-");  // a line cut by the switch may start mid-way
                if (at == std::string::npos) continue;
                std::lock_guard lock(mu_);
                lines_.push_back(line.substr(at));
            }
        }
        std::lock_guard lock(mu_);
        eof_ = true;
    }

    Child child_;
    std::mutex mu_;
    std::vector<std::string> lines_;
    bool eof_ = false;
    std::thread reader_;
};

uint64_t field(const std::string& line, const std::string& name) {
    const auto at = line.find(" " + name + "=");
    return at == std::string::npos ? 0 : std::strtoull(line.c_str() + at + name.size() + 2, nullptr, 10);
}

bool is_clock(const std::string& l) { return l.rfind("PROBE-CLOCK window=", 0) == 0; }

// ---- one migration --------------------------------------------------------------

struct Run {
    bool ok = false;
    std::string error;
    double total_ms = -1, downtime_ms = -1, guest_ms = -1;
    double mib = -1;
    double wire_mib = -1;  // the source namespace's veth tx during the migration
    int rounds = -1;
};

struct Workload {
    std::string name, cmdline;
    uint64_t warm_pages;  // pages the guest wrote before we migrate (0: idle)
};

std::string tail_of(const std::string& file) {
    std::ifstream f(file);
    std::stringstream ss;
    ss << f.rdbuf();
    std::string s = ss.str();
    return s.size() > 1500 ? s.substr(s.size() - 1500) : s;
}

// The guest is warm: idle has filled its memory, dirtying ones wrote their region once.
bool wait_warm(Console& c, const Workload& w, seconds timeout) {
    if (w.warm_pages == 0)
        return c.wait_line([](const std::string& l) { return l.rfind("PROBE-IDLE filled", 0) == 0; }, timeout) >= 0;
    return c.wait_line([&](const std::string& l) { return is_clock(l) && field(l, "pages") >= w.warm_pages; },
                       timeout) >= 0;
}

// The guest-seen downtime: the largest clock gap in the destination's first
// two windows (the first one after the switch holds the pause).
double guest_gap_ms(Console& dest, double hz) {
    const long first = dest.wait_line(is_clock, seconds(30));
    if (first < 0) return -1;
    const long second = dest.wait_line(is_clock, seconds(5), static_cast<size_t>(first) + 1);
    const auto lines = dest.lines();
    uint64_t gap = field(lines[static_cast<size_t>(first)], "max_gap_cycles");
    if (second >= 0) gap = std::max(gap, field(lines[static_cast<size_t>(second)], "max_gap_cycles"));
    return static_cast<double>(gap) / hz * 1000.0;
}

bool wait_listening(pid_t pid, uint16_t port, seconds timeout) {
    char want[16];
    std::snprintf(want, sizeof want, ":%04X ", port);
    const auto t0 = Clock::now();
    while (Clock::now() - t0 < timeout) {
        std::ifstream f("/proc/" + std::to_string(pid) + "/net/tcp");
        std::string line;
        while (std::getline(f, line))
            if (line.find(want) != std::string::npos && line.find(" 0A ") != std::string::npos) return true;
        std::this_thread::sleep_for(milliseconds(10));
    }
    return false;
}

uint16_t next_port() {
    static uint16_t p = static_cast<uint16_t>(40000 + ::getpid() % 5000);
    return ++p;
}

Run popek_run(const Opts& o, const Workload& w, int limit, const std::string& codec, double hz) {
    Run r;
    const std::string base = o.dir + "/popek-migbench-" + std::to_string(::getpid());
    const std::string sock = base + "-api.sock";
    const std::string slog = base + "-src.log", dlog = base + "-dst.log", mlog = base + "-migrate.log";
    for (const auto& f : {slog, dlog, mlog}) fs::remove(f);
    fs::remove(sock);
    const uint16_t port = next_port();
    const std::string to = fmt::format("tcp:{}:{}", o.addr[1], port);
    Console dest(in_ns(o.ns[1], {o.popek, "run", "--incoming", to}), dlog);
    Console src(in_ns(o.ns[0], {o.popek, "run", "--kernel", o.probe, "--cmdline", w.cmdline, "--memory",
                                std::to_string(o.memory_mib) + "M", "--api-sock", sock}),
                slog);
    if (!wait_listening(dest.pid(), port, seconds(30))) {
        r.error = "popek destination not listening: " + tail_of(dlog);
        return r;
    }
    if (!wait_warm(src, w, seconds(o.timeout_s))) {
        r.error = "popek source guest not warm: " + tail_of(slog);
        return r;
    }
    std::vector<std::string> argv{o.popek,         "migrate", "--api-sock", sock, "--to", to, "--downtime-ms",
                                  std::to_string(limit)};
    if (codec != "none") argv.insert(argv.end(), {"--compress", codec});
    const double wire0 = wire_tx_bytes(o.ns[0]);
    Child m = Child::spawn(argv, mlog);
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(m.out(), buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    const int status = m.wait();
    r.wire_mib = (wire_tx_bytes(o.ns[0]) - wire0) / (1 << 20);
    const json report = json::parse(out, nullptr, false);
    if (status != 0 || !report.is_object()) {
        r.error = "popek migrate failed: " + tail_of(mlog) + tail_of(slog);
        return r;
    }
    r.total_ms = report.value("total_ms", -1.0);
    r.downtime_ms = report.value("downtime_ms", -1.0);
    r.mib = static_cast<double>(report.value("bytes_sent", uint64_t{0})) / (1 << 20);
    r.rounds = report.value("rounds", -1);
    r.guest_ms = guest_gap_ms(dest, hz);
    r.ok = report.value("digest_match", false);
    if (!r.ok) r.error = "popek: digests differ: " + out;
    return r;
}

Run qemu_run(const Opts& o, const Workload& w, int limit, const std::string& codec, double hz) {
    Run r;
    const std::string base = o.dir + "/popek-migbench-" + std::to_string(::getpid());
    const std::string qs = base + "-qs.sock", qd = base + "-qd.sock";
    const std::string slog = base + "-qemu-src.log", dlog = base + "-qemu-dst.log";
    for (const auto& f : {qs, qd, slog, dlog}) fs::remove(f);
    const std::string mem = std::to_string(o.memory_mib) + "M";
    auto argv = qemu_probe_argv(o.qemu, o.probe, mem, w.cmdline);
    auto src_argv = argv, dst_argv = argv;
    src_argv.insert(src_argv.end(), {"-qmp", "unix:" + qs + ",server=on,wait=off"});
    dst_argv.insert(dst_argv.end(), {"-qmp", "unix:" + qd + ",server=on,wait=off", "-incoming", "defer"});
    Console dest(in_ns(o.ns[1], dst_argv), dlog);
    Console src(in_ns(o.ns[0], src_argv), slog);
    Qmp sq, dq;
    if (!dq.open(qd, milliseconds(20000)) || !sq.open(qs, milliseconds(20000))) {
        r.error = "qemu: no QMP: " + tail_of(slog) + tail_of(dlog);
        return r;
    }
    json caps = json::array({{{"capability", "events"}, {"state", true}}});
    json params{{"downtime-limit", limit}, {"max-bandwidth", 100LL << 30}};
    if (codec == "multifd-zstd") {
        caps.push_back({{"capability", "multifd"}, {"state", true}});
        params["multifd-channels"] = 2;
        params["multifd-compression"] = "zstd";
    } else if (codec == "xbzrle") {
        caps.push_back({{"capability", "xbzrle"}, {"state", true}});
    }
    for (Qmp* q : {&sq, &dq}) {
        auto c = q->execute("migrate-set-capabilities", {{"capabilities", caps}});
        auto p = q->execute("migrate-set-parameters", params);
        if (!c || !c->contains("return") || !p || !p->contains("return")) {
            r.error = "qemu: migration settings refused: " + (c ? c->dump() : "") + (p ? p->dump() : "");
            return r;
        }
    }
    const uint16_t port = next_port();
    const std::string uri = fmt::format("tcp:{}:{}", o.addr[1], port);
    if (auto i = dq.execute("migrate-incoming", {{"uri", uri}}); !i || !i->contains("return")) {
        r.error = "qemu: migrate-incoming: " + (i ? i->dump() : "no reply");
        return r;
    }
    if (!wait_warm(src, w, seconds(o.timeout_s))) {
        r.error = "qemu source guest not warm: " + tail_of(slog);
        return r;
    }
    const double wire0 = wire_tx_bytes(o.ns[0]);
    if (auto m = sq.execute("migrate", {{"uri", uri}}); !m || !m->contains("return")) {
        r.error = "qemu: migrate: " + (m ? m->dump() : "no reply");
        return r;
    }
    for (;;) {
        auto e = sq.wait_event("MIGRATION", seconds(o.timeout_s));
        if (!e) {
            sq.execute("migrate_cancel");
            r.error = fmt::format("QEMU did not complete within {} s (no convergence)", o.timeout_s);
            return r;
        }
        const std::string st = (*e)["data"].value("status", "");
        if (st == "completed") break;
        if (st == "failed" || st == "cancelled") {
            r.error = "qemu migration " + st + ": " + tail_of(slog);
            return r;
        }
    }
    r.wire_mib = (wire_tx_bytes(o.ns[0]) - wire0) / (1 << 20);
    // The "completed" event comes before QEMU computes total-time and
    // downtime (both read 0 in a completed migration until then).
    json ret;
    for (const auto t0 = Clock::now(); ms_since(t0) < 10000; std::this_thread::sleep_for(milliseconds(5))) {
        auto q = sq.execute("query-migrate");
        if (!q || !q->contains("return")) {
            r.error = "qemu: query-migrate";
            return r;
        }
        ret = (*q)["return"];
        if (ret.value("status", "") == "completed" && ret.value("total-time", 0.0) > 0) break;
    }
    r.total_ms = ret.value("total-time", -1.0);
    r.downtime_ms = ret.value("downtime", -1.0);
    // RAM bytes on the wire (after xbzrle or multifd's compression; multifd's counted in).
    const uint64_t bytes = ret.contains("ram") ? ret["ram"].value("transferred", uint64_t{0}) : 0;
    r.mib = static_cast<double>(bytes) / (1 << 20);
    r.rounds = ret.contains("ram") ? static_cast<int>(ret["ram"].value("dirty-sync-count", int64_t{-1})) : -1;
    r.guest_ms = guest_gap_ms(dest, hz);
    r.ok = true;
    return r;
}

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) out.push_back(item);
    return out;
}

std::string num(double v, const char* f = "{:.0f}") { return v < 0 ? "—" : fmt::format(fmt::runtime(f), v); }
std::string one_line(std::string s) {
    for (char& c : s)
        if (c == '\n' || c == '|') c = ' ';
    return s.substr(0, 400);
}
std::string ratio(double a, double b) { return a < 0 || b <= 0 ? "—" : fmt::format("{:.2f}x", a / b); }

}  // namespace

int main(int argc, char** argv) {
    Opts o;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string k = argv[i], v = argv[i + 1];
        if (k == "--popek") o.popek = v;
        else if (k == "--probe") o.probe = v;
        else if (k == "--qemu") o.qemu = v;
        else if (k == "--ns-src") o.ns[0] = v;
        else if (k == "--ns-dst") o.ns[1] = v;
        else if (k == "--addr-src") o.addr[0] = v;
        else if (k == "--addr-dst") o.addr[1] = v;
        else if (k == "--memory") o.memory_mib = std::stol(v);
        else if (k == "--fill") o.fill_mib = std::stol(v);
        else if (k == "--rate") o.rate_mibps = std::stol(v);
        else if (k == "--limits") {
            o.limits.clear();
            for (const auto& l : split(v)) o.limits.push_back(std::stoi(l));
        } else if (k == "--workloads") o.workloads = split(v);
        else if (k == "--popek-compress") o.popek_compress = v;
        else if (k == "--qemu-compress") o.qemu_compress = v;
        else if (k == "--dir") o.dir = v;
        else if (k == "--timeout") o.timeout_s = std::stoi(v);
        else {
            std::fprintf(stderr, "popek_migration_bench: unknown option %s\n", k.c_str());
            return 2;
        }
    }
    if (o.popek.empty() || o.probe.empty() || o.ns[0].empty() || o.ns[1].empty() || o.addr[1].empty()) {
        std::fprintf(stderr, "usage: popek_migration_bench --popek BIN --probe ELF --ns-src A --ns-dst B --addr-src IP "
                             "--addr-dst IP [--qemu BIN] [--memory MIB] [--fill MIB] [--rate MIBPS] [--limits 300,10] "
                             "[--workloads idle,rate,fast] [--popek-compress C] [--qemu-compress multifd-zstd|xbzrle] "
                             "[--dir DIR] [--timeout S]\n");
        return 2;
    }
    const double hz = tsc_hz();
    const double link = link_mibps(o, 2ull << 30);
    if (link <= 0) {
        std::fprintf(stderr, "popek_migration_bench: the TCP transfer over the veth link failed\n");
        return 1;
    }
    const double physical_ms = static_cast<double>(o.memory_mib) / link * 1000.0;
    const std::string khz = std::to_string(static_cast<uint64_t>(hz / 1000));
    const uint64_t region_pages = static_cast<uint64_t>(o.fill_mib) * 256;

    struct Row {
        std::string workload;
        int limit;
        std::string pc, qc;
        Run p, q;
    };
    std::vector<Row> rows;
    for (const auto& name : o.workloads) {
        Workload w;
        if (name == "idle") w = {"idle", "idle " + std::to_string(o.fill_mib), 0};
        else if (name == "rate")
            w = {fmt::format("dirty {} MiB/s", o.rate_mibps),
                 fmt::format("dirty-rate {} {} {}", o.fill_mib, o.rate_mibps, khz), region_pages};
        else if (name == "fast") w = {"dirty max", fmt::format("dirty-rate {} 0 {}", o.fill_mib, khz), region_pages};
        else {
            std::fprintf(stderr, "popek_migration_bench: unknown workload %s\n", name.c_str());
            return 2;
        }
        for (int limit : o.limits) {
            for (int compressed = 0; compressed < 2; compressed++) {
                Row row{w.name, limit, compressed ? o.popek_compress : "none", compressed ? o.qemu_compress : "none",
                        {}, {}};
                std::fprintf(stderr, "migration bench: %s, %d ms, popek %s / QEMU %s ...\n", w.name.c_str(), limit,
                             row.pc.c_str(), row.qc.c_str());
                row.p = popek_run(o, w, limit, row.pc, hz);
                if (!row.p.ok) std::fprintf(stderr, "  popek: %s\n", row.p.error.c_str());
                row.q = qemu_run(o, w, limit, row.qc, hz);
                if (!row.q.ok) std::fprintf(stderr, "  QEMU: %s\n", row.q.error.c_str());
                rows.push_back(std::move(row));
            }
        }
    }

    fmt::print("| migration, {} MiB guest ({} MiB written) | limit | compression popek / QEMU | total ms popek / QEMU "
               "(ratio) | downtime ms popek / QEMU (ratio) | guest-seen gap ms popek / QEMU | MiB sent (own count) popek / QEMU "
               "(ratio) | MiB on the wire popek / QEMU (ratio) | rounds popek / QEMU syncs | total ÷ physical popek / QEMU |\n",
               o.memory_mib, o.fill_mib);
    fmt::print("|---|---:|---|---|---|---|---|---|---|---|\n");
    for (const auto& r : rows) {
        auto okv = [](const Run& x, double v) { return x.ok ? v : -1.0; };
        fmt::print("| {} | {} ms | {} / {} | {} / {} ({}) | {} / {} ({}) | {} / {} | {} / {} ({}) | {} / {} ({}) | {} / {} "
                   "| {} / {} |\n",
                   r.workload, r.limit, r.pc, r.qc, num(okv(r.p, r.p.total_ms)), num(okv(r.q, r.q.total_ms)),
                   ratio(okv(r.p, r.p.total_ms), okv(r.q, r.q.total_ms)), num(okv(r.p, r.p.downtime_ms), "{:.1f}"),
                   num(okv(r.q, r.q.downtime_ms), "{:.1f}"), ratio(okv(r.p, r.p.downtime_ms), okv(r.q, r.q.downtime_ms)),
                   num(okv(r.p, r.p.guest_ms), "{:.1f}"), num(okv(r.q, r.q.guest_ms), "{:.1f}"),
                   num(okv(r.p, r.p.mib)), num(okv(r.q, r.q.mib)), ratio(okv(r.p, r.p.mib), okv(r.q, r.q.mib)),
                   num(okv(r.p, r.p.wire_mib)), num(okv(r.q, r.q.wire_mib)),
                   ratio(okv(r.p, r.p.wire_mib), okv(r.q, r.q.wire_mib)),
                   r.p.ok ? std::to_string(r.p.rounds) : "—", r.q.ok ? std::to_string(r.q.rounds) : "—",
                   ratio(okv(r.p, r.p.total_ms), physical_ms), ratio(okv(r.q, r.q.total_ms), physical_ms));
    }
    fmt::print("\nLink: veth between two network namespaces, plain TCP {:.0f} MiB/s measured in this run; physical "
               "limit for {} MiB of guest RAM: {:.0f} ms. Guest TSC {:.0f} MHz.\n",
               link, o.memory_mib, physical_ms, hz / 1e6);
    fmt::print("Downtime: popek's report (pause -> the destination's commit reply) and QEMU's query-migrate "
               "\"downtime\". Guest-seen gap: the probe's largest TSC gap in the destination's first two ~100 ms "
               "windows (it includes host scheduling noise; how much of the pause it shows depends on how the VMM "
               "and KVM carry the TSC over).\n");
    fmt::print("MiB sent: popek's bytes_sent, QEMU's ram.transferred; on the wire: the source namespace's veth "
               "tx bytes (TCP/IP headers included) while the migration ran.\n");
    fmt::print("QEMU microvm (KVM), max-bandwidth unlimited; \"—\": failed or did not converge (see stderr).\n");
    // This run's sockets and logs.
    std::error_code ec;
    const std::string mine = "popek-migbench-" + std::to_string(::getpid()) + "-";
    for (const auto& e : fs::directory_iterator(o.dir, ec))
        if (e.path().filename().string().rfind(mine, 0) == 0) fs::remove(e.path(), ec);
    for (const auto& r : rows) {
        if (!r.p.ok) fmt::print("- popek, {} at {} ms, {}: {}\n", r.workload, r.limit, r.pc, one_line(r.p.error));
        if (!r.q.ok) fmt::print("- QEMU, {} at {} ms, {}: {}\n", r.workload, r.limit, r.qc, one_line(r.q.error));
    }
    return 0;
}
