/* Probe guest: shared C declarations. Freestanding; everything here runs in
 * ring 3 unless noted. */
#ifndef PROBE_H
#define PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "layout.h"

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;

/* struct hvm_start_info (Xen public/arch-x86/hvm/start_info.h). */
#define HVM_START_MAGIC 0x336ec578u
struct hvm_start_info {
    u32 magic;
    u32 version;
    u32 flags;
    u32 nr_modules;
    u64 modlist_paddr;
    u64 cmdline_paddr;
    u64 rsdp_paddr;
    u64 memmap_paddr;   /* version >= 1 */
    u32 memmap_entries; /* version >= 1 */
    u32 reserved;
};

struct hvm_memmap_entry {
    u64 addr;
    u64 size;
    u32 type; /* 1 = RAM */
    u32 reserved;
};

struct hvm_modlist_entry { /* the initrd is module 0 */
    u64 paddr;
    u64 size;
    u64 cmdline_paddr;
    u64 reserved;
};

/* Linux struct boot_params (arch/x86/include/uapi/asm/bootparam.h): the
 * offsets of the fields the probe reads. main.c converts them into an
 * hvm_start_info, so the workloads see one view of both protocols. */
#define BP_ACPI_RSDP_ADDR 0x070    /* u64 */
#define BP_EXT_RAMDISK_IMAGE 0x0c0 /* u32: bits 32-63 of ramdisk_image */
#define BP_EXT_RAMDISK_SIZE 0x0c4  /* u32 */
#define BP_EXT_CMD_LINE_PTR 0x0c8  /* u32 */
#define BP_E820_ENTRIES 0x1e8      /* u8 */
#define BP_RAMDISK_IMAGE 0x218     /* u32, setup header */
#define BP_RAMDISK_SIZE 0x21c      /* u32, setup header */
#define BP_CMD_LINE_PTR 0x228      /* u32, setup header */
#define BP_E820_TABLE 0x2d0        /* 20-byte entries: u64 addr, u64 size, u32 type */
#define BP_E820_MAX 128

/* What boot.S's trap_common pushes; trap_handler() gets a pointer to it. */
struct trap_frame {
    u64 r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
    u64 vector, error;
    u64 rip, cs, rflags, rsp, ss; /* pushed by the CPU */
};

/* ---- port I/O (allowed in ring 3 by the TSS I/O bitmap) ---- */
static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) {
    u8 v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline u64 rdtsc(void) {
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}

static inline void cpuid(u32 leaf, u32 sub, u32 r[4]) {
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }

/* ---- gate services (boot.S gate_entry) ---- */
static inline u32 syscall2(u32 nr, u64 a, u64 b) {
    u32 ret = nr;
    __asm__ volatile("int3" : "+a"(ret) : "D"(a), "S"(b) : "memory");
    return ret;
}
static inline u32 mmio_read32(u64 addr) { return syscall2(SYS_MMIO_READ32, addr, 0); }
static inline void mmio_write32(u64 addr, u32 v) { syscall2(SYS_MMIO_WRITE32, addr, v); }
static inline __attribute__((noreturn)) void sys_halt(void) {
    syscall2(SYS_HALT, 0, 0);
    __builtin_unreachable();
}

/* ---- lib.c: serial output, strings, misc ---- */
void put_char(char c);
void put_str(const char *s);
void put_dec(u64 v);
void put_hex(u64 v);      /* 0x-prefixed, no leading zeros */
void put_hex16(u64 v);    /* exactly 16 digits, no prefix */
void lock_output(void);   /* ring-3 spinlock around multi-CPU printing */
void unlock_output(void);
__attribute__((noreturn)) void probe_exit(u32 status);
__attribute__((noreturn)) void probe_error(const char *msg, const char *arg);
bool str_eq(const char *a, const char *b);
bool parse_u64(const char *s, u64 *out);
u64 tsc_hz(void);
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);

/* ---- workloads ---- */
extern const struct hvm_start_info *g_start_info;

struct acpi_header {
    char signature[4];
    u32 length;
    u8 revision, checksum;
    char oem_id[6], oem_table_id[8];
    u32 oem_revision, creator_id, creator_revision;
} __attribute__((packed));
/* The table with `signature` (e.g. "APIC", "FACP"); probe_error if absent. */
const struct acpi_header *acpi_find(const char *signature);
bool have_memmap(void);                 /* hvm_start_info carries a memory map */
bool memmap_covers(u64 base, u64 end);  /* [base, end) is RAM in it */
/* The same, but NULL when the table (or ACPI itself) is absent. */
const struct acpi_header *acpi_lookup(const char *signature);
void workload_pio_read(u64 n);
__attribute__((noreturn)) void workload_poweroff(void);
__attribute__((noreturn)) void workload_wait_power_button(void);
__attribute__((noreturn)) void workload_reset(void);
__attribute__((noreturn)) void workload_crash(void);
void workload_exits(u64 n);
__attribute__((noreturn)) void workload_dirty(u64 mib);
void workload_compute(u64 n);
__attribute__((noreturn)) void workload_pulse(u64 mib);
__attribute__((noreturn)) void workload_idle(u64 mib);
__attribute__((noreturn)) void workload_dirty_rate(u64 mib, u64 mibps, u64 tsc_khz);
void workload_fault(void);
void workload_smp(void);
void workload_initrd(void);
/* virtio workloads (virtio_*.c) */
void workload_blk_test(u64 rounds);
void workload_blk_bench(const char *mode, const char *count);
void workload_blk_hostile(const char *only_case);
void workload_blk_msix(u64 n);
void workload_rng_test(u64 n);
void workload_console_test(void);
void workload_net_test(u64 n);
__attribute__((noreturn)) void ap_main(u32 cpu);

/* ---- the deliberate page fault (workloads.c <-> trap.c, ring 0 writes) ---- */
struct fault_record {
    volatile u32 armed;   /* ring 3 sets before touching FAULT_ADDR */
    volatile u32 hit;     /* ring 0 sets when it caught it */
    volatile u64 error, cr2, rip;
};
extern struct fault_record g_fault;
void fault_touch(const volatile u8 *addr); /* boot.S */
extern char fault_touch_resume[];

/* ---- boot.S / linker symbols ---- */
extern char trampoline_start[], trampoline_end[];
extern volatile u32 next_cpu;
extern volatile u32 irq_count; /* IRQ_VECTOR interrupts so far (boot.S irq_entry) */
extern char __bss_start[], __bss_end[];
__attribute__((noreturn)) void halt_forever(void); /* ring 0 only */

#endif
