/* Driver layer: the eS-WiFi UART protocol on top of the board's module line. */
#include "eswifi.h"

#include "board.h"

#include <string.h>

uint8_t es_reply[ES_REPLY_MAX];
size_t es_reply_len;
const uint8_t *es_payload;
size_t es_payload_len;

static const uint8_t PROMPT[] = "\r\n> ";
static const uint8_t OK_TAIL[] = "\r\nOK\r\n> ";

/* Asynchronous messages seen while waiting for replies (text only, newest last; bounded). */
static char events[512];
static size_t events_len;

/* A byte read while checking that the line is quiet, handed to the next reply. */
static int pushback = -1;

static int next_byte(uint32_t deadline)
{
    if (pushback >= 0) {
        int c = pushback;
        pushback = -1;
        return c;
    }
    uint32_t now = millis();
    return mod_getc((int32_t)(deadline - now) > 0 ? deadline - now : 0);
}

static int ends_with(const uint8_t *b, size_t n, const uint8_t *tail, size_t t)
{
    return n >= t && memcmp(b + n - t, tail, t) == 0;
}

static int starts_with(const uint8_t *b, size_t n, const char *head)
{
    size_t h = strlen(head);
    return n >= h && memcmp(b, head, h) == 0;
}

/* Read one prompt-terminated frame into es_reply. */
static enum es_status read_frame(uint32_t deadline)
{
    size_t n = 0;
    int overflow = 0;
    uint8_t last4[4] = {0, 0, 0, 0};
    size_t seen = 0;
    for (;;) {
        int c = next_byte(deadline);
        if (c < 0) {
            es_reply_len = n;
            return ES_TIMEOUT;
        }
        if (n < ES_REPLY_MAX)
            es_reply[n++] = (uint8_t)c;
        else
            overflow = 1;
        memmove(last4, last4 + 1, 3);
        last4[3] = (uint8_t)c;
        seen++;
        if (seen >= 4 && memcmp(last4, PROMPT, 4) == 0)
            break;
    }
    es_reply_len = n;
    return overflow ? ES_OVERFLOW : ES_OK;
}

static int is_event(void)
{
    return !ends_with(es_reply, es_reply_len, OK_TAIL, 8) &&
           (starts_with(es_reply, es_reply_len, "\r\n[TCP SVR]") ||
            starts_with(es_reply, es_reply_len, "\r\n[UDP SVR]") ||
            starts_with(es_reply, es_reply_len, "\r\n[AP DHCP]"));
}

static void keep_event(void)
{
    size_t n = es_reply_len - 4 - 2; /* without the leading CR LF and the prompt */
    if (events_len + n + 1 >= sizeof events) {
        events_len = 0; /* bounded: the oldest go */
    }
    if (n + 1 < sizeof events) {
        memcpy(events + events_len, es_reply + 2, n);
        events_len += n;
        events[events_len++] = '\n';
        events[events_len] = 0;
    }
}

/* The reply to a command: the next frame that is not an asynchronous message. */
static enum es_status read_reply(uint32_t timeout_ms)
{
    uint32_t deadline = millis() + timeout_ms;
    for (;;) {
        es_payload = es_reply;
        es_payload_len = 0;
        enum es_status st = read_frame(deadline);
        if (st != ES_OK)
            return st;
        if (is_event()) {
            keep_event();
            continue;
        }
        if (ends_with(es_reply, es_reply_len, OK_TAIL, 8)) {
            size_t start = starts_with(es_reply, es_reply_len, "\r\n") ? 2 : 0;
            es_payload = es_reply + start;
            es_payload_len = es_reply_len >= start + 8 ? es_reply_len - start - 8 : 0;
            return ES_OK;
        }
        if (starts_with(es_reply, es_reply_len, "\r\n-1\r\n"))
            return ES_CLOSED;
        return ES_ERROR;
    }
}

enum es_status es_cmd_payload(const char *hdr, const uint8_t *data, size_t n, uint32_t timeout_ms)
{
    mod_write((const uint8_t *)hdr, strlen(hdr));
    mod_write((const uint8_t *)"\r", 1);
    if (n)
        mod_write(data, n);
    return read_reply(timeout_ms);
}

enum es_status es_cmd(const char *cmd, uint32_t timeout_ms)
{
    return es_cmd_payload(cmd, 0, 0, timeout_ms);
}

int es_sync(int attempts, int *saw_banner)
{
    *saw_banner = 0;
    /* A module that just booted prints its banner and a prompt without being asked. */
    if (read_frame(millis() + 500) == ES_OK)
        *saw_banner = 1;
    for (int a = 1; a <= attempts; a++) {
        mod_write((const uint8_t *)"I?\r", 3);
        uint32_t deadline = millis() + 1000;
        for (;;) {
            enum es_status st = read_frame(deadline);
            if (st == ES_TIMEOUT)
                break;
            if (st != ES_OK || !ends_with(es_reply, es_reply_len, OK_TAIL, 8)) {
                *saw_banner |= !is_event();
                continue;
            }
            /* A whole OK reply: in step if nothing else is on its way. */
            int c = mod_getc(100);
            if (c < 0)
                return a;
            pushback = c;
        }
    }
    return 0;
}

int es_wait_event(const char *needle, uint32_t timeout_ms)
{
    uint32_t deadline = millis() + timeout_ms;
    while (!strstr(events, needle)) {
        if ((int32_t)(deadline - millis()) <= 0)
            return 0;
        if (read_frame(deadline) == ES_OK && is_event())
            keep_event();
    }
    return 1;
}

void es_clear_events(void)
{
    events_len = 0;
    events[0] = 0;
}

size_t es_read(uint8_t *buf, size_t want, uint32_t timeout_ms, int *closed)
{
    size_t got = 0;
    uint32_t deadline = millis() + timeout_ms;
    *closed = 0;
    while (got < want && (int32_t)(deadline - millis()) > 0) {
        enum es_status st = es_cmd("R0", 2000);
        if (st == ES_CLOSED) {
            *closed = 1;
            break;
        }
        if (st != ES_OK)
            break;
        size_t n = es_payload_len;
        if (n > want - got) /* more than asked for: counted, not stored */
            memcpy(buf + got, es_payload, want - got);
        else
            memcpy(buf + got, es_payload, n);
        got += n;
    }
    return got;
}
