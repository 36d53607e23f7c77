#include "migration/memory_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstring>
#include <memory>

#include "base/unique_fd.hpp"

namespace popek::migration {

using base::Error;
using base::Result;

namespace {

constexpr uint64_t kPage = 4096;

struct Xxh3Deleter {
    void operator()(XXH3_state_t* s) const { XXH3_freeState(s); }
};
using Xxh3 = std::unique_ptr<XXH3_state_t, Xxh3Deleter>;

Xxh3 new_digest() {
    Xxh3 s(XXH3_createState());
    if (s) XXH3_64bits_reset(s.get());
    return s;
}

void digest_page(XXH3_state_t* s, uint64_t index, const uint8_t* page) {
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = static_cast<uint8_t>(index >> (8 * i));
    XXH3_64bits_update(s, le, sizeof le);
    XXH3_64bits_update(s, page, kPage);
}

Result<void> pwrite_all(int fd, const uint8_t* p, uint64_t len, uint64_t off, const std::string& path) {
    while (len > 0) {
        ssize_t n = ::pwrite(fd, p, len, static_cast<off_t>(off));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return Error::from_errno("writing guest memory to " + path);
        p += n;
        off += static_cast<uint64_t>(n);
        len -= static_cast<uint64_t>(n);
    }
    return {};
}

Result<void> pread_all(int fd, uint8_t* p, uint64_t len, uint64_t off, const std::string& path) {
    while (len > 0) {
        ssize_t n = ::pread(fd, p, len, static_cast<off_t>(off));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return Error::from_errno("reading guest memory from " + path);
        if (n == 0) return Error{"guest memory file " + path + " ends early"};
        p += n;
        off += static_cast<uint64_t>(n);
        len -= static_cast<uint64_t>(n);
    }
    return {};
}

// Data extents of the file `fd` within [from, to): calls fn(start, end) for each.
// Falls back to the whole range where SEEK_DATA is not supported.
template <class Fn>
Result<void> for_each_data(int fd, uint64_t from, uint64_t to, Fn&& fn) {
    uint64_t pos = from;
    while (pos < to) {
        off_t data = ::lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO) return {};  // only a hole from here on
            return fn(pos, to);             // no SEEK_DATA: treat all as data
        }
        auto start = static_cast<uint64_t>(data);
        if (start >= to) return {};
        off_t hole = ::lseek(fd, data, SEEK_HOLE);
        uint64_t end = hole < 0 ? to : std::min(to, static_cast<uint64_t>(hole));
        start = start / kPage * kPage;
        end = (end + kPage - 1) / kPage * kPage;
        POPEK_TRY(fn(start, std::min(end, to)));
        pos = end;
    }
    return {};
}

}  // namespace

Result<void> for_each_data_range(const memory::GuestMemory& mem, const std::function<Result<void>(uint64_t, uint64_t)>& fn) {
    return mem.for_each_populated(0, mem.ram_size(), fn);
}

Result<uint64_t> memory_digest(const memory::GuestMemory& mem) {
    Xxh3 d = new_digest();
    if (!d) return Error{"digest: out of memory"};
    const uint8_t* base = mem.regions().front().host;
    POPEK_TRY(for_each_data_range(mem, [&](uint64_t start, uint64_t end) -> Result<void> {
        for (uint64_t off = start; off < end; off += kPage)
            if (!is_zero_page(base + off)) digest_page(d.get(), off / kPage, base + off);
        return {};
    }));
    return XXH3_64bits_digest(d.get());
}

bool is_zero_page(const uint8_t* page) {
    uint64_t acc = 0;
    for (size_t i = 0; i < kPage; i += 64) {
        uint64_t w[8];
        std::memcpy(w, page + i, sizeof w);
        acc |= w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7];
        if (acc != 0) return false;
    }
    return true;
}

