/* Probe guest: what the VMM describes to it: ACPI tables (RSDP from
 * hvm_start_info or the BIOS area, then RSDT/XSDT) and the memory map.
 * Ring 3: all of it is plain memory. */
#include "probe.h"


static bool checksum_ok(const void *p, u32 len) {
    u8 sum = 0;
    for (u32 i = 0; i < len; i++) sum = (u8)(sum + ((const u8 *)p)[i]);
    return sum == 0;
}

static const u8 *find_rsdp(void) {
    if (g_start_info->rsdp_paddr) return (const u8 *)g_start_info->rsdp_paddr;
    /* Not passed: the legacy BIOS area search (QEMU puts it there). */
    for (u64 a = 0xe0000; a < 0x100000; a += 16)
        if (!memcmp((const void *)a, "RSD PTR ", 8) && checksum_ok((const void *)a, 20)) return (const u8 *)a;
    return NULL;
}

/* fatal: probe_error when there are no ACPI tables at all (else NULL). */
static const struct acpi_header *lookup(const char *signature, bool fatal) {
    const u8 *rsdp = find_rsdp();
    if (!rsdp || memcmp(rsdp, "RSD PTR ", 8)) {
        if (fatal) probe_error("no ACPI RSDP", NULL);
        return NULL;
    }
    u64 xsdt = rsdp[15] >= 2 ? *(const u64 *)(rsdp + 24) : 0;
    u64 rsdt = *(const u32 *)(rsdp + 16);
    const struct acpi_header *sdt = (const struct acpi_header *)(xsdt ? xsdt : rsdt);
    u32 entry_size = xsdt ? 8 : 4;
    if (!sdt) {
        if (fatal) probe_error("no RSDT/XSDT", NULL);
        return NULL;
    }
    u32 n = (sdt->length - (u32)sizeof(*sdt)) / entry_size;
    const u8 *entries = (const u8 *)(sdt + 1);
    for (u32 i = 0; i < n; i++) {
        u64 addr = entry_size == 8 ? *(const u64 *)(entries + 8 * i) : *(const u32 *)(entries + 4 * i);
        const struct acpi_header *h = (const struct acpi_header *)addr;
        if (h && !memcmp(h->signature, signature, 4)) return h;
    }
    return NULL;
}

const struct acpi_header *acpi_find(const char *signature) {
    const struct acpi_header *h = lookup(signature, true);
    if (!h) probe_error("no ACPI table", signature);
    return h;
}

const struct acpi_header *acpi_lookup(const char *signature) { return lookup(signature, false); }


/* The memory map lives in hvm_start_info (filled from boot_params on the
 * bzImage path). */
bool have_memmap(void) {
    const struct hvm_start_info *si = g_start_info;
    return si->version >= 1 && si->memmap_paddr && si->memmap_entries;
}

/* [base, end) is RAM in the memory map, possibly over adjacent entries. */
bool memmap_covers(u64 base, u64 end) {
    const struct hvm_start_info *si = g_start_info;
    const struct hvm_memmap_entry *map = (const struct hvm_memmap_entry *)si->memmap_paddr;
    u64 cur = base;
    bool progress = true;
    while (cur < end && progress) {
        progress = false;
        for (u32 i = 0; i < si->memmap_entries; i++) {
            if (map[i].type == 1 && map[i].addr <= cur && cur < map[i].addr + map[i].size) {
                cur = map[i].addr + map[i].size;
                progress = true;
            }
        }
    }
    return cur >= end;
}
