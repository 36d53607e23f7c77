// Bounds-checked little-endian writer/reader for the platform models'
// save()/restore() blobs: a 4-byte magic, a version, then fields. The reader
// never reads past the end; any short read or a value the caller rejects
// makes the whole restore fail.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace popek::hv::emu::platform {

class BlobWriter {
public:
    BlobWriter(uint32_t magic, uint32_t version) {
        u32(magic);
        u32(version);
    }
    void u8(uint8_t v) { out_.push_back(v); }
    void boolean(bool v) { out_.push_back(v ? 1 : 0); }
    void u16(uint16_t v) { put(v, 2); }
    void u32(uint32_t v) { put(v, 4); }
    void u64(uint64_t v) { put(v, 8); }
    void bytes(std::span<const uint8_t> b) { out_.insert(out_.end(), b.begin(), b.end()); }
    std::vector<uint8_t> take() { return std::move(out_); }

private:
    void put(uint64_t v, unsigned n) {
        for (unsigned i = 0; i < n; ++i) out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
    }
    std::vector<uint8_t> out_;
};

class BlobReader {
public:
    // Fails (ok() == false) unless the blob starts with magic and version.
    BlobReader(std::span<const uint8_t> in, uint32_t magic, uint32_t version) : in_(in) {
        if (u32() != magic || u32() != version) ok_ = false;
    }
    uint8_t u8() { return static_cast<uint8_t>(get(1)); }
    uint16_t u16() { return static_cast<uint16_t>(get(2)); }
    uint32_t u32() { return static_cast<uint32_t>(get(4)); }
    uint64_t u64() { return get(8); }
    bool boolean() {
        const uint8_t v = u8();
        if (v > 1) ok_ = false;
        return v != 0;
    }
    void bytes(std::span<uint8_t> out) {
        if (!ok_ || in_.size() - pos_ < out.size()) {
            ok_ = false;
            return;
        }
        std::memcpy(out.data(), in_.data() + pos_, out.size());
        pos_ += out.size();
    }
    // Marks the blob bad when cond is false (a field out of range).
    void check(bool cond) {
        if (!cond) ok_ = false;
    }
    // Everything read, nothing left over, every value accepted.
    [[nodiscard]] bool done() const { return ok_ && pos_ == in_.size(); }
    [[nodiscard]] bool ok() const { return ok_; }

private:
    uint64_t get(unsigned n) {
        if (!ok_ || in_.size() - pos_ < n) {
            ok_ = false;
            return 0;
        }
        uint64_t v = 0;
        for (unsigned i = 0; i < n; ++i) v |= static_cast<uint64_t>(in_[pos_ + i]) << (8 * i);
        pos_ += n;
        return v;
    }
    std::span<const uint8_t> in_;
    size_t pos_ = 0;
    bool ok_ = true;
};

}  // namespace popek::hv::emu::platform
