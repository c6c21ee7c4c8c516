/* The proxy_protocol listener filter's header parser (pp_parse.c) on byte
 * fixtures: v1 and v2 headers as HAProxy sends them, every prefix of each
 * (read more), TLVs, LOCAL / UNKNOWN / UNSPEC, and broken headers. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pp_parse.h"
#include "tap.h"

static const char *addr(const struct sockaddr_storage *ss, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)ss;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        snprintf(buf, len, "%s:%u", ip, ntohs(in->sin_port));
    } else {
        const struct sockaddr_in6 *in6 = (const void *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        snprintf(buf, len, "[%s]:%u", ip, ntohs(in6->sin6_port));
    }
    return buf;
}

/* every strict prefix asks for more; the whole parses as want */
static void prefixes_need_more(const uint8_t *h, size_t len, const char *name)
{
    struct pp_header hdr;
    size_t bad = 0;
    for (size_t i = 0; i < len; i++)
        if (pp_parse(h, i, 3, &hdr) != PP_MORE)
            bad++;
    is_int(bad, 0, "%s: each of its %zu prefixes asks for more", name, len);
}

static void test_v1(void)
{
    char b1[64], b2[64];
    struct pp_header h;
    const char *s = "PROXY TCP4 192.0.2.7 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";
    is_int(pp_parse((const uint8_t *)s, strlen(s), 3, &h), PP_DONE, "v1 TCP4 parses");
    is_int(h.version, 1, "v1: version");
    is_int(h.len, strlen("PROXY TCP4 192.0.2.7 198.51.100.2 56324 443\r\n"), "v1: the header's length only");
    ok(h.has_addresses, "v1: addresses");
    is_str(addr(&h.src, b1, sizeof(b1)), "192.0.2.7:56324", "v1: source");
    is_str(addr(&h.dst, b2, sizeof(b2)), "198.51.100.2:443", "v1: destination");
    prefixes_need_more((const uint8_t *)s, h.len, "v1 TCP4");

    s = "PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n";
    is_int(pp_parse((const uint8_t *)s, strlen(s), 3, &h), PP_DONE, "v1 TCP6 parses");
    is_str(addr(&h.src, b1, sizeof(b1)), "[2001:db8::1]:1", "v1 TCP6: source");
    is_str(addr(&h.dst, b2, sizeof(b2)), "[2001:db8::2]:65535", "v1 TCP6: destination");

    s = "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nrest";
    is_int(pp_parse((const uint8_t *)s, strlen(s), 3, &h), PP_DONE, "v1 UNKNOWN parses");
    ok(!h.has_addresses, "v1 UNKNOWN: the connection's own addresses stand");
    is_int(h.len, strlen("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), "v1 UNKNOWN: its line is consumed");

    static const char *const bad[] = {
        "PROXY TCP4 192.0.2.7 198.51.100.2 56324\r\n",         /* a field short */
        "PROXY TCP4 192.0.2.7 198.51.100.2 56324 443 9\r\n",   /* a field over */
        "PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",         /* v6 text in TCP4 */
        "PROXY TCP4 192.0.2.7 198.51.100.2 65536 443\r\n",     /* port too big */
        "PROXY TCP4 192.0.2.7 198.51.100.2 0443 443\r\n",      /* leading zero */
        "PROXY TCP4 192.0.2.7 198.51.100.2 -1 443\r\n",
        "PROXY UDP4 192.0.2.7 198.51.100.2 1 2\r\n",
        "PROXY TCP4  192.0.2.7 198.51.100.2 1 2\r\n",          /* two spaces */
        "PROXY TCP4 192.0.2.7 198.51.100.2 1 2\rX",            /* CR without LF */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        enum pp_result r = pp_parse((const uint8_t *)bad[i], strlen(bad[i]), 3, &h);
        ok(r == PP_ERROR && h.version == 1 && h.error, "v1 refused: %.*s", (int)strcspn(bad[i], "\r"), bad[i]);
    }
    char longline[200];
    memset(longline, '1', sizeof(longline));
    memcpy(longline, "PROXY TCP4 ", 11);
    is_int(pp_parse((const uint8_t *)longline, sizeof(longline), 3, &h), PP_ERROR,
           "v1 without CRLF in 107 bytes is refused, not waited for");
    is_int(pp_parse((const uint8_t *)longline, 100, 3, &h), PP_MORE, "... but 100 bytes of it may still end");
}

/* a v2 header: sig, ver/cmd, fam, addresses, TLVs */
static size_t v2(uint8_t *out, uint8_t cmd, uint8_t fam, const uint8_t *addrs, size_t alen, const uint8_t *tlvs,
                 size_t tlen)
{
    static const uint8_t sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
    memcpy(out, sig, 12);
    out[12] = (uint8_t)(0x20 | cmd);
    out[13] = fam;
    out[14] = (uint8_t)((alen + tlen) >> 8);
    out[15] = (uint8_t)(alen + tlen);
    if (alen)
        memcpy(out + 16, addrs, alen);
    if (tlen)
        memcpy(out + 16 + alen, tlvs, tlen);
    return 16 + alen + tlen;
}

static void test_v2(void)
{
    char b1[64], b2[64];
    struct pp_header h;
    uint8_t buf[512];
    const uint8_t a4[12] = {192, 0, 2, 7, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb};
    const uint8_t tlvs[] = {0x05, 0x00, 0x03, 'a', 'b', 'c', 0xee, 0x00, 0x00, 0x02, 0x00, 0x01, 'x'};
    size_t n = v2(buf, 1, 0x11, a4, sizeof(a4), tlvs, sizeof(tlvs));
    memcpy(buf + n, "GET", 3);
    is_int(pp_parse(buf, n + 3, 3, &h), PP_DONE, "v2 PROXY TCP4 with TLVs parses");
    is_int(h.version, 2, "v2: version");
    is_int(h.len, n, "v2: the header's length only");
    is_str(addr(&h.src, b1, sizeof(b1)), "192.0.2.7:56324", "v2: source");
    is_str(addr(&h.dst, b2, sizeof(b2)), "198.51.100.2:443", "v2: destination");
    is_int(h.ntlvs, 3, "v2: three TLVs");
    ok(h.tlvs[0].type == 0x05 && h.tlvs[0].len == 3 && memcmp(h.tlvs[0].value, "abc", 3) == 0, "v2: TLV 0x05 'abc'");
    ok(h.tlvs[1].type == 0xee && h.tlvs[1].len == 0, "v2: an empty TLV");
    ok(h.tlvs[2].type == 0x02 && h.tlvs[2].len == 1 && h.tlvs[2].value[0] == 'x', "v2: TLV 0x02 'x'");
    prefixes_need_more(buf, n, "v2 TCP4");

    uint8_t a6[36] = {0};
    a6[0] = 0x20, a6[1] = 0x01, a6[2] = 0x0d, a6[3] = 0xb8, a6[15] = 1;
    a6[16] = 0x20, a6[17] = 0x01, a6[18] = 0x0d, a6[19] = 0xb8, a6[31] = 2;
    a6[32] = 0x30, a6[33] = 0x39, a6[34] = 0x00, a6[35] = 0x50;
    n = v2(buf, 1, 0x21, a6, sizeof(a6), NULL, 0);
    is_int(pp_parse(buf, n, 3, &h), PP_DONE, "v2 TCP6 parses");
    is_str(addr(&h.src, b1, sizeof(b1)), "[2001:db8::1]:12345", "v2 TCP6: source");
    is_str(addr(&h.dst, b2, sizeof(b2)), "[2001:db8::2]:80", "v2 TCP6: destination");

    n = v2(buf, 0, 0x11, a4, sizeof(a4), tlvs, sizeof(tlvs));
    is_int(pp_parse(buf, n, 3, &h), PP_DONE, "v2 LOCAL parses");
    ok(!h.has_addresses && h.ntlvs == 0 && h.len == n, "v2 LOCAL: own addresses, TLVs skipped, all consumed");
    n = v2(buf, 1, 0x00, NULL, 0, tlvs, sizeof(tlvs));
    is_int(pp_parse(buf, n, 3, &h), PP_DONE, "v2 UNSPEC parses");
    ok(!h.has_addresses && h.ntlvs == 3, "v2 UNSPEC: own addresses, TLVs read");

    n = v2(buf, 1, 0x12, a4, sizeof(a4), NULL, 0);
    ok(pp_parse(buf, n, 3, &h) == PP_ERROR && h.version == 2, "v2 UDP is refused");
    n = v2(buf, 1, 0x31, a4, sizeof(a4), NULL, 0);
    is_int(pp_parse(buf, n, 3, &h), PP_ERROR, "v2 AF_UNIX is refused");
    n = v2(buf, 2, 0x11, a4, sizeof(a4), NULL, 0);
    is_int(pp_parse(buf, n, 3, &h), PP_ERROR, "v2 command 2 is refused");
    n = v2(buf, 1, 0x21, a4, sizeof(a4), NULL, 0);
    is_int(pp_parse(buf, n, 3, &h), PP_ERROR, "v2 TCP6 with 12 address bytes is refused");
    const uint8_t cut[] = {0x05, 0x00, 0x09, 'a'};
    n = v2(buf, 1, 0x11, a4, sizeof(a4), cut, sizeof(cut));
    is_int(pp_parse(buf, n, 3, &h), PP_ERROR, "v2 TLV longer than the header is refused");
    n = v2(buf, 1, 0x11, a4, sizeof(a4), NULL, 0);
    buf[14] = 0x40, buf[15] = 0x00;   /* a body of 16384 bytes: refused before it arrives */
    is_int(pp_parse(buf, 16, 3, &h), PP_ERROR, "v2 header over 16 KiB is refused at once");
    n = v2(buf, 1, 0x11, a4, sizeof(a4), NULL, 0);
    buf[12] = 0x11;
    is_int(pp_parse(buf, n, 3, &h), PP_ERROR, "v2 signature with version 1 is refused");
}

static void test_detection(void)
{
    struct pp_header h;
    is_int(pp_parse((const uint8_t *)"GET / HTTP/1.1\r\n", 16, 3, &h), PP_NOT_PROXY, "HTTP is not PROXY");
    is_int(pp_parse((const uint8_t *)"\x16\x03\x01", 3, 3, &h), PP_NOT_PROXY, "TLS is not PROXY");
    is_int(pp_parse((const uint8_t *)"PROX", 4, 3, &h), PP_MORE, "'PROX' may still be PROXY");
    is_int(pp_parse((const uint8_t *)"PROXZ", 5, 3, &h), PP_NOT_PROXY, "'PROXZ' is not");
    const char *s = "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
    is_int(pp_parse((const uint8_t *)s, strlen(s), 2, &h), PP_NOT_PROXY, "v1 when only v2 is looked for");
    uint8_t buf[64];
    const uint8_t a4[12] = {1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2};
    size_t n = v2(buf, 1, 0x11, a4, sizeof(a4), NULL, 0);
    is_int(pp_parse(buf, n, 1, &h), PP_NOT_PROXY, "v2 when only v1 is looked for");
}

int main(void)
{
    test_v1();
    test_v2();
    test_detection();
    return done_testing();
}
