#include "base/file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/unique_fd.hpp"

namespace popek::base {

Result<std::vector<uint8_t>> read_file(const std::string& path, const std::string& what,
                                       uint64_t max_bytes) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return Error::from_errno("cannot open " + what + " '" + path + "'");
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return Error::from_errno("cannot stat " + what + " '" + path + "'");
    if (S_ISDIR(st.st_mode)) return Error{what + " '" + path + "' is a directory"};
    if (static_cast<uint64_t>(st.st_size) > max_bytes)
        return Error{what + " '" + path + "' is too large (" + std::to_string(st.st_size) + " bytes)"};
    std::vector<uint8_t> data(static_cast<size_t>(st.st_size));
    size_t got = 0;
    while (got < data.size()) {
        ssize_t n = ::read(fd.get(), data.data() + got, data.size() - got);
        if (n < 0) {
            if (errno == EINTR) continue;
            return Error::from_errno("cannot read " + what + " '" + path + "'");
        }
        if (n == 0) break;
        got += static_cast<size_t>(n);
    }
    data.resize(got);
    return data;
}

}  // namespace popek::base
