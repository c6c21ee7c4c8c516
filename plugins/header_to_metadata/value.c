/* See value.h. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "herald/config.h"
#include "value.h"

int h2m_base64_decode(const char *in, size_t n, char **out, size_t *len)
{
    /* Envoy's decodeWithoutPadding: the standard alphabet only, and nothing
     * decoded is a failure too */
    *out = n ? herald_base64_decode(in, n, len, false) : NULL;
    if (*out && *len)
        return 0;
    free(*out);
    *out = NULL;
    return -1;
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
