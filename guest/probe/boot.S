/* Probe guest: ring-0 code. The entry points (PVH, and Linux's 32-bit and
 * 64-bit boot protocols for the bzImage), the AP trampoline, the exception
 * stubs, the int3 gate and blk-msix's interrupt handler.
 *
 * Ring 0 is expensive here (KVM-PVM emulates every guest ring-0 instruction,
 * ~0.8 us each), so ring 0 only switches to long mode with tables that are
 * already complete in the image (tables.inc) and drops to ring 3; all
 * workload code runs in ring 3. The BSP executes 40 ring-0 instructions from
 * the PVH entry to its first ring-3 instruction, 23 from the 64-bit Linux
 * entry, an AP 48 (6 of them in real mode).
 *
 * Ring 3 gets (boot data, cpu) in (rdi, rsi). The boot data is the
 * hvm_start_info pointer (PVH) or the boot_params pointer with bit 0 set
 * (BOOT_LINUX_TAG, Linux protocols; both structures are at least 4-byte
 * aligned); main.c turns boot_params into an hvm_start_info. */
#include "layout.h"

/* Absolute address of a label in .boot as an assembly-time constant. The
 * linker cannot split an address into descriptor fields (IDT gates and TSS
 * descriptors scatter the address bits), but gas can once the address is a
 * constant: .boot is placed first at IMAGE_BASE (probe.ld asserts it). */
#define PHYS(x) (IMAGE_BASE + ((x) - image_start))

/* PVH: XEN_ELFNOTE_PHYS32_ENTRY (type 18, owner "Xen") holds the 32-bit
 * entry point. 4-byte alignment matters: QEMU pads the name to p_align. */
        .section .note.Xen, "a", @note
        .balign 4
        .long 4, 4, 18
        .asciz "Xen"
        .long pvh_entry

        .section .boot, "awx", @progbits
image_start:

/* ---- 32-bit protected mode ------------------------------------------- */
        .code32
/* Linux 32-bit boot protocol, at the load address as Linux's startup_32 (the
 * bzImage's code32_start; its real-mode setup comes here too): paging off,
 * flat CS/DS from the loader's GDT, ESI = struct boot_params. */
        .globl linux32_entry
linux32_entry:
        lgdt gdtr
        lea BOOT_LINUX_TAG(%esi), %edi  /* probe_main(boot_params | tag, */
        xor %esi, %esi                  /*            cpu 0)             */
        jmp enter_long

/* PVH BSP: paging off, flat CS/DS from the VMM, EBX = struct hvm_start_info. */
        .globl pvh_entry
pvh_entry:
        lgdt gdtr
        mov %ebx, %edi          /* probe_main(start_info, */
        xor %esi, %esi          /*            cpu 0)      */
        jmp enter_long

/* APs come here from the trampoline, CS = KERNEL_CS32. DS/SS still hold
 * real-mode values, so nothing here may touch memory through them. */
ap_entry32:
        xor %edi, %edi
        mov $1, %esi            /* "an AP"; its index is taken in 64-bit mode */
enter_long:
        mov $0x20, %eax         /* CR4 = PAE. TSD/SMEP/SMAP stay clear: ring 3 */
        mov %eax, %cr4          /* uses rdtsc and owns every page */
        mov $pml4, %eax
        mov %eax, %cr3
        mov $0xc0000080, %ecx   /* EFER.LME */
        mov $0x100, %eax
        xor %edx, %edx
        wrmsr
        mov $0x80000011, %eax   /* PG|ET|PE; also clears an AP's reset CD/NW */
        mov %eax, %cr0
        ljmp $KERNEL_CS64, $entry64

/* ---- 64-bit mode ------------------------------------------------------ */
        .code64
entry64:
        mov %edi, %edi          /* upper halves are undefined after the switch */
        mov %esi, %esi
        mov $KERNEL_DS, %eax
        mov %eax, %ss
        mov %eax, %ds
        mov %eax, %es
        test %esi, %esi
        jz bsp64
        mov $1, %esi            /* AP: take the next CPU index */
        lock xadd %esi, next_cpu(%rip)
        cmp $MAX_CPUS, %esi
        jae halt_forever        /* no TSS/stack for it: park it */
bsp64:                          /* the 64-bit Linux entry joins here */
        lidt idtr(%rip)
        mov %esi, %eax
        shl $4, %eax
        add $TSS0_SEL, %eax
        ltr %ax
        /* iretq frame on this CPU's ring-0 stack (the TSS rsp0 value). */
        mov %rsi, %rax
        shl $KSTACK_SHIFT, %rax
        lea kstacks + (1 << KSTACK_SHIFT)(%rax), %rsp
        mov %rsi, %rax
        shl $USTACK_SHIFT, %rax
        lea ustacks + (1 << USTACK_SHIFT)(%rax), %rax
        push $USER_DS
        push %rax
        /* RFLAGS: IF=0, IOPL=0. Nothing here wants interrupts (under SeaBIOS
         * the PIT would land on exception vectors); port I/O is granted by
         * the TSS I/O bitmap instead of IOPL, which KVM-PVM ignores. */
        push $0x2
        push $USER_CS64
        push $user_entry
        iretq

/* ---- the gate: ring 3's way into ring 0 for the few things it cannot do.
 * `int3` through a DPL-3 gate on vector 3, with the service number in eax
 * and arguments in rdi/rsi. Not `int 0x80`: KVM-PVM raises #UD for any
 * `int n` from ring 3 but int3. Not `syscall`: KVM-PVM runs its handler as
 * PVM "supervisor mode", natively at hardware CPL 3, where cli/hlt fault.
 * Exceptions (and so int3) are delivered through the IDT into real,
 * emulated ring 0. Any other eax is reported as a stray #BP. */
