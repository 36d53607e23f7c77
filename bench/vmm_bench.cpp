// popek vs QEMU-KVM on the same probe guest, measured in the same run:
//   start -> PROBE-READY latency, port-I/O exit round trip, and memory overhead.
// Usage: popek_vmm_bench --popek BIN --probe ELF [--qemu BIN] [--runs N] [--exits N]
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/core.h>

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;

struct Run {
    double ready_ms = -1;  // spawn -> PROBE-READY seen
    double done_ms = -1;   // spawn -> PROBE-DONE seen
    long overhead_kib = -1;  // RssAnon + RssFile at PROBE-DONE (guest RAM is shared memory)
    long shmem_kib = -1;     // guest memory touched (RssShmem)
    std::string output;
    int status = -1;
};

long status_kib(pid_t pid, const char* key) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(f, line)) {
        if (line.rfind(key, 0) == 0) return std::stol(line.substr(std::strlen(key)));
    }
    return -1;
}

// Spawns argv, watches stdout for the probe's lines, samples memory when the
// workload is done, then waits for exit (or kills after `timeout`).
Run run_once(const std::vector<std::string>& argv, std::chrono::seconds timeout) {
    Run r;
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) return r;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid;
    auto t0 = Clock::now();
    if (::posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ) != 0) return r;
    posix_spawn_file_actions_destroy(&fa);
    ::close(out[1]);
    auto ms = [&] { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); };
    std::string pending;
    for (;;) {
        pollfd p{out[0], POLLIN, 0};
        int left = static_cast<int>(timeout.count() * 1000 - static_cast<long>(ms()));
        if (left <= 0 || ::poll(&p, 1, left) <= 0) {
            ::kill(pid, SIGKILL);
            break;
        }
        char buf[4096];
        ssize_t n = ::read(out[0], buf, sizeof buf);
        if (n <= 0) break;
        double now = ms();
        r.output.append(buf, static_cast<size_t>(n));
        if (r.ready_ms < 0 && r.output.find("PROBE-READY") != std::string::npos) r.ready_ms = now;
        if (r.done_ms < 0 && r.output.find("PROBE-DONE") != std::string::npos) {
            r.done_ms = now;
            r.overhead_kib = status_kib(pid, "RssAnon:") + status_kib(pid, "RssFile:");
            r.shmem_kib = status_kib(pid, "RssShmem:");
        }
    }
    ::close(out[0]);
    int st = 0;
    ::waitpid(pid, &st, 0);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

double median(std::vector<double> v) {
    if (v.empty()) return -1;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

struct Opts {
    std::string popek, probe, qemu = "/usr/bin/qemu-system-x86_64";
    int runs = 10;
    long exits = 1000000;
    std::string memory = "128M";
};

std::vector<std::string> popek_argv(const Opts& o, const std::string& cmdline) {
    return {o.popek, "run", "--kernel", o.probe, "--cmdline", cmdline, "--memory", o.memory};
}

std::vector<std::string> qemu_argv(const Opts& o, const std::string& cmdline) {
    // microvm: QEMU's fastest-starting machine; guest RAM from a memfd like popek's,
    // so both processes' guest memory shows up as shared memory and not as overhead.
    return {o.qemu, "-M", "microvm,x-option-roms=off,rtc=off,pic=off,pit=on,isa-serial=on",
            "-accel", "kvm", "-m", o.memory, "-nodefaults", "-no-user-config",
            "-nographic", "-serial", "stdio", "-object",
            "memory-backend-memfd,id=mem,size=" + o.memory, "-M", "memory-backend=mem",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel", o.probe, "-append", cmdline};
}

}  // namespace

int main(int argc, char** argv) {
    Opts o;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string k = argv[i], v = argv[i + 1];
        if (k == "--popek") o.popek = v;
        else if (k == "--probe") o.probe = v;
        else if (k == "--qemu") o.qemu = v;
        else if (k == "--runs") o.runs = std::stoi(v);
        else if (k == "--exits") o.exits = std::stol(v);
        else {
            std::fprintf(stderr, "popek_vmm_bench: unknown option %s\n", k.c_str());
            return 2;
        }
    }
    if (o.popek.empty() || o.probe.empty()) {
        std::fprintf(stderr, "usage: popek_vmm_bench --popek BIN --probe ELF [--qemu BIN] [--runs N] [--exits N]\n");
        return 2;
    }
    struct Row { std::string name; double popek, qemu; };
    std::vector<Row> rows;
    struct Side { const char* name; std::vector<std::string> (*make)(const Opts&, const std::string&); };
    Side sides[2] = {{"popek", popek_argv}, {"qemu", qemu_argv}};

    // 1. start -> PROBE-READY, and memory overhead, on a short workload; runs interleaved.
    std::vector<double> ready[2], overhead[2];
    for (int i = 0; i < o.runs; i++) {
        for (int s = 0; s < 2; s++) {
            Run r = run_once(sides[s].make(o, "compute 1"), std::chrono::seconds(30));
            if (r.ready_ms < 0) {
                std::fprintf(stderr, "%s did not print PROBE-READY:\n%s\n", sides[s].name, r.output.c_str());
                return 1;
            }
            ready[s].push_back(r.ready_ms);
            if (r.overhead_kib > 0) overhead[s].push_back(static_cast<double>(r.overhead_kib) / 1024.0);
        }
    }
    rows.push_back({"start -> PROBE-READY (ms, median)", median(ready[0]), median(ready[1])});
    rows.push_back({"RSS beyond guest RAM (MiB, median)", median(overhead[0]), median(overhead[1])});

    // 2. port-I/O exits: time between PROBE-READY and PROBE-DONE over N exits.
    //    "exits" writes the POST port (0x80): no answer needed, so popek lets KVM
    //    batch them; "pio-read" reads the UART scratch register: every read is a
    //    full round trip through the VMM's device model in user space.
    auto per_op = [&](const std::string& workload, long n, double out[2]) -> bool {
        for (int s = 0; s < 2; s++) {
            Run r = run_once(sides[s].make(o, workload + " " + std::to_string(n)), std::chrono::seconds(900));
            if (r.done_ms < 0) {
                std::fprintf(stderr, "%s did not finish %s:\n%s\n", sides[s].name, workload.c_str(), r.output.c_str());
                return false;
            }
            out[s] = (r.done_ms - r.ready_ms) * 1e6 / static_cast<double>(n);
        }
        return true;
    };
    double per_exit[2], per_read[2];
    if (!per_op("exits", o.exits, per_exit) || !per_op("pio-read", o.exits / 10, per_read)) return 1;
    rows.push_back({"port-I/O exit round trip, POST port 0x80 (ns/exit)", per_exit[0], per_exit[1]});
    rows.push_back({"port-I/O read via user-space device model (ns/read)", per_read[0], per_read[1]});

    fmt::print("| benchmark | popek | QEMU microvm (KVM) | popek / QEMU |\n|---|---:|---:|---:|\n");
    for (const auto& row : rows)
        fmt::print("| {} | {:.2f} | {:.2f} | {:.2f}x |\n", row.name, row.popek, row.qemu, row.popek / row.qemu);
    fmt::print("\n{} runs for start/RSS (interleaved); {} POST-port exits; {} port reads.\n", o.runs, o.exits,
               o.exits / 10);
    return 0;
}
