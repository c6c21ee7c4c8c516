/* PROXY protocol v1 and v2 headers (see pp_parse.h). */
#include <arpa/inet.h>
#include <string.h>

#include "pp_parse.h"

static const uint8_t v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
static const char v1_sig[6] = {'P', 'R', 'O', 'X', 'Y', ' '};

static enum pp_result fail(struct pp_header *h, const char *why)
{
    h->error = why;
    return PP_ERROR;
}

/* A prefix of sig (n bytes of it seen): true while data could still be it. */
static bool prefix_of(const uint8_t *data, size_t len, const void *sig, size_t n)
{
    return memcmp(data, sig, len < n ? len : n) == 0;
}

/* "a.b.c.d" or an IPv6 text, and a port of 1-5 digits without a sign or leading zeros */
static bool v1_address(const char *ip, const char *port, bool v6, struct sockaddr_storage *ss, socklen_t *slen)
{
    size_t pl = strlen(port);
    if (pl == 0 || pl > 5 || (pl > 1 && port[0] == '0'))
        return false;
    unsigned long p = 0;
    for (size_t i = 0; i < pl; i++) {
        if (port[i] < '0' || port[i] > '9')
            return false;
        p = p * 10 + (unsigned long)(port[i] - '0');
    }
    if (p > 65535)
        return false;
    memset(ss, 0, sizeof(*ss));
    if (!v6) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)p);
        *slen = sizeof(*in);
        return inet_pton(AF_INET, ip, &in->sin_addr) == 1;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)p);
    *slen = sizeof(*in6);
    return inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1;
}

static enum pp_result parse_v1(const uint8_t *data, size_t len, struct pp_header *h)
{
    const uint8_t *cr = memchr(data, '\r', len < PP_V1_MAX ? len : PP_V1_MAX);
    if (!cr)
        return len >= PP_V1_MAX ? fail(h, "a v1 header without CRLF in its first 107 bytes") : PP_MORE;
    size_t line = (size_t)(cr - data);
    if (line + 1 >= len)
        return PP_MORE;
    if (cr[1] != '\n')
        return fail(h, "a v1 header's CR not followed by LF");
    h->len = line + 2;
    char buf[PP_V1_MAX + 1];
    memcpy(buf, data, line);
    buf[line] = '\0';
    if (memchr(data, '\0', line))
        return fail(h, "a NUL byte in a v1 header");
    /* PROXY <proto> <src> <dst> <sport> <dport>, single spaces */
    char *f[7];
    size_t nf = 0;
    for (char *p = buf, *tok; nf < 7 && (tok = strsep(&p, " ")); )
        f[nf++] = tok;
    if (nf >= 2 && strcmp(f[1], "UNKNOWN") == 0) {
        h->has_addresses = false;   /* the rest of the line is ignored, as the spec says */
        return PP_DONE;
    }
    if (nf != 6 || strchr(f[5], ' '))
        return fail(h, "a v1 header needs PROXY TCP4|TCP6 src dst sport dport");
    bool v6;
    if (strcmp(f[1], "TCP4") == 0)
        v6 = false;
    else if (strcmp(f[1], "TCP6") == 0)
        v6 = true;
    else
        return fail(h, "a v1 header's protocol is not TCP4, TCP6 or UNKNOWN");
    if (!v1_address(f[2], f[4], v6, &h->src, &h->src_len) || !v1_address(f[3], f[5], v6, &h->dst, &h->dst_len))
        return fail(h, "a v1 header's address or port does not parse");
    h->has_addresses = true;
    return PP_DONE;
}

static enum pp_result parse_v2(const uint8_t *data, size_t len, struct pp_header *h)
{
    if (len < 16)
        return PP_MORE;
    uint8_t ver_cmd = data[12], fam = data[13];
    size_t body = ((size_t)data[14] << 8) | data[15];
    if ((ver_cmd >> 4) != 2)
        return fail(h, "a v2 header with a version other than 2");
    if (16 + body > PP_V2_MAX)
        return fail(h, "a v2 header larger than 16 KiB");
    if (len < 16 + body)
        return PP_MORE;
    h->len = 16 + body;
    const uint8_t *p = data + 16, *end = data + 16 + body;
    uint8_t cmd = ver_cmd & 0x0f;
    if (cmd == 0x0) {            /* LOCAL: the connection's own addresses stand; TLVs ignored */
        h->has_addresses = false;
        return PP_DONE;
    }
    if (cmd != 0x1)
        return fail(h, "a v2 header's command is neither LOCAL nor PROXY");
    size_t alen;
    switch (fam) {
    case 0x00: alen = 0; break;                         /* UNSPEC */
    case 0x11: alen = 12; break;                        /* TCP over IPv4 */
    case 0x21: alen = 36; break;                        /* TCP over IPv6 */
    default: return fail(h, "a v2 header's family is not TCP over IPv4 or IPv6 (UDP, UNIX: not supported)");
    }
    if (body < alen)
        return fail(h, "a v2 header shorter than its addresses");
    memset(&h->src, 0, sizeof(h->src));
    memset(&h->dst, 0, sizeof(h->dst));
    if (fam == 0x11) {
        struct sockaddr_in *s = (struct sockaddr_in *)&h->src, *d = (struct sockaddr_in *)&h->dst;
        s->sin_family = d->sin_family = AF_INET;
        memcpy(&s->sin_addr, p, 4);
        memcpy(&d->sin_addr, p + 4, 4);
        memcpy(&s->sin_port, p + 8, 2);
        memcpy(&d->sin_port, p + 10, 2);
        h->src_len = h->dst_len = sizeof(struct sockaddr_in);
    } else if (fam == 0x21) {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&h->src, *d = (struct sockaddr_in6 *)&h->dst;
        s->sin6_family = d->sin6_family = AF_INET6;
        memcpy(&s->sin6_addr, p, 16);
        memcpy(&d->sin6_addr, p + 16, 16);
        memcpy(&s->sin6_port, p + 32, 2);
        memcpy(&d->sin6_port, p + 34, 2);
        h->src_len = h->dst_len = sizeof(struct sockaddr_in6);
    }
    h->has_addresses = alen > 0;
    p += alen;
    while (p < end) {
        if (end - p < 3)
            return fail(h, "a v2 TLV cut short");
        size_t tl = ((size_t)p[1] << 8) | p[2];
        if ((size_t)(end - p - 3) < tl)
            return fail(h, "a v2 TLV longer than the header");
        if (h->ntlvs == sizeof(h->tlvs) / sizeof(h->tlvs[0]))
            return fail(h, "more than 64 TLVs in a v2 header");
        h->tlvs[h->ntlvs++] = (struct pp_tlv_ref){.type = p[0], .len = (uint16_t)tl, .value = p + 3};
        p += 3 + tl;
    }
    return PP_DONE;
}

enum pp_result pp_parse(const uint8_t *data, size_t len, unsigned which, struct pp_header *h)
{
    memset(h, 0, sizeof(*h));
    if (len == 0)
        return PP_MORE;
    if ((which & 2) && prefix_of(data, len, v2_sig, sizeof(v2_sig))) {
        if (len < sizeof(v2_sig))
            return PP_MORE;
        h->version = 2;
        return parse_v2(data, len, h);
    }
    if ((which & 1) && prefix_of(data, len, v1_sig, sizeof(v1_sig))) {
        if (len < sizeof(v1_sig))
            return PP_MORE;
        h->version = 1;
        return parse_v1(data, len, h);
    }
    return PP_NOT_PROXY;
}
