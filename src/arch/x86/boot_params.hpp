// Linux's x86 "zero page" (struct boot_params, arch/x86/include/uapi/asm/
// bootparam.h) and the setup header it embeds at 0x1F1. Only the fields a
// loader fills are named; the rest are opaque padding of the right size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "arch/x86/e820.hpp"
#include "base/result.hpp"

namespace popek::arch::x86 {

constexpr uint32_t kSetupHeaderMagic = 0x53726448;  // "HdrS"
constexpr uint16_t kBootFlagMagic = 0xaa55;
constexpr uint8_t kLoadflagLoadedHigh = 0x01;
constexpr uint8_t kLoadflagCanUseHeap = 0x80;
constexpr uint16_t kXlfKernel64 = 0x0001;
constexpr uint16_t kXlfCanBeLoadedAbove4G = 0x0002;
constexpr uint8_t kTypeOfLoaderUndefined = 0xff;
constexpr size_t kE820MaxEntriesZeroPage = 128;

struct [[gnu::packed]] SetupHeader {
    uint8_t setup_sects;
    uint16_t root_flags;
    uint32_t syssize;
    uint16_t ram_size;
    uint16_t vid_mode;
    uint16_t root_dev;
    uint16_t boot_flag;
    uint16_t jump;
    uint32_t header;
    uint16_t version;
    uint32_t realmode_swtch;
    uint16_t start_sys_seg;
    uint16_t kernel_version;
    uint8_t type_of_loader;
    uint8_t loadflags;
    uint16_t setup_move_size;
    uint32_t code32_start;
    uint32_t ramdisk_image;
    uint32_t ramdisk_size;
    uint32_t bootsect_kludge;
    uint16_t heap_end_ptr;
    uint8_t ext_loader_ver;
    uint8_t ext_loader_type;
    uint32_t cmd_line_ptr;
    uint32_t initrd_addr_max;
    uint32_t kernel_alignment;
    uint8_t relocatable_kernel;
    uint8_t min_alignment;
    uint16_t xloadflags;
    uint32_t cmdline_size;
    uint32_t hardware_subarch;
    uint64_t hardware_subarch_data;
    uint32_t payload_offset;
    uint32_t payload_length;
    uint64_t setup_data;
    uint64_t pref_address;
    uint32_t init_size;
    uint32_t handover_offset;
    uint32_t kernel_info_offset;
};

struct [[gnu::packed]] BootE820Entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
};

struct [[gnu::packed]] BootParams {
    uint8_t screen_info[0x40];
    uint8_t apm_bios_info[0x14];
    uint8_t pad2[4];
    uint64_t tboot_addr;
    uint8_t ist_info[0x10];
    uint64_t acpi_rsdp_addr;
    uint8_t pad3[8];
    uint8_t hd0_info[16];
    uint8_t hd1_info[16];
    uint8_t sys_desc_table[0x10];
    uint8_t olpc_ofw_header[0x10];
    uint32_t ext_ramdisk_image;
    uint32_t ext_ramdisk_size;
    uint32_t ext_cmd_line_ptr;
    uint8_t pad4[112];
    uint32_t cc_blob_address;
    uint8_t edid_info[0x80];
    uint8_t efi_info[0x20];
    uint32_t alt_mem_k;
    uint32_t scratch;
    uint8_t e820_entries;
    uint8_t eddbuf_entries;
    uint8_t edd_mbr_sig_buf_entries;
    uint8_t kbd_status;
    uint8_t secure_boot;
    uint8_t pad5[2];
    uint8_t sentinel;
    uint8_t pad6[1];
    SetupHeader hdr;
    uint8_t pad7[0x290 - 0x1f1 - sizeof(SetupHeader)];
    uint32_t edd_mbr_sig_buffer[16];
    BootE820Entry e820_table[kE820MaxEntriesZeroPage];
    uint8_t pad8[48];
    uint8_t eddbuf[6 * 82];
    uint8_t pad9[276];
};

// Offsets of the setup header inside a bzImage and inside boot_params.
constexpr size_t kSetupHeaderOffset = 0x1f1;
static_assert(sizeof(SetupHeader) == 0x26c - kSetupHeaderOffset);
static_assert(offsetof(SetupHeader, boot_flag) == 0x1fe - kSetupHeaderOffset);
static_assert(offsetof(SetupHeader, header) == 0x202 - kSetupHeaderOffset);
static_assert(offsetof(SetupHeader, type_of_loader) == 0x210 - kSetupHeaderOffset);
static_assert(offsetof(SetupHeader, ramdisk_image) == 0x218 - kSetupHeaderOffset);
static_assert(offsetof(SetupHeader, heap_end_ptr) == 0x224 - kSetupHeaderOffset);
static_assert(offsetof(SetupHeader, cmd_line_ptr) == 0x228 - kSetupHeaderOffset);
static_assert(offsetof(SetupHeader, xloadflags) == 0x236 - kSetupHeaderOffset);
static_assert(offsetof(SetupHeader, cmdline_size) == 0x238 - kSetupHeaderOffset);
static_assert(offsetof(SetupHeader, pref_address) == 0x258 - kSetupHeaderOffset);
static_assert(offsetof(SetupHeader, kernel_info_offset) == 0x268 - kSetupHeaderOffset);
static_assert(sizeof(BootE820Entry) == 20);
static_assert(sizeof(BootParams) == 4096);
static_assert(offsetof(BootParams, acpi_rsdp_addr) == 0x070);
static_assert(offsetof(BootParams, ext_ramdisk_image) == 0x0c0);
static_assert(offsetof(BootParams, cc_blob_address) == 0x13c);
static_assert(offsetof(BootParams, e820_entries) == 0x1e8);
static_assert(offsetof(BootParams, sentinel) == 0x1ef);
static_assert(offsetof(BootParams, hdr) == kSetupHeaderOffset);
static_assert(offsetof(BootParams, edd_mbr_sig_buffer) == 0x290);
static_assert(offsetof(BootParams, e820_table) == 0x2d0);
static_assert(offsetof(BootParams, eddbuf) == 0xd00);

// What the loader tells the kernel through the zero page.
struct ZeroPageConfig {
    uint64_t cmdline_addr;
    uint64_t initrd_addr;
    uint64_t initrd_size;
    uint64_t rsdp_addr;
    std::span<const E820Entry> e820;
};

// A zero page: the kernel's own setup header `hdr` (as read from its image)
// plus the loader's fields. Errors if a value does not fit its field.
base::Result<BootParams> make_boot_params(const SetupHeader& hdr, const ZeroPageConfig& cfg);

}  // namespace popek::arch::x86
