/* Board layer: vector table, reset, SysTick, the two CMSDK UARTs and semihosting exit. */
#include "board.h"

#include <string.h>

#define REG(a) (*(volatile uint32_t *)(a))

/* CMSDK APB UART registers. */
#define UART0 0x40004000u
#define UART1 0x40005000u
#define U_DATA 0x00u
#define U_STATE 0x04u /* bit0 TX full, bit1 RX full */
#define U_CTRL 0x08u  /* bit0 TX enable, bit1 RX enable, bit3 RX interrupt enable */
#define U_INT 0x0Cu   /* read: status, write 1: clear; bit1 RX */
#define U_BAUDDIV 0x10u
#define ST_TXFULL 1u
#define ST_RXFULL 2u
#define ST_RXOVR 8u
#define CTRL_TX 1u
#define CTRL_RX 2u
#define CTRL_RXINT 8u
#define INT_RX 2u
#define UART1_RX_IRQ 2u

#define SYST_CSR 0xE000E010u
#define SYST_RVR 0xE000E014u
#define SYST_CVR 0xE000E018u
#define NVIC_ISER0 0xE000E100u
#define NVIC_ISPR0 0xE000E200u
#define CPU_HZ 25000000u
#define BAUD 115200u

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _stack_top;
int main(void);

static volatile uint32_t ticks;

/* Receive ring: the interrupt handler fills it, mod_getc empties it. When it is full the handler
   turns its own interrupt off and leaves the byte in the UART, so QEMU holds the rest of the line
   back (the CMSDK UART takes a byte only when its one-byte buffer is empty): nothing is lost. */
#ifndef RING
#define RING 4096u /* run.sh's FW_CFLAGS=-DRING=64 exercises the full-ring path */
#endif
static uint8_t ring[RING];
static volatile uint32_t ring_head, ring_tail;
static volatile uint32_t overruns;
static volatile uint32_t holds;

void reset_handler(void);
static void default_handler(void);
void systick_handler(void);
void uart1_rx_handler(void);

typedef void (*vector_t)(void);
__attribute__((section(".vectors"), used)) static const vector_t vectors[16 + 4] = {
    (vector_t)&_stack_top,
    reset_handler,
    default_handler, /* NMI */
    default_handler, /* HardFault */
    default_handler, /* MemManage */
    default_handler, /* BusFault */
    default_handler, /* UsageFault */
    0, 0, 0, 0,
    default_handler, /* SVCall */
    default_handler, /* DebugMon */
    0,
    default_handler, /* PendSV */
    systick_handler,
    default_handler, /* IRQ0 UART0 RX */
    default_handler, /* IRQ1 UART0 TX */
    uart1_rx_handler, /* IRQ2 UART1 RX */
    default_handler, /* IRQ3 UART1 TX */
};

void reset_handler(void)
{
    uint32_t *src = &_sidata;
    for (uint32_t *dst = &_sdata; dst < &_edata;)
        *dst++ = *src++;
    for (uint32_t *dst = &_sbss; dst < &_ebss;)
        *dst++ = 0;
    board_exit(main() == 0 ? 0 : 1);
}

/* A fault or an unexpected interrupt ends the run at once rather than hanging it. */
static void default_handler(void)
{
    con_puts("\r\nFAIL fault or unexpected interrupt; stopping\r\n");
    board_exit(1);
}

void systick_handler(void)
{
    ticks++;
}

void uart1_rx_handler(void)
{
    /* Clear first: a byte that arrives after the clear raises the interrupt again. */
    REG(UART1 + U_INT) = INT_RX;
    if (REG(UART1 + U_STATE) & ST_RXOVR) {
        overruns++;
        REG(UART1 + U_STATE) = ST_RXOVR;
    }
    while (REG(UART1 + U_STATE) & ST_RXFULL) {
        uint32_t next = (ring_head + 1) % RING;
        if (next == ring_tail) {
            holds++;
            REG(UART1 + U_CTRL) &= ~CTRL_RXINT;
            return;
        }
        ring[ring_head] = (uint8_t)REG(UART1 + U_DATA);
        ring_head = next;
    }
}

static void uart_init(uint32_t base, uint32_t ctrl)
{
    REG(base + U_BAUDDIV) = CPU_HZ / BAUD;
    REG(base + U_CTRL) = ctrl;
}

void board_init(void)
{
    REG(SYST_RVR) = CPU_HZ / 1000u - 1u;
    REG(SYST_CVR) = 0;
    REG(SYST_CSR) = 7u; /* enable, interrupt, CPU clock */
    uart_init(UART0, CTRL_TX | CTRL_RX);
    uart_init(UART1, CTRL_TX | CTRL_RX | CTRL_RXINT);
    REG(NVIC_ISER0) = 1u << UART1_RX_IRQ;
}

uint32_t millis(void)
{
    return ticks;
}

static void uart_putc(uint32_t base, uint8_t c)
{
    uint32_t start = ticks;
    while (REG(base + U_STATE) & ST_TXFULL)
        if (ticks - start > 1000u)
            return; /* a stuck line must not hang the firmware */
    REG(base + U_DATA) = c;
}

void con_putc(char c)
{
    uart_putc(UART0, (uint8_t)c);
}

void con_puts(const char *s)
{
    while (*s)
        con_putc(*s++);
}

void con_putu(uint32_t v)
{
    char buf[11];
    int i = 10;
    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    con_puts(&buf[i]);
}

void mod_write(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        uart_putc(UART1, p[i]);
}

int mod_getc(uint32_t timeout_ms)
{
    uint32_t start = ticks;
    for (;;) {
        if (ring_tail != ring_head) {
            uint8_t c = ring[ring_tail];
            ring_tail = (ring_tail + 1) % RING;
            if (!(REG(UART1 + U_CTRL) & CTRL_RXINT)) {
                /* Room again. The byte the handler left in the UART raised its interrupt
                   already and will not raise it again: pend the handler by hand. */
                REG(UART1 + U_CTRL) |= CTRL_RXINT;
                if (REG(UART1 + U_STATE) & ST_RXFULL)
                    REG(NVIC_ISPR0) = 1u << UART1_RX_IRQ;
            }
            return c;
        }
        if (ticks - start >= timeout_ms)
            return -1;
        __asm__ volatile("wfi");
    }
}

uint32_t mod_rx_overruns(void)
{
    return overruns;
}

uint32_t mod_rx_holds(void)
{
    return holds;
}

void board_exit(int status)
{
    /* SYS_EXIT with ADP_Stopped_ApplicationExit (QEMU exits 0) or RunTimeErrorUnknown (1). */
    register uint32_t r0 __asm__("r0") = 0x18u;
    register uint32_t r1 __asm__("r1") = status == 0 ? 0x20026u : 0x20023u;
    __asm__ volatile("bkpt 0xAB" : : "r"(r0), "r"(r1) : "memory");
    for (;;)
        __asm__ volatile("wfi");
}
