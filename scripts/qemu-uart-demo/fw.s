@ A minimal STM32F405 firmware for QEMU's netduinoplus2 machine: it enables USART1 (wired to
@ eswifi-emu with -serial tcp:...) and USART2 (the console, -serial stdio), sends "I?\r" to the
@ module, copies every byte the module answers to the console, and once the reply's prompt
@ "\r\n> " has come ends QEMU with a semihosting exit (status 0). Assembled by run.sh.
.syntax unified
.cpu cortex-m4
.thumb
.section .vectors, "a"
.word 0x20001000
.word reset + 1
.text
.global reset             @ the ELF entry point (fw.ld's ENTRY)
.thumb_func
reset:
  ldr r0, =0x40011000     @ USART1: the module
  ldr r4, =0x40004400     @ USART2: the console
  ldr r1, =0x200C         @ CR1: UE, TE, RE
  str r1, [r0, #0x0C]
  str r1, [r4, #0x0C]
  movs r5, #0             @ the last four bytes received
  ldr r6, =0x0D0A3E20     @ "\r\n> ", the prompt that ends a reply
  adr r2, msg
send:
  ldrb r3, [r2], #1
  cbz r3, recv
  str r3, [r0, #4]
  b send
recv:
  ldr r3, [r0, #0]        @ SR: wait for RXNE
  tst r3, #0x20
  beq recv
  ldr r3, [r0, #4]
  str r3, [r4, #4]
  and r3, r3, #0xFF
  orr r5, r3, r5, lsl #8
  cmp r5, r6
  bne recv
wait_tx:
  ldr r3, [r4, #0]        @ SR: the console's last byte out (TC)
  tst r3, #0x40
  beq wait_tx
  movs r0, #0x18          @ semihosting SYS_EXIT,
  ldr r1, =0x20026        @ ADP_Stopped_ApplicationExit: QEMU exits with status 0
  bkpt 0xab
  b .
.align 2
msg: .asciz "I?\r"
.ltorg
