#include "arch/x86/acpi_sdt.hpp"

#include <algorithm>

namespace popek::arch::x86::acpi {

uint8_t checksum_byte(std::span<const uint8_t> bytes) {
    unsigned sum = 0;
    for (uint8_t b : bytes) sum += b;
    return static_cast<uint8_t>(0x100 - (sum & 0xff));
}

void put(std::vector<uint8_t>& out, uint64_t value, unsigned size) {
    for (unsigned i = 0; i < size; ++i) out.push_back(static_cast<uint8_t>(value >> (8 * i)));
}

void put(std::vector<uint8_t>& out, std::string_view text) {
    out.insert(out.end(), text.begin(), text.end());
}

void put_at(std::vector<uint8_t>& out, size_t offset, uint64_t value, unsigned size) {
    for (unsigned i = 0; i < size && offset + i < out.size(); ++i)
        out[offset + i] = static_cast<uint8_t>(value >> (8 * i));
}

void put_at(std::vector<uint8_t>& out, size_t offset, std::span<const uint8_t> bytes) {
    for (size_t i = 0; i < bytes.size() && offset + i < out.size(); ++i) out[offset + i] = bytes[i];
}

void put_at(std::vector<uint8_t>& out, size_t offset, std::string_view text) {
    for (size_t i = 0; i < text.size() && offset + i < out.size(); ++i)
        out[offset + i] = static_cast<uint8_t>(text[i]);
}

std::vector<uint8_t> sdt_header(std::string_view signature, uint8_t revision) {
    std::vector<uint8_t> t;
    put(t, signature.substr(0, 4));
    put(t, 0, 4);  // length, by seal()
    put(t, revision, 1);
    put(t, 0, 1);  // checksum, by seal()
    put(t, kOemId);
    put(t, kOemTableId);
    put(t, kOemRevision, 4);
    put(t, kCreatorId);
    put(t, kCreatorRevision, 4);
    return t;
}

void seal(std::vector<uint8_t>& table) {
    constexpr size_t kLengthOffset = 4;
    constexpr size_t kChecksumOffset = 9;
    put_at(table, kLengthOffset, table.size(), 4);
    put_at(table, kChecksumOffset, 0, 1);
    put_at(table, kChecksumOffset, checksum_byte(table), 1);
}

std::array<uint8_t, 12> io_gas(uint16_t port, uint8_t bit_width) {
    constexpr uint8_t kSystemIo = 1;
    std::vector<uint8_t> g;
    put(g, kSystemIo, 1);
    put(g, bit_width, 1);
    put(g, 0, 1);  // bit offset
    unsigned access = bit_width <= 8 ? 1 : bit_width <= 16 ? 2 : bit_width <= 32 ? 3 : 4;  // byte..qword
    put(g, access, 1);
    put(g, port, 8);
    std::array<uint8_t, 12> out{};
    std::copy(g.begin(), g.end(), out.begin());
    return out;
}

}  // namespace popek::arch::x86::acpi
