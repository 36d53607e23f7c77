#include "bench_util.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

extern char** environ;

namespace popek::bench {

double median(std::vector<double> v) {
    if (v.empty()) return -1;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

Child Child::spawn(const std::vector<std::string>& argv, const std::string& stderr_path) {
    Child c;
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) return c;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(out[1]);
    if (rc != 0) {
        ::close(out[0]);
        return c;
    }
    c.pid_ = pid;
    c.out_ = out[0];
    return c;
}

Child& Child::operator=(Child&& o) noexcept {
    if (this != &o) {
        kill_and_wait();
        pid_ = std::exchange(o.pid_, -1);
        out_ = std::exchange(o.out_, -1);
    }
    return *this;
}

int Child::wait() {
    if (out_ >= 0) ::close(std::exchange(out_, -1));
    if (pid_ <= 0) return -1;
    int st = 0;
    ::waitpid(std::exchange(pid_, -1), &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void Child::kill_and_wait() {
    if (pid_ > 0) ::kill(pid_, SIGKILL);
    wait();
}

std::vector<std::string> qemu_probe_argv(const std::string& qemu, const std::string& probe, const std::string& memory,
                                         const std::string& cmdline, bool pcie) {
    std::string machine = "microvm,x-option-roms=off,rtc=off,pic=off,pit=on,isa-serial=on";
    if (pcie) machine += ",pcie=on";
    return {qemu, "-M", machine, "-accel", "kvm", "-m", memory, "-nodefaults", "-no-user-config", "-nographic",
            "-serial", "stdio", "-object", "memory-backend-memfd,id=mem,size=" + memory, "-M", "memory-backend=mem",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel", probe, "-append", cmdline};
}

}  // namespace popek::bench