gate_entry:
        cmp $SYS_MMIO_WRITE32, %eax
        jne 1f
        mov %esi, (%rdi)
        iretq
1:      cmp $SYS_MMIO_READ32, %eax
        jne 2f
        mov (%rdi), %eax
        iretq
2:      cmp $SYS_HALT, %eax
        je halt_forever
        cmp $SYS_IRQ_ENABLE, %eax
        jne 3f
        orl $0x200, 16(%rsp)    /* IF in the frame's RFLAGS (rip, cs, rflags) */
        iretq
3:      push $0
        push $3
        jmp trap_common

        .globl halt_forever
halt_forever:
        cli
1:      hlt
        jmp 1b

/* ---- Linux 64-bit boot protocol: a bzImage's startup_64 sits at load
 * address + 0x200. Long mode on the loader's identity page tables, CS/DS
 * from its GDT (0x10/0x18), interrupts off, RSI = struct boot_params.
 * Switch to the probe's own GDT and page tables (the loader's lack the U/S
 * bit ring 3 needs) and join the BSP path after the segment loads: the
 * loader's flat SS/DS/ES stay usable until the iretq to ring 3 replaces
 * them, and exceptions load CS from the IDT. CS keeps the loader's 0x10
 * until then; nothing reloads it. */
        .org image_start + LINUX64_ENTRY_OFFSET, 0xcc
        .code64
        .globl linux64_entry
linux64_entry:
        lgdt gdtr(%rip)
        mov $pml4, %eax
        mov %rax, %cr3
        lea BOOT_LINUX_TAG(%rsi), %edi  /* probe_main(boot_params | tag, */
        xor %esi, %esi                  /*            cpu 0)             */
        jmp bsp64

/* ---- exception stubs: exactly 16 bytes apart so the IDT can be static -- */
#define HAS_ERROR_CODE(v) ((v) == 8 || (v) == 10 || (v) == 11 || (v) == 12 || \
        (v) == 13 || (v) == 14 || (v) == 17 || (v) == 21 || (v) == 29 || (v) == 30)
        .balign 16
trap_stubs:
vec = 0
        .rept 32
        .if HAS_ERROR_CODE(vec) == 0
        push $0                 /* uniform frame: fake error code */
        .endif
        push $vec
        jmp trap_common
        .org trap_stubs + (vec + 1) * 16, 0xcc
vec = vec + 1
        .endr

/* Frame for trap_handler(): 15 GPRs, vector, error code, CPU frame (see
 * struct trap_frame in probe.h). */
trap_common:
        push %rax
        push %rbx
        push %rcx
        push %rdx
        push %rsi
        push %rdi
        push %rbp
        push %r8
        push %r9
        push %r10
        push %r11
        push %r12
        push %r13
        push %r14
        push %r15
        mov %rsp, %rdi
        cld
        call trap_handler       /* returns only to resume (deliberate fault) */
        pop %r15
        pop %r14
        pop %r13
        pop %r12
        pop %r11
        pop %r10
        pop %r9
        pop %r8
        pop %rbp
        pop %rdi
        pop %rsi
        pop %rdx
        pop %rcx
        pop %rbx
        pop %rax
        add $16, %rsp           /* vector, error code */
        iretq

/* ---- IRQ_VECTOR: the external interrupt blk-msix asks for. Three emulated
 * instructions: count, EOI (addr32: the LAPIC's address zero-extended, not
 * sign-extended), return. Only ring 3 with IF=1 gets here. */
irq_entry:
        incl irq_count(%rip)
        addr32 movl $0, LAPIC_BASE + LAPIC_EOI
        iretq

/* ---- AP trampoline: copied to TRAMPOLINE_ADDR by ring 3, entered by SIPI
 * in real mode with CS = TRAMPOLINE_ADDR >> 4, IP = 0. Position
 * independent: only offsets from trampoline_start and absolute targets. */
        .code16
        .balign 16
        .globl trampoline_start, trampoline_end
trampoline_start:
        cli
        lgdtl %cs:(tramp_gdtr - trampoline_start)
        mov %cr0, %eax
        or $1, %al              /* PE */
        mov %eax, %cr0
        ljmpl $KERNEL_CS32, $ap_entry32
        .balign 8
tramp_gdtr:
        .word gdt_end - gdt - 1
        .long gdt
trampoline_end:
        .code64

        .globl next_cpu
        .balign 4
next_cpu:
        .long 1                 /* the BSP is CPU 0 */
        .globl irq_count
irq_count:
        .long 0

#include "tables.inc"

/* ---- ring-3 code -------------------------------------------------------- */
        .text
user_entry:                     /* rdi = boot data (BSP) or 0, rsi = cpu */
        call probe_main
        ud2

/* The `fault` workload's deliberate access: the #PF handler checks the RIP
 * is fault_touch and resumes at fault_touch_resume. */
        .globl fault_touch, fault_touch_resume
fault_touch:
        movb (%rdi), %al
fault_touch_resume:
        ret

/* Per-CPU stacks: outside .bss (probe.ld puts them in .noinit), which ring 3
 * zeroes while running on one. */
        .section .stacks, "aw", @nobits
        .balign 4096
        .globl kstacks, ustacks
kstacks:
        .skip MAX_CPUS << KSTACK_SHIFT
ustacks:
        .skip MAX_CPUS << USTACK_SHIFT

        .section .note.GNU-stack, "", @progbits
