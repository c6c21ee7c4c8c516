/* The TLS ClientHello parser of the tls_inspector: pure (no I/O) and
 * bounds-checked at every step. The hello may come in several TCP segments
 * and several TLS records; the caller parses again over all bytes peeked so
 * far until it is complete, too large or malformed. */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "tls_inspector.h"

struct rd { const uint8_t *p; size_t n; };

static bool take(struct rd *r, size_t k, struct rd *out)
{
    if (r->n < k)
        return false;
    if (out)
        *out = (struct rd){r->p, k};
    r->p += k;
    r->n -= k;
    return true;
}

static bool u8(struct rd *r, unsigned *v)
{
    if (r->n < 1)
        return false;
    *v = r->p[0];
    take(r, 1, NULL);
    return true;
}

static bool u16(struct rd *r, unsigned *v)
{
    if (r->n < 2)
        return false;
    *v = (unsigned)r->p[0] << 8 | r->p[1];
    take(r, 2, NULL);
    return true;
}

static bool vec8(struct rd *r, struct rd *out)
{
    unsigned l;
    return u8(r, &l) && take(r, l, out);
}

static bool vec16(struct rd *r, struct rd *out)
{
    unsigned l;
    return u16(r, &l) && take(r, l, out);
}

static void parse_sni(struct rd ext, struct tls_hello *h)
{
    struct rd list, name;
    unsigned type;
    if (!vec16(&ext, &list))
        return;
    while (list.n) {
        if (!u8(&list, &type) || !vec16(&list, &name))
            return;
        if (type == 0 && name.n > 0 && name.n < sizeof(h->sni) && !memchr(name.p, 0, name.n)) {
            memcpy(h->sni, name.p, name.n);
            h->sni[name.n] = 0;
            h->has_sni = true;
            return;
        }
    }
}

static void parse_alpn(struct rd ext, struct tls_hello *h)
{
    struct rd list, proto;
    if (!vec16(&ext, &list))
        return;
    while (list.n && h->nalpn < TLS_HELLO_MAX_ALPN) {
        if (!vec8(&list, &proto))
            return;
        if (proto.n == 0 || memchr(proto.p, 0, proto.n))
            continue;
        memcpy(h->alpn[h->nalpn], proto.p, proto.n);
        h->alpn[h->nalpn][proto.n] = 0;
        h->nalpn++;
    }
}

static enum tls_parse parse_body(struct rd b, struct tls_hello *h)
{
    struct rd skip, exts, ext;
    unsigned ver, type;
    if (!u16(&b, &ver) || !take(&b, 32, NULL) || !vec8(&b, &skip) || !vec16(&b, &skip) || !vec8(&b, &skip))
        return TLS_PARSE_ERROR;
    h->legacy_version = ver;
    if (b.n == 0)
        return TLS_PARSE_DONE; /* no extensions (SSLv3-era hello) */
    if (!vec16(&b, &exts))
        return TLS_PARSE_ERROR;
    while (exts.n) {
        if (!u16(&exts, &type) || !vec16(&exts, &ext))
            return TLS_PARSE_ERROR;
        if (type == 0)
            parse_sni(ext, h);
        else if (type == 16)
            parse_alpn(ext, h);
    }
    return TLS_PARSE_DONE;
}

enum tls_parse tls_parse_client_hello(const uint8_t *data, size_t len, struct tls_hello *h)
{
    memset(h, 0, sizeof(*h));
    /* The handshake message may span several records: gather their payloads
     * (only as much as needed) into one buffer. */
    uint8_t msg[4 + MAX_MAX_READ];
    size_t have = 0, need = 4; /* the handshake header first, then its body */
    struct rd r = {data, len};
    while (have < need) {
        unsigned ctype, ver, rlen;
        if (r.n < 5) {
            if (r.n > 0 && r.p[0] != 22)
                return have ? TLS_PARSE_ERROR : TLS_PARSE_NOT_TLS;
            return TLS_PARSE_MORE;
        }
        u8(&r, &ctype);
        u16(&r, &ver);
        u16(&r, &rlen);
        /* a handshake record, version 3.x, a sane length */
        if (ctype != 22 || (ver >> 8) != 3 || rlen == 0 || rlen > 16384 + 2048)
            return have ? TLS_PARSE_ERROR : TLS_PARSE_NOT_TLS;
        struct rd rec;
        bool whole = take(&r, rlen, &rec);
        if (!whole)
            rec = r; /* a partial record: use what is there */
        size_t k = rec.n;
        if (k > need - have)
            k = need - have;
        if (have + k > sizeof(msg))
            return TLS_PARSE_TOO_LARGE;
        memcpy(msg + have, rec.p, k);
        have += k;
        if (need == 4 && have >= 4) {
            if (msg[0] != 1) /* not a ClientHello */
                return TLS_PARSE_ERROR;
            size_t body = (size_t)msg[1] << 16 | (size_t)msg[2] << 8 | msg[3];
            if (body > MAX_MAX_READ)
                return TLS_PARSE_TOO_LARGE;
            need = 4 + body;
            /* the rest of this record may hold more of the body */
            size_t more = rec.n - k;
            if (more > need - have)
                more = need - have;
            memcpy(msg + have, rec.p + k, more);
            have += more;
        }
        if (!whole && have < need)
            return TLS_PARSE_MORE;
    }
    return parse_body((struct rd){msg + 4, need - 4}, h);
}

