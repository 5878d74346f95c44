/* A minimal eS-WiFi host driver over the UART, in the style of the real ones (ST's es_wifi.c,
   Zephyr's eswifi): write a command ending in CR (and a payload), read up to the prompt "\r\n> ",
   and judge the reply by its status line. Asynchronous messages ("[TCP SVR] Accepted …") that come
   before a reply are kept aside, not taken for it. */
#ifndef ESWIFI_H
#define ESWIFI_H

#include <stddef.h>
#include <stdint.h>

enum es_status {
    ES_OK,      /* "\r\n<payload>\r\nOK\r\n> " */
    ES_ERROR,   /* ended with the prompt, but not OK */
    ES_CLOSED,  /* "\r\n-1\r\n…> ": the connection is gone */
    ES_TIMEOUT, /* no prompt in time */
    ES_OVERFLOW /* a reply longer than the buffer (the rest is discarded up to the prompt) */
};

#define ES_REPLY_MAX 2048

/* The last reply: all its bytes, and the payload between the leading CR LF and "\r\nOK\r\n> ". */
extern uint8_t es_reply[ES_REPLY_MAX];
extern size_t es_reply_len;
extern const uint8_t *es_payload;
extern size_t es_payload_len;

/* Send "<cmd>\r" and wait up to timeout_ms for the reply. */
enum es_status es_cmd(const char *cmd, uint32_t timeout_ms);
/* Send "<hdr>\r" and n bytes of payload (S3, PG), and wait for the reply. */
enum es_status es_cmd_payload(const char *hdr, const uint8_t *data, size_t n, uint32_t timeout_ms);

/* Bring the line in step: send I? until a whole reply ends with OK and the prompt and nothing
   follows it; boot banners or replies that were already on their way are read and dropped.
   Returns the number of attempts it took, 0 when it never did (bounded: attempts x 1 s). */
int es_sync(int attempts, int *saw_banner);

/* Wait up to timeout_ms for an asynchronous message containing `needle` (the ones that arrived
   already count); 1 when it came. */
int es_wait_event(const char *needle, uint32_t timeout_ms);
/* Forget the messages seen so far. */
void es_clear_events(void);

/* R0 until `want` bytes arrived (appended to buf), the socket closed, or timeout_ms passed.
   Returns the bytes read (more than `want` when R0 gave more; only `want` are stored); *closed
   is set when R0 answered -1. */
size_t es_read(uint8_t *buf, size_t want, uint32_t timeout_ms, int *closed);

#endif
