/* libFuzzer target for redis_proxy's RESP2 decoder (codec.c). Byte 0: bit 0
 * picks the limits (requests, with inline commands; or replies), bits 1-7 the
 * step in which the bytes "arrive". Each decoded value must re-encode to
 * bytes that decode, whole, to a value that re-encodes the same; a decoder
 * never takes more bytes than it was given, and once dead stays dead. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct out {
    uint8_t *p;
    size_t len, cap;
};

static void out_write(void *arg, const void *p, size_t n)
{
    struct out *o = arg;
    if (o->len + n > o->cap) {
        o->cap = (o->len + n) * 2;
        o->p = realloc(o->p, o->cap);
        if (!o->p)
            abort();
    }
    memcpy(o->p + o->len, p, n);
    o->len += n;
}

static void round_trip(const struct resp_limits *lim, const struct resp_value *v)
{
    struct out a = {0}, b = {0};
    struct resp_decoder d;
    struct resp_limits l2 = *lim;
    size_t used;
    struct resp_value *again;

    resp_encode(v, out_write, &a);
    l2.inline_commands = false;   /* an inline command re-encodes as an array */
    l2.max_mem = (size_t)-1 / 2;  /* the copy may count a little differently */
    if (resp_decoder_init(&d, &l2) < 0)
        abort();
    if (resp_decode(&d, a.p, a.len, &used, &again) != RESP_DONE || used != a.len)
        __builtin_trap();
    resp_encode(again, out_write, &b);
    if (a.len != b.len || memcmp(a.p, b.p, a.len) != 0)
        __builtin_trap();
    resp_value_free(again);
    resp_decoder_fini(&d);
    free(a.p);
    free(b.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct resp_limits lim;
    struct resp_decoder d;

    if (size < 1)
        return 0;
    if (data[0] & 1)
        resp_limits_reply(&lim);
    else
        resp_limits_request(&lim);
    lim.max_mem = 1u << 20;   /* keep the fuzzer's memory small; the limit is what is tested */
    size_t step = (size_t)(data[0] >> 1) + 1;
    data++;
    size--;
    if (resp_decoder_init(&d, &lim) < 0)
        abort();
    bool dead = false;
    for (size_t pos = 0; pos < size && !dead;) {
        size_t have = size - pos < step ? size - pos : step;
        /* a copy of exactly the bytes that "arrived": a read past them is caught by ASan */
        uint8_t *buf = malloc(have);
        if (!buf)
            abort();
        memcpy(buf, data + pos, have);
        size_t off = 0;
        while (off < have) {
            size_t used;
            struct resp_value *v;
            enum resp_result r = resp_decode(&d, buf + off, have - off, &used, &v);
            if (used > have - off)
                __builtin_trap();
            off += used;
            if (r == RESP_ERR) {
                if (!d.error)
                    __builtin_trap();
                if (resp_decode(&d, (const uint8_t *)"+OK\r\n", 5, &used, &v) != RESP_ERR)
                    __builtin_trap();
                dead = true;
                break;
            }
            if (r == RESP_DONE) {
                round_trip(&lim, v);
                resp_value_free(v);
            } else if (off != have) {
                __builtin_trap();   /* MORE takes everything */
            }
        }
        free(buf);
        pos += have;
    }
    resp_decoder_fini(&d);
    return 0;
}
