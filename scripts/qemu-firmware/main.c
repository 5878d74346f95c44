/* Application layer: what a firmware engineer would check with a module on UART1, one line per
   check on the console and "N passed, M failed" at the end. The servers' ports, the network and
   the certificates come from fw_config.h, which run.sh generates for each run (never committed). */
#include "board.h"
#include "eswifi.h"
#include "fw_config.h"

#include <string.h>

static int passed, failed;
static char ip[16];     /* D0's answer: where the servers are */
static char my_ip[16];  /* the module's own address, from the join reply */
static uint8_t out[1024], in[1024];

/* ---- console helpers ---------------------------------------------------------------------- */

/* Why a command failed, kept until the check's line is printed (the command runs before it). */
static char why_buf[320];
static size_t why_len;
static int capturing;

static void out_c(char c)
{
    if (!capturing)
        con_putc(c);
    else if (why_len + 1 < sizeof why_buf)
        why_buf[why_len++] = c;
}

static void out_s(const char *s)
{
    while (*s)
        out_c(*s++);
}

static void con_escaped(const uint8_t *b, size_t n, size_t max)
{
    out_c('"');
    for (size_t i = 0; i < n && i < max; i++) {
        uint8_t c = b[i];
        if (c == '\r')
            out_s("\\r");
        else if (c == '\n')
            out_s("\\n");
        else if (c < 0x20 || c >= 0x7f) {
            static const char hex[] = "0123456789abcdef";
            out_s("\\x");
            out_c(hex[c >> 4]);
            out_c(hex[c & 15]);
        } else
            out_c((char)c);
    }
    out_c('"');
    if (n > max)
        out_s("...");
}

static const char *status_name(enum es_status st)
{
    switch (st) {
    case ES_OK: return "OK";
    case ES_ERROR: return "ERROR";
    case ES_CLOSED: return "-1";
    case ES_TIMEOUT: return "timeout";
    default: return "overflow";
    }
}

/* Start a check's line; the caller adds details and ends it with done(). */
static void begin(int ok, const char *name)
{
    con_puts(ok ? "ok   " : "FAIL ");
    con_puts(name);
    con_puts(": ");
    if (ok)
        passed++;
    else
        failed++;
}

static void done(void)
{
    if (why_len) {
        con_puts(" [");
        for (size_t i = 0; i < why_len; i++)
            con_putc(why_buf[i]);
        con_puts("]");
        why_len = 0;
    }
    con_puts("\r\n");
}

/* A failed command: what it was and what came back, shown at the end of the check's line. */
static void why(const char *cmd, enum es_status st)
{
    capturing = 1;
    if (why_len)
        out_s("; ");
    out_s(cmd);
    out_s(" -> ");
    out_s(status_name(st));
    out_s(" ");
    con_escaped(es_reply, es_reply_len, 100);
    capturing = 0;
}

/* ---- command helpers ---------------------------------------------------------------------- */

static char cmdbuf[128];

/* "<prefix><value>" with at least `width` digits (ST pads S3 and PG lengths to 4). */
static const char *num_cmd(const char *prefix, uint32_t v, int width)
{
    char digits[11];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    while (n < width)
        digits[n++] = '0';
    size_t p = strlen(prefix);
    memcpy(cmdbuf, prefix, p);
    while (n)
        cmdbuf[p++] = digits[--n];
    cmdbuf[p] = 0;
    return cmdbuf;
}

static const char *str_cmd(const char *prefix, const char *arg)
{
    size_t p = strlen(prefix), a = strlen(arg);
    if (p + a + 1 > sizeof cmdbuf)
        a = sizeof cmdbuf - p - 1;
    memcpy(cmdbuf, prefix, p);
    memcpy(cmdbuf + p, arg, a);
    cmdbuf[p + a] = 0;
    return cmdbuf;
}

/* Run the commands in turn; on the first that does not answer OK, report it and return 0. */
static int all_ok(const char *const *cmds, uint32_t timeout_ms)
{
    for (; *cmds; cmds++) {
        enum es_status st = es_cmd(*cmds, timeout_ms);
        if (st != ES_OK) {
            why(*cmds, st);
            return 0;
        }
    }
    return 1;
}

