/* Probe guest: ring-3 entry. Reads the command line from hvm_start_info (or
 * Linux boot_params, converted to one) and runs the selected workload. */
#include "probe.h"

const struct hvm_start_info *g_start_info;

#define CMDLINE_MAX 256

void probe_main(u64 boot, u64 cpu);

/* ---- Linux boot protocols (the bzImage): boot_params -> hvm_start_info --
 * Done here in ring 3, where it is cheap, instead of in the boot path's
 * emulated ring 0. The result lives in .bss, so it is built after the
 * clear. */
static struct hvm_start_info linux_start_info;
static struct hvm_memmap_entry linux_memmap[BP_E820_MAX];
static struct hvm_modlist_entry linux_initrd;

static u32 bp_u32(const u8 *bp, u32 off) {
    u32 v;
    __builtin_memcpy(&v, bp + off, sizeof v);
    return v;
}

static u64 bp_u64(const u8 *bp, u32 off) {
    u64 v;
    __builtin_memcpy(&v, bp + off, sizeof v);
    return v;
}

static const struct hvm_start_info *from_boot_params(const u8 *bp) {
    struct hvm_start_info *si = &linux_start_info;
    si->magic = HVM_START_MAGIC;
    si->version = 1;
    si->cmdline_paddr = bp_u32(bp, BP_CMD_LINE_PTR) | (u64)bp_u32(bp, BP_EXT_CMD_LINE_PTR) << 32;
    si->rsdp_paddr = bp_u64(bp, BP_ACPI_RSDP_ADDR);

    u32 n = bp[BP_E820_ENTRIES];
    if (n > BP_E820_MAX) n = BP_E820_MAX;
    for (u32 i = 0; i < n; i++) {
        u32 e = BP_E820_TABLE + 20 * i;
        linux_memmap[i].addr = bp_u64(bp, e);
        linux_memmap[i].size = bp_u64(bp, e + 8);
        linux_memmap[i].type = bp_u32(bp, e + 16);
    }
    si->memmap_paddr = n ? (u64)linux_memmap : 0;
    si->memmap_entries = n;

    u64 size = bp_u32(bp, BP_RAMDISK_SIZE) | (u64)bp_u32(bp, BP_EXT_RAMDISK_SIZE) << 32;
    if (size) {
        linux_initrd.paddr = bp_u32(bp, BP_RAMDISK_IMAGE) | (u64)bp_u32(bp, BP_EXT_RAMDISK_IMAGE) << 32;
        linux_initrd.size = size;
        si->nr_modules = 1;
        si->modlist_paddr = (u64)&linux_initrd;
    }
    return si;
}

/* Splits off the next space-separated word in place; returns it or NULL. */
static char *next_word(char **cursor) {
    char *s = *cursor;
    while (*s == ' ' || *s == '\t' || *s == '\n') s++;
    if (!*s) return NULL;
    char *word = s;
    while (*s && *s != ' ' && *s != '\t' && *s != '\n') s++;
    if (*s) *s++ = 0;
    *cursor = s;
    return word;
}

static u64 number_arg(const char *workload, const char *arg, u64 fallback, bool required) {
    u64 v;
    if (!arg) {
        if (required) probe_error("missing argument for", workload);
        return fallback;
    }
    if (!parse_u64(arg, &v)) probe_error("bad number", arg);
    return v;
}

/* boot: the PVH hvm_start_info pointer, or the Linux boot_params pointer
 * | BOOT_LINUX_TAG (boot.S). */
void probe_main(u64 boot, u64 cpu) {
    if (cpu != 0) ap_main((u32)cpu); /* APs: SMP check-in only */

    /* The loader zero-fills .bss (fresh RAM in practice); clear it anyway so
     * nothing depends on that. Only the BSP, before any AP runs. */
    memset(__bss_start, 0, (size_t)(__bss_end - __bss_start));
    const struct hvm_start_info *si = (const struct hvm_start_info *)boot;
    if (boot & BOOT_LINUX_TAG) si = from_boot_params((const u8 *)(boot & ~(u64)BOOT_LINUX_TAG));
    g_start_info = si;

    /* Copy the command line out before anything can overwrite low memory
     * (the SMP trampoline goes below 1 MiB). */
    char cmdline[CMDLINE_MAX];
    cmdline[0] = 0;
    if (!si || si->magic != HVM_START_MAGIC) probe_error("bad hvm_start_info magic", NULL);
    if (si->cmdline_paddr) {
        const char *src = (const char *)si->cmdline_paddr;
        size_t i = 0;
        while (i < CMDLINE_MAX - 1 && src[i]) {
            cmdline[i] = src[i];
            i++;
        }
        cmdline[i] = 0;
    }

    char *cursor = cmdline;
    const char *workload = next_word(&cursor);
    const char *arg = next_word(&cursor);
    if (!workload) workload = "compute";

    put_str("PROBE-READY\n");

    if (str_eq(workload, "exits")) {
        workload_exits(number_arg(workload, arg, 0, true));
    } else if (str_eq(workload, "dirty")) {
        workload_dirty(number_arg(workload, arg, 0, true));
    } else if (str_eq(workload, "compute")) {
        workload_compute(number_arg(workload, arg, 1000, false));
    } else if (str_eq(workload, "idle")) {
        workload_idle(number_arg(workload, arg, 0, false));
    } else if (str_eq(workload, "dirty-rate")) {
        u64 mib = number_arg(workload, arg, 0, true);
        u64 mibps = number_arg(workload, next_word(&cursor), 0, true);
        workload_dirty_rate(mib, mibps, number_arg(workload, next_word(&cursor), 0, false));
    } else if (str_eq(workload, "pulse")) {
        workload_pulse(number_arg(workload, arg, 0, false));
    } else if (str_eq(workload, "fault")) {
        workload_fault();
    } else if (str_eq(workload, "smp")) {
        workload_smp();
    } else if (str_eq(workload, "initrd")) {
        workload_initrd();
    } else if (str_eq(workload, "pio-read")) {
        workload_pio_read(number_arg(workload, arg, 0, true));
    } else if (str_eq(workload, "poweroff")) {
        workload_poweroff();
    } else if (str_eq(workload, "wait-power-button")) {
        workload_wait_power_button();
    } else if (str_eq(workload, "reset")) {
        workload_reset();
    } else if (str_eq(workload, "crash")) {
        workload_crash();
    } else if (str_eq(workload, "blk-test")) {
        workload_blk_test(number_arg(workload, arg, 1, false));
    } else if (str_eq(workload, "blk-bench")) {
        workload_blk_bench(arg, next_word(&cursor));
    } else if (str_eq(workload, "blk-hostile")) {
        workload_blk_hostile(arg);
    } else if (str_eq(workload, "blk-msix")) {
        workload_blk_msix(number_arg(workload, arg, 0, true));
    } else if (str_eq(workload, "rng-test")) {
        workload_rng_test(number_arg(workload, arg, 0, true));
    } else if (str_eq(workload, "console-test")) {
        workload_console_test();
    } else if (str_eq(workload, "net-test")) {
        workload_net_test(number_arg(workload, arg, 0, true));
    } else {
        probe_error("unknown workload", workload);
    }
    probe_exit(0);
}
