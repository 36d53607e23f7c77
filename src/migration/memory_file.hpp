// Guest memory in a snapshot: one sparse file in GuestMemory's RAM layout
// (regions back to back from offset 0), so a restore can map it
// copy-on-write as guest RAM. Pages that are all zero are not written (they
// stay holes), and a digest covers every non-zero page with its index.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "base/result.hpp"
#include "memory/guest_memory.hpp"

namespace popek::migration {

struct MemoryFileInfo {
    uint64_t size = 0;          // bytes of guest RAM (the file's length)
    uint64_t pages_written = 0; // non-zero 4 KiB pages
    uint64_t digest = 0;        // XXH3-64 over (page index, page) of every non-zero page
};

bool is_zero_page(const uint8_t* page);

// The pages of guest RAM that may hold data, as [start, end) byte ranges of
// the RAM layout (GuestMemory::for_each_populated): pages the kernel never
// handed out are skipped (they read as zeros and reading them would populate
// them). A copy-on-write file mapping (map_private_file) is all data.
base::Result<void> for_each_data_range(const memory::GuestMemory& mem,
                                       const std::function<base::Result<void>(uint64_t, uint64_t)>& fn);
// XXH3-64 over (page index, page) of every non-zero page of guest RAM: equal
// for equal contents whatever is a hole on either side (live migration's
// validation digest; the memory file's digest is the same function).
base::Result<uint64_t> memory_digest(const memory::GuestMemory& mem);

// Writes guest RAM to `path` (created or truncated). Call with the vCPUs
// paused and devices quiesced.
base::Result<MemoryFileInfo> save_memory(const memory::GuestMemory& mem, const std::string& path);

// Guest RAM read wholly from `path` into fresh anonymous RAM; the digest and the
// size are checked against `expected`.
base::Result<memory::GuestMemory> load_memory_eager(std::span<const memory::RamRange> ranges, const std::string& path,
                                                    const MemoryFileInfo& expected);
// Guest RAM mapped copy-on-write from `path`: pages load on first touch.
// Only the size is checked (reading every page to check the digest would
// defeat the point); the state file's checksum covers the rest.
base::Result<memory::GuestMemory> load_memory_lazy(std::span<const memory::RamRange> ranges, const std::string& path,
                                                   const MemoryFileInfo& expected);

}  // namespace popek::migration
