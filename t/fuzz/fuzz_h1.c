/* libFuzzer target for the HTTP/1 codec. Byte 0 picks the role and how the
 * input is split into reads; the rest is the peer's bytes. Requests that
 * parse are re-encoded and must parse again (encoder/parser agreement). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common.h"
#include "http/h1.h"
#include "http/headers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
    struct h1_codec *c;
    bool server, freed, free_on_data, reencode;
    int errors, reparse_errors;
};

static void check_reencode(struct herald_headers *h, bool end_stream);

static void on_headers(void *arg, struct herald_headers *h, bool end_stream)
{
    struct fz *f = arg;
    if (f->server && f->reencode)
        check_reencode(h, end_stream);
    herald_headers_free(h);
}

static void on_data(void *arg, struct evbuffer *b, bool end_stream)
{
    struct fz *f = arg;
    evbuffer_drain(b, evbuffer_get_length(b) / 2); /* leave some: the codec discards it */
    if (f->free_on_data && !f->freed) {
        f->freed = true;
        h1_codec_free(f->c);
    }
}

static void on_trailers(void *arg, struct herald_headers *t)
{
    herald_headers_free(t);
}

static void on_complete(void *arg)
{
}

static void on_info(void *arg, struct herald_headers *h)
{
    herald_headers_free(h);
}

static void on_error(void *arg, int status, const char *details)
{
    struct fz *f = arg;
    f->errors++;
    if (f->errors > 1 || !details || status < 400 || status > 599)
        abort();
}

static const struct h1_callbacks cbs = {
    .on_headers = on_headers,
    .on_data = on_data,
    .on_trailers = on_trailers,
    .on_complete = on_complete,
    .on_informational = on_info,
    .on_error = on_error,
};

static void check_reencode(struct herald_headers *h, bool end_stream)
{
    struct h1_encoder e;
    struct evbuffer *out = evbuffer_new();
    h1_encoder_init(&e, 0);
    /* a body becomes an empty chunked one: framing headers must go */
    struct herald_headers *copy = herald_headers_copy(h);
    herald_headers_remove(copy, "content-length");
    if (h1_encode_request_headers(&e, out, copy, true) == 0) {
        struct fz g = {0};
        g.server = true;
        /* the encoder may add a header (content-length: 0) to a request that
         * was at the count limit: the re-parse gets one more, and room for it */
        struct h1_limits lim = {.max_request_headers_kb = 61, .max_headers_count = 101};
        struct h1_codec *c = h1_codec_new(H1_SERVER, &lim, &cbs, &g);
        g.c = c;
        h1_codec_dispatch(c, out);
        if (g.errors)
            abort(); /* what we encode, we must parse */
        h1_codec_free(c);
    }
    herald_headers_free(copy);
    evbuffer_free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t ctl = data[0];
    data++;
    size--;
    struct fz f = {0};
    f.server = !(ctl & 1);
    f.free_on_data = (ctl & 0x80) != 0;
    f.reencode = (ctl & 0x40) != 0;
    size_t step = ((ctl >> 1) & 0x1f) + 1;
    if (step == 32)
        step = size ? size : 1;
    struct h1_limits lim = {.max_request_headers_kb = (ctl & 0x20) ? 1 : 0,
                            .max_headers_count = (ctl & 0x20) ? 8 : 0};
    struct h1_codec *c = h1_codec_new(f.server ? H1_SERVER : H1_CLIENT, &lim, &cbs, &f);
    f.c = c;
    if (!f.server) {
        static const char *const methods[] = {"GET", "HEAD", "POST", "CONNECT"};
        for (int i = 0; i < 4; i++)
            h1_codec_expect_response(c, methods[(ctl >> (2 + i)) & 3]);
    }
    struct evbuffer *in = evbuffer_new();
    size_t off = 0;
    int rc = 0;
    while (rc == 0 && !f.freed) {
        if (off < size) {
            size_t n = size - off < step ? size - off : step;
            evbuffer_add(in, data + off, n);
            off += n;
        }
        for (int guard = 0; guard < 64 && rc == 0 && !f.freed; guard++) {
            size_t before = evbuffer_get_length(in);
            rc = h1_codec_dispatch(c, in);
            if (rc != 0 || f.freed)
                break;
            if (h1_codec_upgraded(c)) {
                if (ctl & 0x10)
                    h1_codec_cancel_upgrade(c);
                else
                    evbuffer_drain(in, evbuffer_get_length(in));
            }
            if (h1_codec_paused(c))
                h1_codec_resume(c);
            else if (evbuffer_get_length(in) == before)
                break;
            if (!f.server && h1_codec_idle(c))
                h1_codec_expect_response(c, "GET");
        }
        if (off >= size)
            break;
    }
    if (rc == 0 && !f.freed) {
        h1_codec_dispatch_eof(c);
    }
    if (!f.freed)
        h1_codec_free(c);
    evbuffer_free(in);
    return 0;
}
