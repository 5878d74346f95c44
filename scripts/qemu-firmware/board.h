/* The board layer of the firmware: QEMU's mps2-an385 (Cortex-M3, CMSDK APB UARTs, SysTick at the
   25 MHz CPU clock). UART0 is the console, UART1 the module's line. */
#ifndef BOARD_H
#define BOARD_H

#include <stddef.h>
#include <stdint.h>

void board_init(void);

/* Milliseconds since board_init (SysTick). */
uint32_t millis(void);

/* Console (UART0), polled. */
void con_putc(char c);
void con_puts(const char *s);
void con_putu(uint32_t v);

/* Module line (UART1): writes are polled, receive is interrupt-driven into a ring buffer. */
void mod_write(const uint8_t *p, size_t n);
/* The next received byte, or -1 when none arrived within timeout_ms. */
int mod_getc(uint32_t timeout_ms);
/* Receive overruns the UART reported (a byte lost because the last one was not read yet). */
uint32_t mod_rx_overruns(void);
/* Times the ring was full and the line was held back until the firmware read from it. */
uint32_t mod_rx_holds(void);

/* End the QEMU run through semihosting: status 0 or 1 becomes QEMU's exit status. */
void board_exit(int status) __attribute__((noreturn));

#endif