/* S3 of n bytes; 1 when the module reports all n sent. */
static int send(const uint8_t *data, size_t n)
{
    const char *hdr = num_cmd("S3=", (uint32_t)n, 4);
    enum es_status st = es_cmd_payload(hdr, data, n, 5000);
    char want[8];
    size_t k = strlen(num_cmd("", (uint32_t)n, 0));
    memcpy(want, cmdbuf, k + 1);
    if (st != ES_OK || es_payload_len != k || memcmp(es_payload, want, k) != 0) {
        why("S3", st);
        return 0;
    }
    return 1;
}

static int payload_is(const char *s)
{
    size_t n = strlen(s);
    return es_payload_len == n && memcmp(es_payload, s, n) == 0;
}

static int is_dotted_quad(const uint8_t *b, size_t n)
{
    int dots = 0, digits = 0;
    if (n < 7 || n > 15)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (b[i] == '.') {
            if (!digits)
                return 0;
            dots++;
            digits = 0;
        } else if (b[i] >= '0' && b[i] <= '9' && digits < 3)
            digits++;
        else
            return 0;
    }
    return dots == 3 && digits > 0;
}

/* Open a client socket: P0, P1, P3 (the servers' address), P4, and P6=1. */
static int open_client(const char *sock, const char *proto, const char *port, const char *extra)
{
    char p0[8], p1[8], p3[24], p4[16];
    strcpy(p0, str_cmd("P0=", sock));
    strcpy(p1, str_cmd("P1=", proto));
    strcpy(p3, str_cmd("P3=", ip));
    strcpy(p4, str_cmd("P4=", port));
    const char *setup[] = {p0, p1, p3, p4, "R1=1460", "R2=50", extra, 0};
    if (!extra)
        setup[6] = 0;
    if (!all_ok(setup, 3000))
        return 0;
    enum es_status st = es_cmd("P6=1", 15000);
    if (st != ES_OK) {
        why("P6=1", st);
        return 0;
    }
    return 1;
}

/* ---- the checks --------------------------------------------------------------------------- */

static void check_identity(void)
{
    enum es_status st = es_cmd("I?", 3000);
    int ok = st == ES_OK && es_payload_len > 3 && memcmp(es_payload, "ISM", 3) == 0;
    begin(ok, "identity (I?)");
    if (ok)
        con_escaped(es_payload, es_payload_len, 120);
    else
        why("I?", st);
    done();
}

static void check_join(void)
{
    const char *cmds[] = {"C1=" SSID, "C2=" PASSPHRASE, "C3=" SECURITY, "C4=1", 0};
    int ok = all_ok(cmds, 3000); /* a failure is reported there */
    int c0_sent = ok;
    enum es_status st = ES_ERROR;
    if (ok) {
        st = es_cmd("C0", 15000);
        ok = st == ES_OK && es_payload_len > 10 && memcmp(es_payload, "[JOIN   ] ", 10) == 0;
    }
    /* "[JOIN   ] <ssid>,<ip>,0,0": the address is the second field. */
    const uint8_t *comma = ok ? memchr(es_payload, ',', es_payload_len) : 0;
    const uint8_t *end = comma ? memchr(comma + 1, ',', es_payload_len - (size_t)(comma + 1 - es_payload)) : 0;
    ok = ok && end && is_dotted_quad(comma + 1, (size_t)(end - comma - 1));
    if (ok) {
        memcpy(my_ip, comma + 1, (size_t)(end - comma - 1));
        my_ip[end - comma - 1] = 0;
    }
    begin(ok, "join (C1..C4, C0)");
    if (ok) {
        con_escaped(es_payload, es_payload_len, 80);
        con_puts(", the module's address ");
        con_puts(my_ip);
    } else if (c0_sent) {
        why("C0", st);
    }
    done();
}

static void check_dns(void)
{
    enum es_status st = es_cmd("D0=localhost", 5000);
    int ok = st == ES_OK && is_dotted_quad(es_payload, es_payload_len);
    if (ok) {
        memcpy(ip, es_payload, es_payload_len);
        ip[es_payload_len] = 0;
    }
    begin(ok, "DNS (D0=localhost)");
    if (ok)
        con_puts(ip);
    else
        why("D0=localhost", st);
    done();
}

