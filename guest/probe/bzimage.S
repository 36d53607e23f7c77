/* Probe guest as a Linux bzImage: the real-mode part of the file (boot
 * sector, setup header, a few instructions of real-mode setup). Linked only
 * into probe-bzimage.elf, at IMAGE_BASE - BZ_SETUP_SIZE (probe.ld), so that
 * `objcopy -O binary` produces the bzImage: these BZ_SETUP_SIZE bytes, then
 * the protected-mode image that loaders put at 1 MiB.
 *
 * Entry points (Documentation/arch/x86/boot.rst):
 *  - 64-bit protocol (popek): the loader enters linux64_entry at 1 MiB +
 *    0x200 in long mode, RSI = boot_params. Nothing here runs.
 *  - 32-bit protocol: linux32_entry at 1 MiB (code32_start), ESI =
 *    boot_params.
 *  - 16-bit protocol (QEMU -kernel, boot loaders that run the setup code):
 *    the loader copies these sectors to some segment, fills in the header
 *    and jumps to segment + 0x20 : 0. The setup below switches to protected
 *    mode with the probe's GDT and enters the 32-bit protocol with ESI = the
 *    setup's own base. That is not a full boot_params, only its header
 *    (offset 0x1f1 on): everything the real Linux setup would collect from
 *    the BIOS stays zero, as the boot sector below is zero. So the probe sees
 *    the command line and the initrd, no memory map (e820_entries, 0x1e8, is
 *    0) and no RSDP (acpi_rsdp_addr, 0x70, is 0: it searches the BIOS area). */
#include "layout.h"

#define BOOT_PROTOCOL 0x020c    /* 2.12: xloadflags (XLF_KERNEL_64) */
#define LOADED_HIGH 0x01        /* loadflags: protected-mode code at 1 MiB */
#define XLF_KERNEL_64 0x0001    /* xloadflags: 64-bit entry at +0x200 */
#define CMDLINE_SIZE 255        /* main.c copies at most 255 bytes */

        .section .bzsetup, "ax", @progbits
        .code16
setup_start:
        /* Boot sector: not bootable from a disk, and zero (see above). */
        .fill 0x1f1, 1, 0
        .byte BZ_SETUP_SECTS    /* 0x1f1 setup_sects */
        .word 0                 /* 0x1f2 root_flags */
        .long bz_syssize        /* 0x1f4 syssize: 16-byte units after the setup (probe.ld) */
        .word 0                 /* 0x1f8 ram_size (obsolete) */
        .word 0xffff            /* 0x1fa vid_mode: normal */
        .word 0                 /* 0x1fc root_dev */
        .word 0xaa55            /* 0x1fe boot_flag */
        /* 0x200: the 16-bit protocol's entry, a short jump over the header;
         * its target also marks the header's end for loaders. */
        .byte 0xeb, setup_code - 1f
1:      .ascii "HdrS"           /* 0x202 header */
        .word BOOT_PROTOCOL     /* 0x206 version */
        .long 0                 /* 0x208 realmode_swtch */
        .word 0x1000            /* 0x20c start_sys_seg (obsolete) */
        .word 0                 /* 0x20e kernel_version: no string */
        .byte 0                 /* 0x210 type_of_loader (the loader's) */
        .byte LOADED_HIGH       /* 0x211 loadflags */
        .word 0                 /* 0x212 setup_move_size */
        .long linux32_entry     /* 0x214 code32_start = IMAGE_BASE */
        .long 0                 /* 0x218 ramdisk_image (the loader's) */
        .long 0                 /* 0x21c ramdisk_size (the loader's) */
        .long 0                 /* 0x220 bootsect_kludge */
        .word 0                 /* 0x224 heap_end_ptr (the loader's) */
        .byte 0                 /* 0x226 ext_loader_ver */
        .byte 0                 /* 0x227 ext_loader_type */
        .long 0                 /* 0x228 cmd_line_ptr (the loader's) */
        .long 0x7fffffff        /* 0x22c initrd_addr_max: inside the probe's 4 GiB map */
        .long IMAGE_BASE        /* 0x230 kernel_alignment */
        .byte 0                 /* 0x234 relocatable_kernel: no, it runs at 1 MiB */
        .byte 20                /* 0x235 min_alignment: log2(1 MiB) */
        .word XLF_KERNEL_64     /* 0x236 xloadflags */
        .long CMDLINE_SIZE      /* 0x238 cmdline_size */
        .long 0                 /* 0x23c hardware_subarch: PC */
        .quad 0                 /* 0x240 hardware_subarch_data */
        .long 0                 /* 0x248 payload_offset: nothing compressed */
        .long 0                 /* 0x24c payload_length */
        .quad 0                 /* 0x250 setup_data (the loader's) */
        .quad IMAGE_BASE        /* 0x258 pref_address */
        .long bz_init_size      /* 0x260 init_size: image + .noinit + .bss (probe.ld) */
        .long 0                 /* 0x264 handover_offset: no EFI handover */
        .long 0                 /* 0x268 kernel_info_offset (2.15; unused at 2.12) */
        .if . - setup_start != 0x26c
        .error "setup header is not 0x7b bytes"
        .endif

/* The 16-bit protocol's entry: CS = setup segment + 0x20, IP = 0, DS = ES =
 * SS = setup segment. Into protected mode with the probe's GDT, then the
 * 32-bit protocol: flat segments, ESI = boot_params (here: this setup). */
setup_code:
        cli
        xor %esi, %esi
        mov %ds, %si
        shl $4, %esi
        lgdtl setup_gdtr - setup_start  /* DS-relative */
        mov %cr0, %eax
        or $1, %al              /* PE */
        mov %eax, %cr0
        mov $KERNEL_DS, %ax     /* flat: linux32_entry's lgdt reads memory */
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        ljmpl $KERNEL_CS32, $linux32_entry

        .balign 8
        .word 0
setup_gdtr:
        .word gdt_limit         /* boot.S */
        .long gdt

        .org BZ_SETUP_SIZE      /* errors if the setup outgrew its sectors */

        .section .note.GNU-stack, "", @progbits
