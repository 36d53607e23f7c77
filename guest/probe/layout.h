/* Constants shared by the probe's assembly and C code. Plain #defines only:
 * this header is included from .S files too. */
#ifndef PROBE_LAYOUT_H
#define PROBE_LAYOUT_H

/* The image is linked and loaded at 1 MiB; everything below stays the VMM's
 * (popek keeps boot structures at 0x6000-0xbfff and the command line at
 * 0x20000, QEMU its option ROM data). probe.ld asserts the load address. */
#define IMAGE_BASE 0x100000

/* Entry points (boot.S). The PVH entry's address is in the ELF note; the
 * Linux ones are where the boot protocol puts them: the 32-bit entry at the
 * load address, the 64-bit one (startup_64) 0x200 above it. */
#define LINUX64_ENTRY_OFFSET 0x200

/* Ring 3's boot-data pointer has this bit set when it is a Linux struct
 * boot_params rather than a PVH struct hvm_start_info. */
#define BOOT_LINUX_TAG 1

/* bzImage (bzimage.S): the real-mode part is the boot sector plus
 * BZ_SETUP_SECTS sectors, linked right below IMAGE_BASE so that the file is
 * one contiguous `objcopy -O binary` image. */
#define BZ_SETUP_SECTS 1
#define BZ_SETUP_SIZE ((BZ_SETUP_SECTS + 1) * 512)

/* GDT selectors. The kernel code32 segment is only used by the real ->
 * protected mode jumps of the AP trampoline and the bzImage's setup. */
#define KERNEL_CS64 0x08
#define KERNEL_DS 0x10
#define USER_DS 0x1b  /* GDT index 3, RPL 3 */
#define USER_CS64 0x23  /* GDT index 4, RPL 3 */
#define KERNEL_CS32 0x28
#define TSS0_SEL 0x30   /* CPU i uses TSS0_SEL + 16 * i */

#define MAX_CPUS 32
#define KSTACK_SHIFT 12 /* 4 KiB ring-0 stack per CPU (trap frames only) */
#define USTACK_SHIFT 14 /* 16 KiB ring-3 stack per CPU */
#define TSS_STRIDE 128  /* TSSes are 104 bytes; 128 keeps 32 of them in a page */

/* Gate services (boot.S gate_entry, entered with int3): number in %eax,
 * arguments in %rdi, %rsi, result in %eax. Only what ring 3 cannot do
 * itself lives here. */
#define SYS_MMIO_READ32 1  /* eax = *(u32 *)rdi */
#define SYS_MMIO_WRITE32 2 /* *(u32 *)rdi = esi */
#define SYS_HALT 3         /* cli; hlt forever */
#define SYS_IRQ_ENABLE 4   /* RFLAGS.IF = 1 on return to ring 3 (ring 3 cannot sti) */

/* The one external interrupt vector with a handler (boot.S irq_entry: counts
 * in irq_count, EOIs the LAPIC). blk-msix points its MSI-X entry at it. The
 * IDT has IDT_VECTORS gates: the 32 exceptions, IRQ_VECTOR, nothing between. */
#define IRQ_VECTOR 0x41
#define IDT_VECTORS (IRQ_VECTOR + 1)
#define LAPIC_EOI 0xb0

/* Where the AP real-mode trampoline is copied (SIPI vector = addr >> 12).
 * Below 1 MiB, 4 KiB aligned, clear of popek's 0x6000-0xbfff boot data and
 * 0x20000 command line and of QEMU's low-memory use. */
#define TRAMPOLINE_ADDR 0x70000

#define LAPIC_BASE 0xfee00000

/* popek's ACPI Generic Event Device (src/arch/x86/layout.hpp, kGedStart):
 * a 32-bit event register at offset 0, read-to-clear; bit 0 is the power
 * button. tests/unit/ged_test.cpp checks these against popek's. */
#define GED_BASE 0xfea00000
#define GED_EVENT_POWER_BUTTON 0x1

/* I/O ports. */
#define PORT_COM1 0x3f8
#define PORT_POST 0x80
#define PORT_DEBUG_EXIT 0xf4

/* The deliberate page fault of the `fault` workload: PML4 slot 0xfe, never
 * mapped (only PML4[0] is present). */
#define FAULT_ADDR 0x7f0000000000

#endif