static void check_tcp_echo(void)
{
    const size_t total = 1000, chunk = 250;
    for (size_t i = 0; i < total; i++)
        out[i] = (uint8_t)i; /* every byte value, 0x00-0xff, three times and more */
    memset(in, 0, sizeof in);
    int ok = open_client("0", "0", TCP_ECHO_PORT, "R1=300"); /* R1=300: the echo comes in chunks */
    for (size_t off = 0; ok && off < total; off += chunk)
        ok = send(out + off, chunk);
    size_t got = 0;
    int closed = 0;
    if (ok) {
        got = es_read(in, total, 5000, &closed);
        ok = got == total && memcmp(in, out, total) == 0;
    }
    begin(ok, "TCP echo");
    if (ok) {
        con_puts("1000 bytes holding every byte value, 4 x S3 of 250, read back with R0 (R1=300)");
    } else {
        con_puts("got ");
        con_putu((uint32_t)got);
        con_puts(" of 1000 bytes");
        con_puts(closed ? " (closed) " : " ");
        why("last", es_cmd("P?", 2000));
    }
    done();
    es_cmd("P0=0", 2000);
    es_cmd("P6=0", 3000);
}

static void check_udp_echo(void)
{
    const size_t n = 300;
    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)(255 - i);
    int ok = open_client("1", "1", UDP_ECHO_PORT, 0) && send(out, n);
    size_t got = 0;
    int closed = 0;
    if (ok) {
        got = es_read(in, n, 3000, &closed);
        ok = got == n && memcmp(in, out, n) == 0;
    }
    begin(ok, "UDP echo");
    if (ok) {
        con_puts("one datagram of 300 bytes (0xff down to 0xd4) and its echo");
    } else {
        con_puts("got ");
        con_putu((uint32_t)got);
        con_puts(" of 300 bytes");
    }
    done();
    es_cmd("P0=1", 2000);
    es_cmd("P6=0", 3000);
}

/* PG=1,<item>,<len> and the PEM text. */
static int program(int item, const char *pem)
{
    char prefix[8] = "PG=1,?,";
    prefix[5] = (char)('0' + item);
    const char *hdr = num_cmd(prefix, (uint32_t)strlen(pem), 4);
    enum es_status st = es_cmd_payload(hdr, (const uint8_t *)pem, strlen(pem), 5000);
    if (st != ES_OK) {
        why(item == 0 ? "PG (CA)" : item == 1 ? "PG (certificate)" : "PG (key)", st);
        return 0;
    }
    return 1;
}

static void check_program_set(void)
{
    const char *sel[] = {"P0=2", "PF=0,1", 0};
    /* A failed PF or PG is reported where it fails. */
    int ok = all_ok(sel, 3000) && program(0, CA_PEM) && program(1, CLIENT_CERT_PEM) &&
             program(2, CLIENT_KEY_PEM);
    int pe_sent = ok;
    enum es_status st = ES_OK;
    if (ok) {
        st = es_cmd("PE=1", 3000);
        ok = st == ES_OK && payload_is("0,0,0");
    }
    begin(ok, "certificate set 1 (PF=0,1, PG x3)");
    if (ok)
        con_puts("test CA, client certificate and key programmed; PE=1 -> 0,0,0 (all used)");
    else if (pe_sent)
        why("PE=1", st);
    done();
}

static void check_mtls_echo(void)
{
    const size_t n = 512;
    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)(i * 3);
    int ok = open_client("2", "3", MTLS_ECHO_PORT, "P9=2") && send(out, n);
    size_t got = 0;
    int closed = 0;
    if (ok) {
        got = es_read(in, n, 5000, &closed);
        ok = got == n && memcmp(in, out, n) == 0;
    }
    begin(ok, "mutual TLS echo (P1=3, P9=2)");
    if (ok) {
        con_puts("server verified against set 1's CA, client certificate presented; 512 bytes back");
    } else {
        con_puts("got ");
        con_putu((uint32_t)got);
        con_puts(" of 512 bytes");
    }
    done();
    es_cmd("P0=2", 2000);
    es_cmd("P6=0", 3000);
}

/* The module serves on socket 3; socket 1 asks the peers' call-back client to connect to it, send
   a line and read one back, and then to hang up: the module must see the peer close as -1. */
