/* See value.h. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "value.h"

static int b64(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int h2m_base64_decode(const char *in, size_t n, char **out, size_t *len)
{
    /* at most two '=' at the end; without them the length tells the tail */
    if (n && in[n - 1] == '=')
        n--;
    if (n && in[n - 1] == '=')
        n--;
    if (n == 0 || n % 4 == 1)
        return -1;
    unsigned char *o = malloc(n / 4 * 3 + 3);
    if (!o)
        abort();
    size_t k = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64((unsigned char)in[i]);
        if (v < 0) {
            free(o);
            return -1;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[k++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) {                    /* a last character with bits that encode nothing */
        free(o);
        return -1;
    }
    o[k] = '\0';
    *out = (char *)o;
    *len = k;
    return 0;
}

static int varint(const unsigned char **p, const unsigned char *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        unsigned char b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return 0;
    }
    return -1;
}

int h2m_pb_value(const unsigned char *buf, size_t len, enum h2m_kind *kind, double *num, const char **str,
                 size_t *slen)
{
    const unsigned char *p = buf, *end = buf + len;
    *kind = H2M_NONE;
    while (p < end) {
        uint64_t tag, v;
        if (varint(&p, end, &tag) < 0 || (tag >> 3) == 0)
            return -1;
        unsigned field = (unsigned)(tag >> 3), wt = (unsigned)(tag & 7);
        switch (wt) {
        case 0:                        /* varint: null_value (1), bool_value (4) */
            if (varint(&p, end, &v) < 0)
                return -1;
            if (field == 1)
                *kind = H2M_NULL;
            else if (field == 4) {
                *kind = H2M_BOOL;
                *num = v != 0;
            }
            break;
        case 1: {                      /* fixed64: number_value (2) */
            if (end - p < 8)
                return -1;
            uint64_t bitsv = 0;
            for (int i = 7; i >= 0; i--)
                bitsv = (bitsv << 8) | p[i];
            p += 8;
            if (field == 2) {
                double d;
                memcpy(&d, &bitsv, sizeof(d));
                *kind = H2M_NUMBER;
                *num = d;
            }
            break;
        }
        case 2:                        /* length-delimited: string (3), struct (5), list (6) */
            if (varint(&p, end, &v) < 0 || v > (uint64_t)(end - p))
                return -1;
            if (field == 3) {
                *kind = H2M_STRING;
                *str = (const char *)p;
                *slen = (size_t)v;
            } else if (field == 5) {
                *kind = H2M_STRUCT;
            } else if (field == 6) {
                *kind = H2M_LIST;
            }
            p += v;
            break;
        case 5:                        /* fixed32: no field of Value, skipped */
            if (end - p < 4)
                return -1;
            p += 4;
            break;
        default:                       /* groups and reserved wire types */
            return -1;
        }
    }
    return 0;
}
