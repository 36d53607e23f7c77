// Runs a program to completion with a deadline and captures its output:
// the e2e tests' way of driving popek (and QEMU) as a user would.
#pragma once

#include <chrono>
#include <cstdlib>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace popek::test {

struct ProcessResult {
    int exit_code = -1;     // -1 if killed by a signal or timed out
    int term_signal = 0;
    bool timed_out = false;
    std::string out;
    std::string err;
};

// A program running in the background with its output collected through
// pipes. Killed (SIGKILL) and reaped when destroyed if still running.
class Child {
public:
    explicit Child(const std::vector<std::string>& argv);
    ~Child();
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;

    // Reads output until a stdout line starts with `prefix` (true), the
    // program closes its output or the timeout passes (false).
    bool wait_for_line(const std::string& prefix, std::chrono::milliseconds timeout);
    // Reads the rest of the output and waits for the exit; kills the
    // program if it runs past `timeout`.
    ProcessResult finish(std::chrono::milliseconds timeout);
    [[nodiscard]] const std::string& out() const { return r_.out; }
    [[nodiscard]] const std::string& err() const { return r_.err; }
    [[nodiscard]] int pid() const { return pid_; }

private:
    bool pump(std::chrono::milliseconds left);
    int pid_ = -1;
    int fds_[2] = {-1, -1};
    ProcessResult r_;
};

// Runs argv; kills it (SIGKILL) if it runs past `timeout`. Output is
// collected through pipes until the process exits.
ProcessResult run_process(const std::vector<std::string>& argv, std::chrono::milliseconds timeout);

// Lines of `text` (without the newline characters).
std::vector<std::string> lines(const std::string& text);

// The first line of `text` starting with `prefix`, or "" if none.
std::string line_starting(const std::string& text, const std::string& prefix);

// A TCP port on 127.0.0.1 that nothing listened on a moment ago.
uint16_t free_port();
// Whether something listens on 127.0.0.1:port (/proc/net/tcp, state 0A).
bool listening(uint16_t port);
// Waits (at most 20 s) until something listens on 127.0.0.1:port.
void wait_listening(uint16_t port);

// The checksum of the probe's `compute` workload in its PROBE-DONE line, or "".
std::string checksum_of(const std::string& out);
// A file's bytes ("" if it cannot be read).
std::string read_text(const std::string& path);
// Polls `path` until it contains `what`; false after `timeout`.
bool file_has(const std::string& path, const std::string& what, std::chrono::seconds timeout);
// A process's stdout as a JSON value (popek migrate's report); {} if it is not JSON.
nlohmann::json report_of(const ProcessResult& r);

// Sets an environment variable for the children started in its scope.
struct ScopedEnv {
    ScopedEnv(const char* name, const char* value) : name_(name) { ::setenv(name, value, 1); }
    ~ScopedEnv() { ::unsetenv(name_); }
    ScopedEnv(const ScopedEnv&) = delete;
    ScopedEnv& operator=(const ScopedEnv&) = delete;
    const char* name_;
};

// A fresh directory under /tmp, removed with everything in it at scope end.
class TempDir {
public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    [[nodiscard]] std::string path(const std::string& name) const { return path_ + "/" + name; }

private:
    std::string path_;
};

// A sparse file of `size` bytes in the test's temp dir, removed at scope end:
// the raw disk images the virtio tests hand to popek.
class TempImage {
public:
    explicit TempImage(uint64_t size, const std::string& name = "disk.img");
    ~TempImage();
    TempImage(const TempImage&) = delete;
    TempImage& operator=(const TempImage&) = delete;
    [[nodiscard]] const std::string& path() const { return path_; }
    [[nodiscard]] std::string contents() const;

private:
    std::string path_;
};

}  // namespace popek::test