static void check_server_and_peer_close(void)
{
    static const char ping[] = "ping from the server's client\r\n";
    static const char pong[] = "pong\r\n";
    static const char reply[] = "REPLY pong\r\n";
    char p2[16];
    strcpy(p2, str_cmd("P2=", SERVER_PORT));
    const char *serve[] = {"P0=3", "P1=0", p2, "R1=1460", "R2=50", "P5=1", 0};
    es_clear_events();
    int ok = all_ok(serve, 3000);
    if (ok) {
        ok = open_client("1", "0", DIAL_PORT, 0);
        const char *req = "DIAL " SERVER_PORT " ping from the server's client\n";
        ok = ok && send((const uint8_t *)req, strlen(req));
    }
    ok = ok && es_wait_event("[TCP SVR] Accepted", 5000);
    begin(ok, "server accepts (P5=1)");
    if (ok)
        con_puts("\"[TCP SVR] Accepted ...\" came unasked, between replies");
    done();

    size_t got = 0;
    int closed = 0;
    int ok2 = ok && es_cmd("P0=3", 2000) == ES_OK;
    if (ok2) {
        got = es_read(in, strlen(ping), 5000, &closed);
        ok2 = got == strlen(ping) && memcmp(in, ping, got) == 0 &&
              send((const uint8_t *)pong, strlen(pong)) && es_cmd("P0=1", 2000) == ES_OK;
    }
    if (ok2) {
        got = es_read(in, strlen(reply), 5000, &closed);
        ok2 = got == strlen(reply) && memcmp(in, reply, got) == 0;
    }
    begin(ok2, "server exchange");
    if (ok2)
        con_puts("read the client's line with R0, answered with S3, the client got it");
    else {
        con_puts("got ");
        con_escaped(in, got, 60);
    }
    done();

    /* The call-back client hangs up once it has read the answer. */
    int ok3 = ok2 && es_cmd("P0=3", 2000) == ES_OK;
    uint8_t last[64];
    size_t last_len = 0;
    if (ok3) {
        got = es_read(in, sizeof in, 5000, &closed);
        last_len = es_reply_len < sizeof last ? es_reply_len : sizeof last;
        memcpy(last, es_reply, last_len);
        ok3 = closed && got == 0;
    }
    begin(ok3, "peer close seen as -1");
    if (ok3) {
        con_puts("R0 -> ");
        con_escaped(last, last_len, 64);
    } else {
        con_puts(closed ? "closed after " : "not closed; ");
        con_putu((uint32_t)got);
        con_puts(" more bytes");
    }
    done();
    es_cmd("P0=3", 2000);
    es_cmd("P5=0", 3000);
    es_cmd("P0=1", 2000);
    es_cmd("P6=0", 3000);
}

static void check_line(void)
{
    uint32_t o = mod_rx_overruns();
    begin(o == 0, "UART1 receive");
    con_putu(o);
    con_puts(" overruns (interrupt-driven receive into a ring buffer; the line held back ");
    con_putu(mod_rx_holds());
    con_puts(" times at a full ring)");
    done();
}

int main(void)
{
    board_init();
    uint32_t t0 = millis();
    con_puts("eS-WiFi host firmware on mps2-an385: console UART0, module UART1\r\n");

    int banner = 0;
    int attempts = es_sync(10, &banner);
    begin(attempts > 0, "prompt");
    if (attempts > 0) {
        con_puts(banner ? "boot banner seen; " : "no boot banner; ");
        con_puts("in step after ");
        con_putu((uint32_t)attempts);
        con_puts(" x I?");
    } else {
        con_puts("no prompt-terminated reply to I? in 10 tries");
    }
    done();
    if (attempts > 0) {
        check_identity();
        check_join();
        check_dns();
        if (ip[0]) {
            check_tcp_echo();
            check_udp_echo();
            check_program_set();
            check_mtls_echo();
            check_server_and_peer_close();
        }
        check_line();
    }
    con_puts("(");
    con_putu(millis() - t0);
    con_puts(" ms)\r\n");
    con_putu((uint32_t)passed);
    con_puts(" passed, ");
    con_putu((uint32_t)failed);
    con_puts(" failed\r\n");
    return failed == 0 && passed > 0 ? 0 : 1;
}
