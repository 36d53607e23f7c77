/* Probe guest: ring-3 entry. Reads the command line from hvm_start_info and
 * runs the selected workload. */
#include "probe.h"

const struct hvm_start_info *g_start_info;

#define CMDLINE_MAX 256

void probe_main(const struct hvm_start_info *si, u64 cpu);

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

void probe_main(const struct hvm_start_info *si, u64 cpu) {
    if (cpu != 0) ap_main((u32)cpu); /* APs: SMP check-in only */

    /* The loader zero-fills .bss (fresh RAM in practice); clear it anyway so
     * nothing depends on that. Only the BSP, before any AP runs. */
    memset(__bss_start, 0, (size_t)(__bss_end - __bss_start));
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
    } else if (str_eq(workload, "fault")) {
        workload_fault();
    } else if (str_eq(workload, "smp")) {
        workload_smp();
    } else if (str_eq(workload, "pio-read")) {
        workload_pio_read(number_arg(workload, arg, 0, true));
    } else if (str_eq(workload, "poweroff")) {
        workload_poweroff();
    } else if (str_eq(workload, "reset")) {
        workload_reset();
    } else if (str_eq(workload, "crash")) {
        workload_crash();
    } else {
        probe_error("unknown workload", workload);
    }
    probe_exit(0);
}
