// Byte-level helpers shared by the ACPI table builders: the common System
// Description Table header, checksums, little-endian appends.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace popek::arch::x86::acpi {

constexpr size_t kSdtHeaderSize = 36;
constexpr std::string_view kOemId = "POPEK ";           // 6 bytes, in every header and the RSDP
constexpr std::string_view kOemTableId = "POPEKVM ";    // 8 bytes
constexpr uint32_t kOemRevision = 1;
constexpr std::string_view kCreatorId = "POPK";         // 4 bytes: the "compiler" that made the table
constexpr uint32_t kCreatorRevision = 1;

// The byte that makes `bytes` sum to zero (mod 256) when stored among them
// in place of a zero.
uint8_t checksum_byte(std::span<const uint8_t> bytes);

// Appends `size` bytes of `value`, little-endian.
void put(std::vector<uint8_t>& out, uint64_t value, unsigned size);
// Appends the characters of `text` (no terminator).
void put(std::vector<uint8_t>& out, std::string_view text);
// Overwrites `size` bytes at `offset` (which must lie inside `out`).
void put_at(std::vector<uint8_t>& out, size_t offset, uint64_t value, unsigned size);
void put_at(std::vector<uint8_t>& out, size_t offset, std::span<const uint8_t> bytes);
void put_at(std::vector<uint8_t>& out, size_t offset, std::string_view text);

// A table's 36-byte header with length and checksum left zero; seal() fills them.
std::vector<uint8_t> sdt_header(std::string_view signature, uint8_t revision);
// Stores the final length and checksum of a complete table.
void seal(std::vector<uint8_t>& table);

// ACPI Generic Address Structure for an I/O port register.
std::array<uint8_t, 12> io_gas(uint16_t port, uint8_t bit_width);

}  // namespace popek::arch::x86::acpi
