// --serial pty: popek names the pseudo-terminal on stderr and the guest's
// console output comes out of it.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>

extern char** environ;

namespace popek::test {
namespace {

// Reads from fd until `needle` shows up or the deadline passes.
bool read_until(int fd, std::string& got, const std::string& needle, std::chrono::steady_clock::time_point deadline) {
    while (got.find(needle) == std::string::npos) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return false;
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
        char buf[512];
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) return false;
        got.append(buf, static_cast<size_t>(n));
    }
    return true;
}

TEST(SerialPty, GuestOutputComesOutOfThePty) {
    int err[2];
    ASSERT_EQ(::pipe2(err, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    std::string bin = POPEK_BIN, kernel = POPEK_PROBE;
    // "dirty" runs until killed, so the pty stays open while the test reads it.
    char* argv[] = {bin.data(), const_cast<char*>("run"), const_cast<char*>("--kernel"), kernel.data(),
                    const_cast<char*>("--cmdline"), const_cast<char*>("dirty 4"),
                    const_cast<char*>("--serial"), const_cast<char*>("pty"), nullptr};
    pid_t pid;
    ASSERT_EQ(::posix_spawn(&pid, argv[0], &fa, nullptr, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    ::close(err[1]);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);

    std::string err_text;
    bool named = read_until(err[0], err_text, "\n", deadline);
    std::string path;
    const std::string prefix = "popek: serial console on ";
    if (named && err_text.rfind(prefix, 0) == 0) path = err_text.substr(prefix.size(), err_text.find('\n') - prefix.size());
    std::string out;
    bool got_output = false;
    if (!path.empty()) {
        int pty = ::open(path.c_str(), O_RDONLY | O_NOCTTY | O_CLOEXEC);
        EXPECT_GE(pty, 0) << path;
        if (pty >= 0) {
            got_output = read_until(pty, out, "PROBE-DIRTY pass 1", deadline);
            ::close(pty);
        }
    }
    ::kill(pid, SIGTERM);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ::close(err[0]);

    ASSERT_FALSE(path.empty()) << "stderr: " << err_text;
    EXPECT_EQ(path.rfind("/dev/pts/", 0), 0u) << path;
    EXPECT_TRUE(got_output) << out;
    EXPECT_NE(out.find("PROBE-READY"), std::string::npos) << out;
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 128 + SIGTERM) << "status " << status;
}

}  // namespace
}  // namespace popek::test
