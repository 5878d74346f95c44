@ A minimal STM32F405 firmware for QEMU's netduinoplus2 machine: it enables USART1 (wired to
@ eswifi-emu with -serial tcp:...) and USART2 (the console, -serial stdio), sends "I?\r" to the
@ module and copies every byte the module answers to the console. Assembled by run.sh.
.syntax unified
.cpu cortex-m4
.thumb
.section .vectors, "a"
.word 0x20001000
.word reset + 1
.text
.thumb_func
reset:
  ldr r0, =0x40011000
  ldr r4, =0x40004400
  ldr r1, =0x200C
  str r1, [r0, #0x0C]
  str r1, [r4, #0x0C]
  adr r2, msg
send:
  ldrb r3, [r2], #1
  cbz r3, recv
  str r3, [r0, #4]
  b send
recv:
  ldr r3, [r0, #0]
  tst r3, #0x20
  beq recv
  ldr r3, [r0, #4]
  str r3, [r4, #4]
  b recv
.align 2
msg: .asciz "I?\r"
.ltorg
