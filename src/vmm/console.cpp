#include "vmm/console.hpp"

#include <fcntl.h>
#include <pty.h>
#include <termios.h>
#include <unistd.h>

namespace popek::vmm {

using base::Error;

base::Result<ConsoleFds> open_console(const VmConfig& cfg) {
    ConsoleFds c;
    switch (cfg.serial) {
        case SerialMode::Stdio:
            c.out_fd = STDOUT_FILENO;
            c.in_fd = STDIN_FILENO;
            break;
        case SerialMode::None:
            c.owned_out = base::UniqueFd(::open("/dev/null", O_WRONLY | O_CLOEXEC));
            if (!c.owned_out.valid()) return Error::from_errno("open /dev/null");
            c.out_fd = c.owned_out.get();
            break;
        case SerialMode::File:
            c.owned_out = base::UniqueFd(
                ::open(cfg.serial_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
            if (!c.owned_out.valid())
                return Error::from_errno("--serial file:" + cfg.serial_path + ": cannot open");
            c.out_fd = c.owned_out.get();
            break;
        case SerialMode::Pty: {
            int master = -1, slave = -1;
            char name[256];
            if (::openpty(&master, &slave, name, nullptr, nullptr) != 0)
                return Error::from_errno("--serial pty: openpty");
            // Raw mode: the guest's bytes pass through untouched.
            termios t{};
            if (::tcgetattr(slave, &t) == 0) {
                ::cfmakeraw(&t);
                ::tcsetattr(slave, TCSANOW, &t);
            }
            ::fcntl(slave, F_SETFD, FD_CLOEXEC);
            c.pty_slave = base::UniqueFd(slave);
            ::fcntl(master, F_SETFD, FD_CLOEXEC);
            ::fcntl(master, F_SETFL, O_NONBLOCK);
            c.owned_out = base::UniqueFd(master);
            c.out_fd = master;
            c.in_fd = master;
            c.pty_path = name;
            break;
        }
    }
    return c;
}

}  // namespace popek::vmm