Result<MemoryFileInfo> save_memory(const memory::GuestMemory& mem, const std::string& final_path) {
    // Written aside and renamed into place: `final_path` may be the very
    // file a lazily restored VM's RAM is mapped from, which must not change
    // under it (truncating it would fault the guest's untouched pages).
    const std::string path = final_path + ".tmp";
    base::UniqueFd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!out.valid()) return Error::from_errno("creating " + path);
    MemoryFileInfo info;
    info.size = mem.ram_size();
    if (::ftruncate(out.get(), static_cast<off_t>(info.size)) != 0) return Error::from_errno("sizing " + path);
    Xxh3 digest = new_digest();
    if (!digest) return Error{"out of memory for the memory digest"};

    for (const auto& r : mem.regions()) {
        auto scan = [&](uint64_t start, uint64_t end) -> Result<void> {
            uint64_t run = 0, run_len = 0;  // file offsets of the current non-zero run
            for (uint64_t off = start; off < end; off += kPage) {
                const uint8_t* page = r.host + (off - r.fd_offset);
                if (is_zero_page(page)) {
                    if (run_len) POPEK_TRY(pwrite_all(out.get(), r.host + (run - r.fd_offset), run_len, run, path));
                    run_len = 0;
                    continue;
                }
                digest_page(digest.get(), off / kPage, page);
                info.pages_written++;
                if (run_len == 0) run = off;
                run_len += kPage;
            }
            if (run_len) POPEK_TRY(pwrite_all(out.get(), r.host + (run - r.fd_offset), run_len, run, path));
            return {};
        };
        // Pages the kernel never handed out are zero: not even looked at.
        POPEK_TRY(mem.for_each_populated(r.fd_offset, r.fd_offset + r.size, scan));
    }
    if (::fsync(out.get()) != 0) return Error::from_errno("fsync " + path);
    if (::rename(path.c_str(), final_path.c_str()) != 0)
        return Error::from_errno("renaming " + path + " to " + final_path);
    info.digest = XXH3_64bits_digest(digest.get());
    return info;
}

namespace {

Result<base::UniqueFd> open_checked(const std::string& path, const MemoryFileInfo& expected) {
    base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return Error::from_errno("opening guest memory file " + path);
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0) return Error::from_errno("fstat " + path);
    if (static_cast<uint64_t>(st.st_size) != expected.size)
        return Error{"guest memory file " + path + " holds " + std::to_string(st.st_size) + " bytes, the snapshot says " +
                     std::to_string(expected.size) + " (truncated or from another snapshot)"};
    return fd;
}

}  // namespace

Result<memory::GuestMemory> load_memory_eager(std::span<const memory::RamRange> ranges, const std::string& path,
                                              const MemoryFileInfo& expected) {
    POPEK_ASSIGN_OR_RETURN(auto fd, open_checked(path, expected));
    POPEK_ASSIGN_OR_RETURN(auto mem, memory::GuestMemory::create(ranges));
    if (mem.ram_size() != expected.size)
        return Error{"the snapshot's memory size does not match its configuration"};
    Xxh3 digest = new_digest();
    if (!digest) return Error{"out of memory for the memory digest"};
    uint64_t pages = 0;
    for (const auto& r : mem.regions()) {
        auto load = [&](uint64_t start, uint64_t end) -> Result<void> {
            uint8_t* host = r.host + (start - r.fd_offset);
            // One call allocates the pages instead of one fault per page in pread.
            (void)::madvise(host, end - start, MADV_POPULATE_WRITE);
            POPEK_TRY(pread_all(fd.get(), host, end - start, start, path));
            for (uint64_t off = start; off < end; off += kPage) {
                const uint8_t* page = r.host + (off - r.fd_offset);
                if (is_zero_page(page)) continue;
                digest_page(digest.get(), off / kPage, page);
                pages++;
            }
            return {};
        };
        POPEK_TRY(for_each_data(fd.get(), r.fd_offset, r.fd_offset + r.size, load));
    }
    if (pages != expected.pages_written || XXH3_64bits_digest(digest.get()) != expected.digest)
        return Error{"guest memory file " + path + " does not match the snapshot's digest (corrupted)"};
    return mem;
}

Result<memory::GuestMemory> load_memory_lazy(std::span<const memory::RamRange> ranges, const std::string& path,
                                             const MemoryFileInfo& expected) {
    POPEK_ASSIGN_OR_RETURN(auto fd, open_checked(path, expected));
    return memory::GuestMemory::map_private_file(ranges, std::move(fd));
}

}  // namespace popek::migration
