/* HTTP/1 codec: parsing both roles, smuggling defenses, encoding. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common.h"
#include "http/h1.h"
#include "http/headers.h"
#include "tap.h"

/* What a parse produced, as text, so runs can be compared. */
struct rec {
    char log[16384];
    size_t len;
    int messages, errors, status;
    const char *details;
    bool pause_on_headers, free_on_headers;
    struct h1_codec *codec;
    bool last_data; /* merge consecutive data events */
    struct evbuffer *sink; /* when set: body bytes go here, not to the log */
    int end_streams;
    uint64_t wire[4], head[4]; /* h1_codec_wire_bytes / _head_bytes at each on_complete */
};

static void logf_(struct rec *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(struct rec *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(r->log + r->len, sizeof(r->log) - r->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        r->len += (size_t)n < sizeof(r->log) - r->len ? (size_t)n : sizeof(r->log) - r->len - 1;
}

static void log_headers(struct rec *r, const struct herald_headers *h)
{
    const char *n, *v;
    for (size_t i = 0; herald_headers_at(h, i, &n, &v); i++)
        logf_(r, "%s%s=%s", i ? "|" : "", n, v);
}

static void on_headers(void *arg, struct herald_headers *h, bool end_stream)
{
    struct rec *r = arg;
    logf_(r, "H[");
    log_headers(r, h);
    logf_(r, "]%s ", end_stream ? "E" : "");
    herald_headers_free(h);
    r->last_data = false;
    if (r->pause_on_headers)
        h1_codec_pause(r->codec);
    if (r->free_on_headers) {
        h1_codec_free(r->codec);
        r->codec = NULL;
    }
}

static void on_data(void *arg, struct evbuffer *b, bool end_stream)
{
    struct rec *r = arg;
    if (r->sink) {
        evbuffer_add_buffer(r->sink, b);
        r->end_streams += end_stream;
        return;
    }
    size_t n = evbuffer_get_length(b);
    char *p = (char *)evbuffer_pullup(b, -1);
    if (!r->last_data)
        logf_(r, "D[");
    else
        r->len--; /* reopen the previous D[...] */
    logf_(r, "%.*s]", (int)n, p ? p : "");
    r->last_data = true;
    if (end_stream) {
        logf_(r, "E ");
        r->last_data = false;
    }
}

static void on_trailers(void *arg, struct herald_headers *t)
{
    struct rec *r = arg;
    logf_(r, "%sT[", r->last_data ? " " : "");
    log_headers(r, t);
    logf_(r, "] ");
    herald_headers_free(t);
    r->last_data = false;
}

static void on_complete(void *arg)
{
    struct rec *r = arg;
    logf_(r, "%sC%s ", r->last_data ? " " : "", h1_codec_keep_alive(r->codec) ? "k" : "");
    if (r->messages < 4) {
        r->wire[r->messages] = h1_codec_wire_bytes(r->codec);
        r->head[r->messages] = h1_codec_head_bytes(r->codec);
    }
    r->messages++;
    r->last_data = false;
}

static void on_info(void *arg, struct herald_headers *h)
{
    struct rec *r = arg;
    logf_(r, "I[");
    log_headers(r, h);
    logf_(r, "] ");
    herald_headers_free(h);
    r->last_data = false;
}

static void on_error(void *arg, int status, const char *details)
{
    struct rec *r = arg;
    r->errors++;
    r->status = status;
    r->details = details;
    logf_(r, "ERR[%d %s] ", status, details);
}

static const struct h1_callbacks cbs = {
    .on_headers = on_headers,
    .on_data = on_data,
    .on_trailers = on_trailers,
    .on_complete = on_complete,
    .on_informational = on_info,
    .on_error = on_error,
};

/* Feeds input in pieces of `step` bytes (0: all at once), resuming after
 * every pause, like the connection manager would. */
static void run_codec(struct rec *r, struct h1_codec *c, const char *input, size_t len, size_t step, bool eof)
{
    struct evbuffer *in = evbuffer_new();
    size_t off = 0;
    r->codec = c;
    if (!step)
        step = len ? len : 1;
    while (r->codec && !r->errors) {
        if (off < len) {
            size_t n = len - off < step ? len - off : step;
            evbuffer_add(in, input + off, n);
            off += n;
        }
        for (int guard = 0; guard < 10000 && r->codec; guard++) {
            size_t before = evbuffer_get_length(in);
            int rc = h1_codec_dispatch(c, in);
            if (rc < 0 || !r->codec)
                break;
            if (h1_codec_paused(c))
                h1_codec_resume(c);
            else if (evbuffer_get_length(in) == before)
                break;
        }
        if (off >= len)
            break;
    }
    if (eof && r->codec && !r->errors)
        h1_codec_dispatch_eof(c);
    evbuffer_free(in);
}

static struct rec *parse(enum h1_role role, const char *input, size_t step)
{
    static struct rec r;
    memset(&r, 0, sizeof(r));
    struct h1_codec *c = h1_codec_new(role, NULL, &cbs, &r);
    run_codec(&r, c, input, strlen(input), step, false);
    if (r.codec)
        h1_codec_free(r.codec);
    return &r;
}

static void expect_reject(const char *name, const char *input, int status, const char *details)
{
    struct rec *r = parse(H1_SERVER, input, 0);
    is_int(r->status, status, "%s: status", name);
    is_str(r->details, details, "%s: details", name);
    ok(strstr(r->log, "H[") == NULL, "%s: no headers delivered", name);
    /* and byte by byte */
    r = parse(H1_SERVER, input, 1);
    is_int(r->status, status, "%s: status (byte by byte)", name);
}

static void test_split_equivalence(void)
{
    static const char *const inputs[] = {
        "GET /a?b=c HTTP/1.1\r\nHost: Example.com\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n",
        "POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world",
        "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: abc\r\nX-Other: 1\r\n\r\n",
        "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
        "GET /3 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    };
    for (size_t i = 0; i < ARRAY_SIZE(inputs); i++) {
        char whole[16384];
        struct rec *r = parse(H1_SERVER, inputs[i], 0);
        ok(r->errors == 0, "input %zu parses: %s", i, r->log);
        snprintf(whole, sizeof(whole), "%s", r->log);
        int bad = 0;
        size_t len = strlen(inputs[i]);
        for (size_t step = 1; step <= len; step++) {
            r = parse(H1_SERVER, inputs[i], step);
            if (strcmp(r->log, whole) != 0 && bad++ == 0)
                printf("# step %zu: %s\n#  vs %s\n", step, r->log, whole);
        }
        is_int(bad, 0, "input %zu: every split size parses identically", i);
        /* two-piece splits at every boundary */
        bad = 0;
        for (size_t cut = 1; cut < len; cut++) {
            struct rec rr;
            memset(&rr, 0, sizeof(rr));
            struct h1_codec *c = h1_codec_new(H1_SERVER, NULL, &cbs, &rr);
            struct evbuffer *in = evbuffer_new();
            rr.codec = c;
            evbuffer_add(in, inputs[i], cut);
            for (int k = 0; k < 100; k++) {
                h1_codec_dispatch(c, in);
                if (!h1_codec_paused(c))
                    break;
                h1_codec_resume(c);
            }
            evbuffer_add(in, inputs[i] + cut, len - cut);
            for (int k = 0; k < 100; k++) {
                h1_codec_dispatch(c, in);
                if (!h1_codec_paused(c))
                    break;
                h1_codec_resume(c);
            }
            if (strcmp(rr.log, whole) != 0 && bad++ == 0)
                printf("# cut %zu: %s\n", cut, rr.log);
            evbuffer_free(in);
            h1_codec_free(c);
        }
        is_int(bad, 0, "input %zu: every two-piece cut parses identically", i);
    }
}

static void test_requests(void)
{
    struct rec *r = parse(H1_SERVER, "GET /a?b=c HTTP/1.1\r\nHost: Example.com\r\nX-Foo:  bar  \r\n\r\n", 0);
    is_str(r->log, "H[:method=GET|:path=/a?b=c|:authority=Example.com|x-foo=bar]E Ck ",
           "GET parsed, host -> :authority");

    r = parse(H1_SERVER, "GET http://up.example:8080/p/q?x=1 HTTP/1.1\r\nHost: ignored\r\n\r\n", 0);
    is_str(r->log, "H[:method=GET|:path=/p/q?x=1|:authority=up.example:8080]E Ck ", "absolute-form");
    r = parse(H1_SERVER, "GET http://up.example HTTP/1.1\r\n\r\n", 0);
    is_str(r->log, "H[:method=GET|:path=/|:authority=up.example]E Ck ", "absolute-form without path");
    r = parse(H1_SERVER, "CONNECT up.example:443 HTTP/1.1\r\nHost: up.example:443\r\n\r\n", 0);
    is_str(r->log, "H[:method=CONNECT|:authority=up.example:443]E Ck ", "CONNECT");
    r = parse(H1_SERVER, "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", 0);
    is_str(r->log, "H[:method=OPTIONS|:path=*|:authority=h]E Ck ", "OPTIONS *");
    r = parse(H1_SERVER, "GET / HTTP/1.1\r\n\r\n", 0);
    is_str(r->log, "H[:method=GET|:path=/]E Ck ", "no Host: no :authority");

    r = parse(H1_SERVER, "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "5\r\nhello\r\n0\r\nX-Sum: abc\r\n\r\n", 0);
    is_str(r->log,
           "H[:method=POST|:path=/c|:authority=h|transfer-encoding=chunked] D[hello] T[x-sum=abc] Ck ",
           "chunked with trailers");
    r = parse(H1_SERVER, "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n", 0);
    is_str(r->log, "H[:method=POST|:path=/c|:authority=h|transfer-encoding=Chunked] D[]E Ck ",
           "empty chunked body ends with an empty end_stream data");
    r = parse(H1_SERVER, "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 0);
    is_str(r->log, "H[:method=POST|:path=/|content-length=0]E Ck ",
           "content-length 0: end_stream on headers");
    r = parse(H1_SERVER, "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 0);
    ok(r->errors == 0 ? strstr(r->log, "D[abc]E") != NULL
                      : strcmp(r->details, "http1.duplicate_content_length") == 0,
       "identical duplicate content-length folded or rejected as duplicate: %s", r->log);
    r = parse(H1_SERVER, "\r\n\r\nGET / HTTP/1.1\r\n\r\n", 0);
    is_str(r->log, "H[:method=GET|:path=/]E Ck ", "leading empty lines skipped");
    r = parse(H1_SERVER, "GET / HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\nX-Empty:\r\n\r\n", 0);
    is_str(r->log, "H[:method=GET|:path=/|x-a=1|x-a=2|x-empty=]E Ck ",
           "repeated and empty headers kept in order");
    r = parse(H1_SERVER, "GET / HTTP/1.1\r\nX-Bin: caf\xc3\xa9\tok\r\n\r\n", 0);
    is_str(r->log, "H[:method=GET|:path=/|x-bin=caf\xc3\xa9\tok]E Ck ", "obs-text and HTAB in values");
}

static struct rec *parse_resp(const char *method, const char *input, size_t step, bool eof);

static void test_parser_quirks(void)
{
    /* fuzz finding of the http-parser days: it took a name starting with
     * transfer-encoding for TE */
    struct rec *r = parse(H1_SERVER,
           "POST / HTTP/1.1\r\nTransfer-Encoding2: x\r\nContent-Length: 2\r\n\r\nab", 1);
    is_str(r->log, "H[:method=POST|:path=/|transfer-encoding2=x|content-length=2] D[ab]E Ck ",
           "transfer-encoding2 is not Transfer-Encoding (with CL)");
    r = parse(H1_SERVER, "POST / HTTP/1.1\r\nTransfer-Encoding2: chunked\r\n\r\nGET / HTTP/1.1\r\n\r\n", 0);
    is_int(r->messages, 2, "transfer-encoding2: no body, next request parsed");
    is_int(r->errors, 0, "transfer-encoding2: no error");
    r = parse_resp("GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding2: x\r\nContent-Length: 1\r\n\r\nz", 0, false);
    is_str(r->log, "H[:status=200|transfer-encoding2=x|content-length=1] D[z]E Ck ",
           "response transfer-encoding2");
}

static void test_keepalive_pipelining(void)
{
    struct rec *r = parse(H1_SERVER, "GET / HTTP/1.0\r\n\r\n", 0);
    is_str(r->log, "H[:method=GET|:path=/]E C ", "HTTP/1.0: close");
    r = parse(H1_SERVER, "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 0);
    like(r->log, "Ck", "HTTP/1.0 keep-alive");
    r = parse(H1_SERVER, "GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n", 0);
    like(r->log, "E C ", "HTTP/1.1 Connection: close (in a list)");
    r = parse(H1_SERVER, "GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET /next HTTP/1.1\r\n\r\n", 0);
    is_int(r->messages, 1, "nothing parsed after Connection: close");

    /* pipelining: one at a time until resumed */
    struct rec rr;
    memset(&rr, 0, sizeof(rr));
    struct h1_codec *c = h1_codec_new(H1_SERVER, NULL, &cbs, &rr);
    rr.codec = c;
    struct evbuffer *in = evbuffer_new();
    const char *two = "GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi";
    evbuffer_add(in, two, strlen(two));
    is_int(h1_codec_dispatch(c, in), 0, "dispatch ok");
    is_int(rr.messages, 1, "paused after the first request");
    ok(h1_codec_paused(c), "codec paused");
    is_int(evbuffer_get_length(in), strlen(two) - strlen("GET /1 HTTP/1.1\r\n\r\n"),
           "second request left in buffer");
    h1_codec_dispatch(c, in);
    is_int(rr.messages, 1, "still paused without resume");
    h1_codec_resume(c);
    h1_codec_dispatch(c, in);
    is_int(rr.messages, 2, "second request after resume");
    is_int(evbuffer_get_length(in), 0, "all consumed");
    ok(h1_codec_idle(c), "idle");
    evbuffer_free(in);
    h1_codec_free(c);
    ok(strstr(rr.log, "H[:method=POST|:path=/2|content-length=2] D[hi]E Ck") != NULL,
           "second parsed: %s", rr.log);
}

static void test_pause_and_free_in_callbacks(void)
{
    struct rec rr;
    memset(&rr, 0, sizeof(rr));
    rr.pause_on_headers = true;
    struct h1_codec *c = h1_codec_new(H1_SERVER, NULL, &cbs, &rr);
    rr.codec = c;
    struct evbuffer *in = evbuffer_new();
    const char *req = "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
    evbuffer_add(in, req, strlen(req));
    h1_codec_dispatch(c, in);
    ok(strstr(rr.log, "D[") == NULL, "paused in on_headers: no data yet");
    rr.pause_on_headers = false;
    h1_codec_resume(c);
    h1_codec_dispatch(c, in);
    like(rr.log, "D[hello]E Ck", "data after resume");
    evbuffer_free(in);
    h1_codec_free(c);

    memset(&rr, 0, sizeof(rr));
    rr.free_on_headers = true;
    c = h1_codec_new(H1_SERVER, NULL, &cbs, &rr);
    rr.codec = c;
    in = evbuffer_new();
    evbuffer_add(in, req, strlen(req));
    is_int(h1_codec_dispatch(c, in), -1, "freed in on_headers: dispatch returns -1");
    ok(strstr(rr.log, "D[") == NULL, "no callback after free");
    evbuffer_free(in);
}

static void test_expect_upgrade(void)
{
    struct rec rr;
    memset(&rr, 0, sizeof(rr));
    struct h1_codec *c = h1_codec_new(H1_SERVER, NULL, &cbs, &rr);
    rr.codec = c;
    struct evbuffer *in = evbuffer_new();
    const char *req = "PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
    evbuffer_add(in, req, strlen(req));
    h1_codec_dispatch(c, in);
    ok(h1_codec_expect_continue(c), "Expect: 100-continue flagged");
    evbuffer_add(in, "abc", 3);
    h1_codec_dispatch(c, in);
    like(rr.log, "D[abc]E Ck", "body after 100-continue");
    evbuffer_free(in);
    h1_codec_free(c);
    struct rec *r = parse(H1_SERVER,
           "PUT /x HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n", 0);
    ok(!strstr(r->log, "ERR"), "HTTP/1.0 expect parses");

    /* upgrade: parsing stops after the request, the rest is raw */
    memset(&rr, 0, sizeof(rr));
    c = h1_codec_new(H1_SERVER, NULL, &cbs, &rr);
    rr.codec = c;
    in = evbuffer_new();
    const char *up = "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                     "\x81\x05hello";
    evbuffer_add(in, up, strlen(up));
    h1_codec_dispatch(c, in);
    ok(h1_codec_is_upgrade(c), "upgrade request flagged");
    ok(h1_codec_upgraded(c), "codec upgraded after on_complete");
    is_int(evbuffer_get_length(in), 7, "raw bytes left for forwarding");
    h1_codec_resume(c);
    h1_codec_dispatch(c, in);
    is_int(evbuffer_get_length(in), 7, "upgraded codec consumes nothing");
    evbuffer_free(in);
    h1_codec_free(c);

    r = parse(H1_SERVER, "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", 0);
    like(r->log, "Ck", "Upgrade without Connection: upgrade is a plain request");

    /* refused upgrade: parse HTTP again */
    memset(&rr, 0, sizeof(rr));
    c = h1_codec_new(H1_SERVER, NULL, &cbs, &rr);
    rr.codec = c;
    in = evbuffer_new();
    const char *up2 = "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                      "GET /n HTTP/1.1\r\n\r\n";
    evbuffer_add(in, up2, strlen(up2));
    h1_codec_dispatch(c, in);
    h1_codec_cancel_upgrade(c);
    h1_codec_resume(c);
    h1_codec_dispatch(c, in);
    is_int(rr.messages, 2, "cancel_upgrade: next request parsed");
    evbuffer_free(in);
    h1_codec_free(c);
}

static void test_smuggling(void)
{
    expect_reject("CL + TE",
           "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
                  "http1.content_length_and_chunked_not_allowed");
    expect_reject("TE + CL",
           "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400,
                  "http1.content_length_and_chunked_not_allowed");
    expect_reject("differing CL",
           "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400,
                  "http1.duplicate_content_length");
    expect_reject("CL list", "POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\nhello!", 400,
                  "http1.invalid_content_length");
    expect_reject("CL negative", "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400,
           "http1.invalid_content_length");
    expect_reject("TE chunked, identity",
           "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
                  501, "http1.invalid_transfer_encoding");
    expect_reject("TE xchunked", "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501,
                  "http1.invalid_transfer_encoding");
    expect_reject("TE gzip", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501,
                  "http1.invalid_transfer_encoding");
    expect_reject("TE gzip, chunked",
           "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501,
                  "http1.invalid_transfer_encoding");
    expect_reject("two TE",
           "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501,
                  "http1.invalid_transfer_encoding");
    expect_reject("TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
                  "http1.transfer_encoding_not_allowed");
    const char *chunk_hdr = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    static const char *const bad_chunks[] = {
        "zz\r\nhello\r\n0\r\n\r\n", "-1\r\nx\r\n0\r\n\r\n", "0x5\r\nhello\r\n0\r\n\r\n",
        "5\r\nhelloXY0\r\n\r\n", "5\nhello\r\n0\r\n\r\n", "5\r\nhello\n0\r\n\r\n",
        "5 \r\nhello\r\n0\r\n\r\n", "fffffffffffffffff\r\n", "5\rXhello\r\n0\r\n\r\n", "\r\n",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad_chunks); i++) {
        char buf[512];
        snprintf(buf, sizeof(buf), "%s%s", chunk_hdr, bad_chunks[i]);
        struct rec *r = parse(H1_SERVER, buf, 0);
        is_int(r->status, 400, "bad chunk %zu: 400", i);
        is_str(r->details, "http1.invalid_chunk_size", "bad chunk %zu: details", i);
        ok(strstr(r->log, "C") == NULL || strstr(r->log, "ERR") != NULL, "bad chunk %zu: not completed", i);
        r = parse(H1_SERVER, buf, 1);
        is_int(r->status, 400, "bad chunk %zu: 400 byte by byte", i);
    }
    expect_reject("bare LF request line", "GET / HTTP/1.1\nHost: h\r\n\r\n", 400, "http1.bare_lf");
    expect_reject("bare LF header", "GET / HTTP/1.1\r\nHost: h\n\r\n", 400, "http1.bare_lf");
    expect_reject("bare LF end", "GET / HTTP/1.1\r\nHost: h\r\n\n", 400, "http1.bare_lf");
    expect_reject("bare CR", "GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", 400, "http1.bare_cr");
    expect_reject("space in name", "GET / HTTP/1.1\r\nFoo Bar: x\r\n\r\n", 400, "http1.invalid_header_name");
    expect_reject("space before colon", "GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\nhello", 400,
                  "http1.invalid_header_name");
    expect_reject("control char in name", "GET / HTTP/1.1\r\nFo\x01o: x\r\n\r\n", 400,
           "http1.invalid_header_name");
    expect_reject("empty name", "GET / HTTP/1.1\r\n: x\r\n\r\n", 400, "http1.invalid_header_name");
    expect_reject("obs-fold", "GET / HTTP/1.1\r\nX-A: 1\r\n  continued\r\n\r\n", 400,
           "http1.obsolete_line_folding");
    expect_reject("obs-fold tab", "GET / HTTP/1.1\r\nX-A: 1\r\n\tcontinued\r\n\r\n", 400,
           "http1.obsolete_line_folding");
    {
        static const char nul_req[] = "GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n";
        struct rec rr;
        memset(&rr, 0, sizeof(rr));
        struct h1_codec *c = h1_codec_new(H1_SERVER, NULL, &cbs, &rr);
        rr.codec = c;
        run_codec(&rr, c, nul_req, sizeof(nul_req) - 1, 0, false);
        h1_codec_free(c);
        is_int(rr.status, 400, "NUL in value: 400");
        is_str(rr.details, "http1.invalid_characters", "NUL in value: details");
        static const char nul_line[] = "GET /\0 HTTP/1.1\r\n\r\n";
        memset(&rr, 0, sizeof(rr));
        c = h1_codec_new(H1_SERVER, NULL, &cbs, &rr);
        rr.codec = c;
        run_codec(&rr, c, nul_line, sizeof(nul_line) - 1, 0, false);
        h1_codec_free(c);
        is_int(rr.status, 400, "NUL in request line: 400");
    }
    expect_reject("control char in value", "GET / HTTP/1.1\r\nX-A: a\x7f\r\n\r\n", 400,
           "http1.invalid_characters");
    expect_reject("invalid method", "G@T / HTTP/1.1\r\n\r\n", 400, "http1.invalid_method");
    expect_reject("unknown method", "FOO / HTTP/1.1\r\n\r\n", 400, "http1.invalid_method");
    expect_reject("HTTP/2.0", "GET / HTTP/2.0\r\n\r\n", 505, "http1.unsupported_http_version");
    expect_reject("HTTP/0.9", "GET /\r\n\r\n", 505, "http1.unsupported_http_version");
    /* PRI is not among the methods herald takes (http-parser 2.9's set): the
     * h2 preface is an invalid method */
    expect_reject("h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "http1.invalid_method");
    expect_reject("two Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "http1.duplicate_host");
    expect_reject("bad absolute url", "GET http:// HTTP/1.1\r\n\r\n", 400, "http1.invalid_url");

    /* limits */
    char *big = xmalloc(70 * 1024);
    int n = snprintf(big, 70 * 1024, "GET / HTTP/1.1\r\nX-Big: ");
    memset(big + n, 'a', 61 * 1024);
    strcpy(big + n + 61 * 1024, "\r\n\r\n");
    expect_reject("headers over 60 KiB", big, 431, "http1.headers_too_large");
    n = snprintf(big, 70 * 1024, "GET /");
    memset(big + n, 'a', 61 * 1024);
    strcpy(big + n + 61 * 1024, " HTTP/1.1\r\n\r\n");
    expect_reject("request line over the limit", big, 431, "http1.headers_too_large");
    size_t off = (size_t)snprintf(big, 70 * 1024, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 101; i++)
        off += (size_t)snprintf(big + off, 70 * 1024 - off, "X-H%d: v\r\n", i);
    strcpy(big + off, "\r\n");
    expect_reject("101 headers", big, 431, "http1.too_many_headers");
    off = (size_t)snprintf(big, 70 * 1024, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 100; i++)
        off += (size_t)snprintf(big + off, 70 * 1024 - off, "X-H%d: v\r\n", i);
    strcpy(big + off, "\r\n");
    struct rec *r = parse(H1_SERVER, big, 0);
    is_int(r->errors, 0, "100 headers accepted");
    /* whitespace padding is bounded too */
    n = snprintf(big, 70 * 1024, "GET / HTTP/1.1\r\nX: ");
    memset(big + n, ' ', 69 * 1024);
    strcpy(big + n + 69 * 1024 - 10, "v\r\n\r\n");
    struct h1_limits lim = {.max_request_headers_kb = 8, .max_headers_count = 5};
    struct rec rr;
    memset(&rr, 0, sizeof(rr));
    struct h1_codec *c = h1_codec_new(H1_SERVER, &lim, &cbs, &rr);
    run_codec(&rr, c, big, strlen(big), 0, false);
    h1_codec_free(c);
    is_int(rr.status, 431, "whitespace padding over the raw limit: 431");
    memset(&rr, 0, sizeof(rr));
    c = h1_codec_new(H1_SERVER, &lim, &cbs, &rr);
    const char *six = "GET / HTTP/1.1\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\n\r\n";
    run_codec(&rr, c, six, strlen(six), 0, false);
    h1_codec_free(c);
    is_str(rr.details, "http1.too_many_headers", "configured header count limit");
    /* trailers count too */
    off = (size_t)snprintf(big, 70 * 1024, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n");
    for (int i = 0; i < 101; i++)
        off += (size_t)snprintf(big + off, 70 * 1024 - off, "X-T%d: v\r\n", i);
    strcpy(big + off, "\r\n");
    r = parse(H1_SERVER, big, 0);
    is_str(r->details, "http1.too_many_headers", "too many trailers");
    r = parse(H1_SERVER, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\n\r\n", 1);
    is_str(r->details, "http1.bare_lf", "bare LF in trailers");
    ok(strstr(r->log, "T[") == NULL && strstr(r->log, " C") == NULL, "bare LF in trailers: not completed");
    r = parse(H1_SERVER, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n X: y\r\n\r\n", 0);
    is_str(r->details, "http1.obsolete_line_folding", "obs-fold in trailers");
    free(big);

    /* after an error the codec is dead */
    memset(&rr, 0, sizeof(rr));
    c = h1_codec_new(H1_SERVER, NULL, &cbs, &rr);
    struct evbuffer *in = evbuffer_new();
    evbuffer_add_printf(in, "GET / HTTP/1.1\nX: y\r\n\r\n");
    is_int(h1_codec_dispatch(c, in), -1, "error: -1");
    evbuffer_add_printf(in, "GET / HTTP/1.1\r\n\r\n");
    is_int(h1_codec_dispatch(c, in), -1, "dead codec: -1");
    is_int(rr.errors, 1, "on_error once");
    evbuffer_free(in);
    h1_codec_free(c);

    r = parse(H1_SERVER, "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel", 0);
    memset(&rr, 0, sizeof(rr));
    c = h1_codec_new(H1_SERVER, NULL, &cbs, &rr);
    const char *cut = "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel";
    run_codec(&rr, c, cut, strlen(cut), 0, true);
    h1_codec_free(c);
    is_str(rr.details, "http1.premature_eof", "EOF mid-body: premature_eof");
}

static struct rec *parse_resp(const char *method, const char *input, size_t step, bool eof)
{
    static struct rec r;
    memset(&r, 0, sizeof(r));
    struct h1_codec *c = h1_codec_new(H1_CLIENT, NULL, &cbs, &r);
    for (const char *m = method; m && *m;) {
        char one[16];
        size_t l = strcspn(m, ",");
        snprintf(one, sizeof(one), "%.*s", (int)l, m);
        h1_codec_expect_response(c, one);
        m += l + (m[l] == ',');
    }
    run_codec(&r, c, input, strlen(input), step, eof);
    if (r.codec)
        h1_codec_free(r.codec);
    return &r;
}

static void test_responses(void)
{
    struct rec *r = parse_resp("GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 0, false);
    is_str(r->log, "H[:status=200|content-length=5] D[hello]E Ck ", "200 with length");
    r = parse_resp("HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 0, false);
    is_str(r->log, "H[:status=200|content-length=5]E Ck ", "HEAD: no body despite content-length");
    r = parse_resp("HEAD,GET",
           "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", 0,
                   false);
    is_str(r->log, "H[:status=200|transfer-encoding=chunked]E Ck H[:status=204]E Ck ",
           "HEAD chunked then 204");
    r = parse_resp("GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", 0, false);
    is_str(r->log, "H[:status=304|content-length=10]E Ck ", "304 has no body");
    r = parse_resp("GET", "HTTP/1.1 204 No Content\r\n\r\n", 0, false);
    is_str(r->log, "H[:status=204]E Ck ", "204");
    r = parse_resp("POST",
           "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", 1,
                   false);
    is_str(r->log, "I[:status=100] H[:status=201|content-length=2] D[ok]E Ck ", "100 Continue then final");
    r = parse_resp("GET",
           "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n", 1,
                   false);
    is_str(r->log, "H[:status=200|transfer-encoding=chunked] D[abc] T[x-t=1] Ck ",
           "chunked response with trailers");
    r = parse_resp("GET", "HTTP/1.1 200 OK\r\n\r\nuntil eof", 0, true);
    is_str(r->log, "H[:status=200] D[until eof]E C ", "close-delimited body ends at EOF, no keep-alive");
    r = parse_resp("GET", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", 0, false);
    is_str(r->log, "H[:status=200|content-length=1] D[x]E C ", "HTTP/1.0 response: no keep-alive");
    r = parse_resp("GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", 0, true);
    is_str(r->details, "http1.premature_eof", "response cut short");
    r = parse_resp("GET",
           "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 0, false);
    ok(r->errors == 1, "response CL+TE rejected");
    r = parse_resp("GET", "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", 0, false);
    is_str(r->details, "http1.bare_lf", "bare LF in a response");
    r = parse_resp("GET",
           "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n", 0,
                   false);
    is_str(r->log, "H[:status=200|content-length=2] D[ok]E Ck H[:status=500|content-length=0]E Ck ",
           "two responses in one read");

    /* 101 switches */
    struct rec rr;
    memset(&rr, 0, sizeof(rr));
    struct h1_codec *c = h1_codec_new(H1_CLIENT, NULL, &cbs, &rr);
    rr.codec = c;
    h1_codec_expect_response(c, "GET");
    struct evbuffer *in = evbuffer_new();
    evbuffer_add_printf(in,
           "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nRAW");
    h1_codec_dispatch(c, in);
    ok(h1_codec_upgraded(c), "101: upgraded");
    is_int(evbuffer_get_length(in), 3, "raw bytes left");
    like(rr.log, "H[:status=101|upgrade=websocket|connection=Upgrade]E C", "101 delivered as headers");
    evbuffer_free(in);
    h1_codec_free(c);
    /* CONNECT 200 */
    memset(&rr, 0, sizeof(rr));
    c = h1_codec_new(H1_CLIENT, NULL, &cbs, &rr);
    rr.codec = c;
    h1_codec_expect_response(c, "CONNECT");
    in = evbuffer_new();
    evbuffer_add_printf(in, "HTTP/1.1 200 Connection established\r\n\r\ntunnel");
    h1_codec_dispatch(c, in);
    ok(h1_codec_upgraded(c), "CONNECT 200: tunnel");
    is_int(evbuffer_get_length(in), 6, "tunnel bytes left");
    evbuffer_free(in);
    h1_codec_free(c);
}

static char *encode_to_string(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = xmalloc(n + 1);
    evbuffer_copyout(b, s, n);
    s[n] = '\0';
    return s;
}

/* Encodes GET / with one more header: -1 when refused (and then nothing
 * may be written), else the bytes written. */
static int encode_one(const char *name, const char *value)
{
    struct herald_headers *q = herald_headers_new();
    herald_headers_add(q, ":method", "GET");
    herald_headers_add(q, ":path", "/");
    headers_add_n(q, name, strlen(name), value, strlen(value));
    struct evbuffer *out = evbuffer_new();
    struct h1_encoder e;
    h1_encoder_init(&e, 0);
    int rc = h1_encode_request_headers(&e, out, q, true);
    int n = (int)evbuffer_get_length(out);
    evbuffer_free(out);
    herald_headers_free(q);
    return rc == -1 ? (n ? -2 : -1) : n;
}

static void test_encoding(void)
{
    struct h1_encoder e;
    struct evbuffer *out = evbuffer_new(), *data = evbuffer_new();
    struct herald_headers *h = herald_headers_new();
    herald_headers_add(h, ":method", "POST");
    herald_headers_add(h, ":path", "/up");
    herald_headers_add(h, ":authority", "example.com");
    herald_headers_add(h, ":scheme", "http");
    herald_headers_add(h, "X-Thing", "1");
    herald_headers_add(h, "transfer-encoding", "gzip");
    h1_encoder_init(&e, 0);
    is_int(h1_encode_request_headers(&e, out, h, false), 0, "request headers");
    is_int(e.framing, H1_FRAME_CHUNKED, "no length: chunked");
    evbuffer_add(data, "hello", 5);
    h1_encode_data(&e, out, data, false);
    is_int(evbuffer_get_length(data), 0, "data drained");
    evbuffer_add(data, " world", 6);
    h1_encode_data(&e, out, data, false);
    struct herald_headers *t = herald_headers_new();
    herald_headers_add(t, "x-checksum", "42");
    is_int(h1_encode_trailers(&e, out, t), 0, "trailers");
    char *s = encode_to_string(out);
    is_str(s, "POST /up HTTP/1.1\r\nhost: example.com\r\nx-thing: 1\r\ntransfer-encoding: chunked\r\n\r\n"
              "5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: 42\r\n\r\n", "chunked request bytes");
    /* round trip through the server parser */
    struct rec *r = parse(H1_SERVER, s, 3);
    is_str(r->log, "H[:method=POST|:path=/up|:authority=example.com|x-thing=1|transfer-encoding=chunked] "
                   "D[hello world] T[x-checksum=42] Ck ", "request round-trips");
    free(s);
    evbuffer_drain(out, evbuffer_get_length(out));

    /* GET without body: no content-length; POST without body: content-length 0 */
    struct herald_headers *g = herald_headers_new();
    herald_headers_add(g, ":method", "GET");
    herald_headers_add(g, ":path", "/");
    herald_headers_add(g, ":authority", "h");
    h1_encoder_init(&e, 0);
    h1_encode_request_headers(&e, out, g, true);
    s = encode_to_string(out);
    is_str(s, "GET / HTTP/1.1\r\nhost: h\r\n\r\n", "GET end_stream");
    free(s);
    evbuffer_drain(out, evbuffer_get_length(out));
    herald_headers_set(g, ":method", "PUT");
    h1_encoder_init(&e, 0);
    h1_encode_request_headers(&e, out, g, true);
    s = encode_to_string(out);
    is_str(s, "PUT / HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\n\r\n", "PUT end_stream: content-length 0");
    free(s);
    evbuffer_drain(out, evbuffer_get_length(out));
    herald_headers_add(g, "x-evil", "a\r\nInjected: 1");
    h1_encoder_init(&e, 0);
    is_int(h1_encode_request_headers(&e, out, g, true), -1, "CRLF injection refused");
    is_int(evbuffer_get_length(out), 0, "nothing written");
    herald_headers_free(g);
    /* CR or LF at each position of a 24-byte value (checked a word at a
     * time), a space at each position of a name: refused, nothing written;
     * a tab in the value instead: written */
    int refused = 0, accepted = 0;
    for (size_t pos = 0; pos < 24; pos++) {
        char bad[25], good[25];
        memset(bad, 'v', 24);
        bad[24] = '\0';
        memcpy(good, bad, 25);
        good[pos] = '\t';
        for (int k = 0; k < 3; k++) {
            bad[pos] = k == 0 ? '\r' : k == 1 ? '\n' : ' ';
            refused += encode_one(k == 2 ? bad : "x-v", k == 2 ? "1" : bad) == -1;
        }
        accepted += encode_one("x-v", good) > 0;
    }
    is_int(refused, 72, "CR, LF in a value and a space in a name refused at each of 24 positions");
    is_int(accepted, 24, "a tab in the value instead: written");

    /* fields a codec received are written unchecked; a filter's change to one
     * is checked again, also in a copy */
    struct herald_headers *rq = herald_headers_new();
    herald_headers_add(rq, ":method", "GET");
    herald_headers_add(rq, ":path", "/");
    headers_add_received(rq, "X-Seen", 6, "ok", 2, true);
    size_t nf;
    ok(headers_fields(rq, &nf)[2].received && !headers_fields(rq, &nf)[0].received,
       "only the received field is marked");
    struct herald_headers *cp = herald_headers_copy(rq);
    ok(headers_fields(cp, &nf)[2].received, "a copy keeps the mark");
    h1_encoder_init(&e, 0);
    is_int(h1_encode_request_headers(&e, out, cp, true), 0, "a received field is written");
    char *seen = encode_to_string(out);
    is_str(seen, "GET / HTTP/1.1\r\nx-seen: ok\r\n\r\n", "lower-cased, as received");
    free(seen);
    evbuffer_drain(out, evbuffer_get_length(out));
    herald_headers_set(cp, "x-seen", "a\r\nInjected: 1");
    ok(!headers_fields(cp, &nf)[2].received, "herald_headers_set clears the mark");
    h1_encoder_init(&e, 0);
    is_int(h1_encode_request_headers(&e, out, cp, true), -1, "and a CR LF set into a received field is refused");
    is_int((int)evbuffer_get_length(out), 0, "with nothing written");
    herald_headers_free(cp);
    herald_headers_free(rq);
    struct herald_headers *nop = herald_headers_new();
    herald_headers_add(nop, ":path", "/");
    h1_encoder_init(&e, 0);
    is_int(h1_encode_request_headers(&e, out, nop, true), -1, "no :method refused");
    herald_headers_free(nop);

    /* responses */
    struct herald_headers *rh = herald_headers_new();
    herald_headers_add(rh, ":status", "200");
    herald_headers_add(rh, "content-type", "text/plain");
    herald_headers_add(rh, "content-length", "5");
    h1_encoder_init(&e, 0);
    h1_encode_response_headers(&e, out, rh, false);
    is_int(e.framing, H1_FRAME_LENGTH, "length framing");
    evbuffer_add(data, "hel", 3);
    h1_encode_data(&e, out, data, false);
    evbuffer_add(data, "lo!", 3);
    is_int(h1_encode_data(&e, out, data, true), -1, "more than content-length refused");
    evbuffer_drain(data, evbuffer_get_length(data));
    evbuffer_add(data, "lo", 2);
    is_int(h1_encode_data(&e, out, data, true), 0, "rest of the body");
    is_int(h1_encode_trailers(&e, out, t), 0, "trailers after a length body: dropped");
    s = encode_to_string(out);
    is_str(s, "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello",
           "length response");
    r = parse_resp("GET", s, 1, false);
    is_str(r->log, "H[:status=200|content-type=text/plain|content-length=5] D[hello]E Ck ",
           "response round-trips");
    free(s);
    evbuffer_drain(out, evbuffer_get_length(out));

    herald_headers_remove(rh, "content-length");
    h1_encoder_init(&e, 0);
    h1_encode_response_headers(&e, out, rh, true);
    s = encode_to_string(out);
    is_str(s, "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 0\r\n\r\n",
           "end_stream: content-length 0");
    free(s);
    evbuffer_drain(out, evbuffer_get_length(out));

    h1_encoder_init(&e, H1_ENC_HTTP10);
    h1_encode_response_headers(&e, out, rh, false);
    ok(h1_encoder_close_delimited(&e), "HTTP/1.0 peer: close-delimited");
    evbuffer_add(data, "abc", 3);
    h1_encode_data(&e, out, data, true);
    h1_encode_trailers(&e, out, t);
    s = encode_to_string(out);
    is_str(s, "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nabc", "close-delimited bytes");
    r = parse_resp("GET", s, 0, true);
    is_str(r->log, "H[:status=200|content-type=text/plain] D[abc]E C ", "close-delimited round-trips");
    free(s);
    evbuffer_drain(out, evbuffer_get_length(out));

    h1_encoder_init(&e, 0);
    h1_encode_response_headers(&e, out, rh, false);
    evbuffer_add(data, "abc", 3);
    h1_encode_data(&e, out, data, false);
    h1_encode_trailers(&e, out, t);
    s = encode_to_string(out);
    r = parse_resp("GET", s, 1, false);
    is_str(r->log,
           "H[:status=200|content-type=text/plain|transfer-encoding=chunked] D[abc] T[x-checksum=42] Ck ",
           "chunked response round-trips");
    free(s);
    evbuffer_drain(out, evbuffer_get_length(out));

    h1_encoder_init(&e, H1_ENC_HEAD);
    herald_headers_set(rh, "content-length", "100");
    h1_encode_response_headers(&e, out, rh, false);
    evbuffer_add(data, "body", 4);
    is_int(h1_encode_data(&e, out, data, true), 0, "HEAD: body dropped");
    s = encode_to_string(out);
    is_str(s, "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n\r\n",
           "HEAD response keeps length");
    free(s);
    evbuffer_drain(out, evbuffer_get_length(out));

    herald_headers_set(rh, ":status", "204");
    herald_headers_remove(rh, "content-length");
    h1_encoder_init(&e, 0);
    h1_encode_response_headers(&e, out, rh, true);
    s = encode_to_string(out);
    is_str(s, "HTTP/1.1 204 No Content\r\ncontent-type: text/plain\r\n\r\n", "204: no content-length added");
    free(s);
    evbuffer_drain(out, evbuffer_get_length(out));
    herald_headers_set(rh, ":status", "99");
    h1_encoder_init(&e, 0);
    is_int(h1_encode_response_headers(&e, out, rh, true), -1, "bad :status refused");
    herald_headers_set(rh, ":status", "599");
    h1_encoder_init(&e, 0);
    h1_encode_response_headers(&e, out, rh, true);
    s = encode_to_string(out);
    like(s, "HTTP/1.1 599 Unknown\r\n", "unknown status reason");
    free(s);
    evbuffer_drain(out, evbuffer_get_length(out));
    h1_encode_100_continue(out);
    s = encode_to_string(out);
    is_str(s, "HTTP/1.1 100 Continue\r\n\r\n", "100 continue");
    free(s);

    herald_headers_free(rh);
    herald_headers_free(t);
    herald_headers_free(h);
    evbuffer_free(out);
    evbuffer_free(data);
}

static void test_headers_map(void)
{
    struct herald_headers *h = herald_headers_new();
    herald_headers_add(h, "X-A", "1");
    herald_headers_add(h, "x-b", "2");
    herald_headers_add(h, "X-a", "3");
    is_int(herald_headers_count(h), 3, "count");
    is_str(herald_headers_get(h, "x-A"), "1", "get is case-insensitive, first value");
    const char *n, *v;
    ok(herald_headers_at(h, 2, &n, &v) && strcmp(n, "x-a") == 0 && strcmp(v, "3") == 0, "names lower-cased");
    ok(!herald_headers_at(h, 3, &n, &v), "at past the end");
    herald_headers_set(h, "X-A", "9");
    is_int(herald_headers_count(h), 2, "set replaces all");
    ok(herald_headers_at(h, 0, &n, &v) && strcmp(v, "9") == 0, "set keeps the first position");
    is_int(herald_headers_remove(h, "x-b"), 1, "remove");
    is_int(herald_headers_remove(h, "x-b"), 0, "remove none");
    herald_headers_add(h, "connection", "keep-alive, Upgrade");
    ok(headers_has_token(h, "Connection", "upgrade"), "token match");
    ok(!headers_has_token(h, "Connection", "close"), "token mismatch");
    struct herald_headers *c = herald_headers_copy(h);
    is_int(herald_headers_count(c), 2, "clone");
    is_int((long long)headers_byte_size(c), 3 + 1 + 10 + 19, "byte size");
    herald_headers_free(c);
    herald_headers_free(h);
    ok(herald_headers_get(NULL, "x") == NULL, "NULL map");
}

/* Names are stored lower-cased eight bytes at a time: every byte value at
 * every position of names of 1 to 24 bytes comes back as ASCII tolower()
 * would give it (only 'A'..'Z' change; '@', '[', 0xc1, 0xda stay). */
static void test_headers_lowercase_every_byte(void)
{
    int bad = 0, checked = 0;
    for (size_t len = 1; len <= 24; len++) {
        for (size_t pos = 0; pos < len; pos++) {
            struct herald_headers *h = herald_headers_new();
            for (unsigned b = 0; b < 256; b++) {
                char name[24];
                memset(name, 'Q', len);   /* upper-case filler: every byte around is lowered too */
                name[pos] = (char)b;
                headers_add_received(h, name, len, "v", 1, true);
            }
            size_t nf;
            const struct header_field *f = headers_fields(h, &nf);
            for (unsigned b = 0; b < 256; b++) {
                if (b >= nf || f[b].nlen != len) {
                    bad++;
                    continue;
                }
                const char *n = f[b].name;
                for (size_t i = 0; i < len; i++) {
                    unsigned char in = i == pos ? (unsigned char)b : 'Q';
                    unsigned char want = in >= 'A' && in <= 'Z' ? (unsigned char)(in + 32) : in;
                    if ((unsigned char)n[i] != want) {
                        if (bad++ < 5)
                            printf("# len %zu pos %zu byte 0x%02x: got 0x%02x at %zu\n", len, pos, b,
                                 (unsigned char)n[i], i);
                    }
                }
                checked++;
            }
            herald_headers_free(h);
        }
    }
    is_int(bad, 0, "every byte at every position of %d names lower-cased as ASCII tolower", checked);
}

/* Lookups skip maps whose name summary rules a name out: every name added,
 * through every path, must still be found (200 names share 64 bits). */
static void test_headers_map_lookup_summary(void)
{
    struct herald_headers *h = herald_headers_new();
    char name[32], val[32];
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof(name), "X-Name-%d", i);
        snprintf(val, sizeof(val), "v%d", i);
        if (i % 3 == 0)
            herald_headers_add(h, name, val);
        else if (i % 3 == 1)
            herald_headers_set(h, name, val);
        else {
            for (char *p = name; *p; p++)
                *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
            headers_add_n(h, name, strlen(name), val, strlen(val));
        }
    }
    int found = 0;
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof(name), "x-NAME-%d", i);
        snprintf(val, sizeof(val), "v%d", i);
        const char *v = herald_headers_get(h, name);
        found += v && strcmp(v, val) == 0 && headers_count_name(h, name) == 1;
    }
    is_int(found, 200, "every name added by add, set and add_n is found");
    ok(herald_headers_get(h, "x-name-200") == NULL && herald_headers_get(h, "absent") == NULL, "misses");
    struct herald_headers *c = herald_headers_copy(h);
    ok(herald_headers_get(c, "X-Name-199") && strcmp(herald_headers_get(c, "X-Name-199"), "v199") == 0,
       "a copy finds names");
    is_int(herald_headers_remove(c, "x-name-7"), 1, "remove from the copy");
    ok(herald_headers_get(c, "x-name-7") == NULL, "removed name gone");
    herald_headers_add(c, "X-Name-7", "again");
    is_str(herald_headers_get(c, "x-name-7"), "again", "re-added after removal");
    herald_headers_free(c);
    herald_headers_free(h);

    /* a map reused from the spare list starts empty: no name from its last life */
    h = herald_headers_new();
    herald_headers_add(h, "Upgrade", "websocket");
    herald_headers_add(h, "", "empty name");
    herald_headers_free(h);
    h = herald_headers_new();
    ok(herald_headers_get(h, "upgrade") == NULL && !headers_has_token(h, "upgrade", "websocket"),
       "reused map forgets names");
    herald_headers_add(h, "", "e");
    is_str(herald_headers_get(h, ""), "e", "empty name found");
    herald_headers_set(h, "Te", "trailers");
    ok(headers_has_token(h, "TE", "trailers"), "set adds when absent");
    herald_headers_free(h);
}

/* Every control byte at every position of a 24-byte value and request
 * target (three 8-byte words: the validator checks runs a word at a time)
 * is refused, HTAB and obs-text (0x80-0xff) are kept intact. */
static void test_control_bytes_every_position(void)
{
    const unsigned char bad[] = {0x00, 0x01, 0x08, 0x0b, 0x1b, 0x1f, 0x7f, '\r', '\n'};
    int wrong = 0, delivered = 0, cases = 0;
    for (int where = 0; where < 2; where++)
        for (size_t pos = 0; pos < 24; pos++)
            for (size_t b = 0; b < sizeof(bad); b++) {
                /* built by hand: the byte may be a NUL */
                const char *pre = where ? "GET / HTTP/1.1\r\nhost: h\r\nx-v: a" : "GET /";
                const char *post = where ? "z\r\n\r\n" : " HTTP/1.1\r\nhost: h\r\n\r\n";
                char req[160];
                size_t n = 0;
                memcpy(req + n, pre, strlen(pre)), n += strlen(pre);
                memset(req + n, where ? 'a' : 'p', 24);
                req[n + pos] = (char)bad[b];
                n += 24;
                memcpy(req + n, post, strlen(post)), n += strlen(post);
                const char *want = bad[b] == '\r' ? "http1.bare_cr"
                                   : bad[b] == '\n' ? "http1.bare_lf" : "http1.invalid_characters";
                for (size_t step = 0; step < 2; step++) {
                    static struct rec r;
                    memset(&r, 0, sizeof(r));
                    struct h1_codec *c = h1_codec_new(H1_SERVER, NULL, &cbs, &r);
                    run_codec(&r, c, req, n, step ? 7 : 0, false);
                    if (r.codec)
                        h1_codec_free(r.codec);
                    cases++;
                    if (r.status != 400 || !r.details || strcmp(r.details, want) != 0) {
                        if (wrong++ < 5)
                            printf("# %s byte 0x%02x at %zu: status %d details %s\n", where ? "value" : "target",
                                   bad[b], pos, r.status, r.details ? r.details : "(none)");
                    }
                    if (strstr(r.log, "H[") != NULL)
                        delivered++;
                }
            }
    is_int(wrong, 0, "control bytes at each of 24 positions in %d cases: 400 with the right details", cases);
    is_int(delivered, 0, "and no head delivered");

    int kept = 0;
    for (size_t pos = 0; pos < 24; pos++) {
        const unsigned char good[] = {'\t', 0x80, 0xc3, 0xff};
        for (size_t g = 0; g < sizeof(good); g++) {
            char value[25], req[128], want[64];
            memset(value, 'a', 24);
            value[24] = '\0';
            value[pos] = (char)good[g];
            snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nhost: h\r\nx-v: a%sz\r\n\r\n", value);
            snprintf(want, sizeof(want), "x-v=a%sz]", value);
            struct rec *r = parse(H1_SERVER, req, 3);
            kept += r->status == 0 && strstr(r->log, want) != NULL;
        }
    }
    is_int(kept, 24 * 4, "HTAB and obs-text at each position: accepted, value intact");
}

/* Rules of herald's own parser beyond what http-parser enforced, and its
 * handling of input: heads in pieces consumed as they come, bodies moved
 * intact across reads. */
static void test_parser_rules(void)
{
    struct rec *r = parse_resp("GET", "HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n", 0, false);
    is_str(r->details, "http1.invalid_status", "two-digit status refused");
    r = parse_resp("GET", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", 0, false);
    is_str(r->log, "H[:status=200|content-length=0]E Ck ", "status line without a reason");
    r = parse_resp("GET", "HTTP/2.0 200 OK\r\n\r\n", 0, false);
    is_str(r->details, "http1.unsupported_http_version", "HTTP/2.0 status line");
    r = parse(H1_SERVER, "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 0);
    is_str(r->log, "H[:method=POST|:path=/|content-length=3] D[abc]E Ck ", "identical content-length folded");
    static const struct { const char *name, *input, *details; } refused[] = {
        {"CL overflow", "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
         "http1.invalid_content_length"},
        {"CONNECT without a port", "CONNECT h HTTP/1.1\r\n\r\n", "http1.invalid_url"},
        {"CONNECT to a path", "CONNECT /x HTTP/1.1\r\n\r\n", "http1.invalid_url"},
        {"two spaces", "GET  / HTTP/1.1\r\n\r\n", "http1.invalid_url"},
        {"HTAB in the target", "GET /a\tb HTTP/1.1\r\n\r\n", "http1.invalid_url"},
        {"no version", "GET / \r\n\r\n", "http1.invalid_version"},
        {"lower-case method", "get / HTTP/1.1\r\n\r\n", "http1.invalid_method"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(refused); i++)
        expect_reject(refused[i].name, refused[i].input, 400, refused[i].details);
    r = parse_resp("GET", "HTTP/1.1 200 O\tK\r\nContent-Length: 0\r\n\r\n", 0, false);
    is_str(r->log, "H[:status=200|content-length=0]E Ck ", "HTAB in a reason phrase is fine");
    r = parse(H1_SERVER, "M-SEARCH * HTTP/1.1\r\nHost: h\r\n\r\n", 0);
    is_str(r->log, "H[:method=M-SEARCH|:path=*|:authority=h]E Ck ", "a method from the rare end of the set");
    r = parse(H1_SERVER, "GET / HTTP/1.1\r\nX-A: 1\r\nHost: h\r\n\r\n", 0);
    is_str(r->log, "H[:method=GET|:path=/|:authority=h|x-a=1]E Ck ", "Host after another field: :authority third");
    r = parse(H1_SERVER, "GET http://a.example/x HTTP/1.1\r\nX-A: 1\r\nHost: b\r\n\r\n", 0);
    is_str(r->log, "H[:method=GET|:path=/x|:authority=a.example|x-a=1]E Ck ", "absolute-form beats Host");

    /* a head in pieces is consumed as it comes (the caller's EOF check
     * needs an empty buffer), and is not taken for idle */
    struct rec rr;
    memset(&rr, 0, sizeof(rr));
    struct h1_codec *c = h1_codec_new(H1_SERVER, NULL, &cbs, &rr);
    rr.codec = c;
    struct evbuffer *in = evbuffer_new();
    evbuffer_add_printf(in, "GET /piece HTTP/1.1\r\nHo");
    is_int(h1_codec_dispatch(c, in), 0, "partial head: dispatch 0");
    is_int(evbuffer_get_length(in), 0, "partial head consumed");
    ok(!h1_codec_idle(c) && strstr(rr.log, "H[") == NULL, "partial head: not idle, nothing delivered");
    is_int(h1_codec_dispatch_eof(c), -1, "EOF in a head: error");
    is_str(rr.details, "http1.premature_eof", "EOF in a head: premature_eof");
    evbuffer_free(in);
    h1_codec_free(c);

    /* a 300 KB body in uneven reads arrives whole, byte for byte */
    size_t blen = 300 * 1000;
    char *body = xmalloc(blen);
    for (size_t i = 0; i < blen; i++)
        body[i] = (char)('a' + (i * 7 + i / 13) % 26);
    memset(&rr, 0, sizeof(rr));
    c = h1_codec_new(H1_CLIENT, NULL, &cbs, &rr);
    rr.codec = c;
    h1_codec_expect_response(c, "GET");
    in = evbuffer_new();
    evbuffer_add_printf(in, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", blen);
    struct evbuffer *got = evbuffer_new();
    rr.sink = got;
    size_t off = 0, step = 1;
    while (off < blen) {
        size_t n = blen - off < step ? blen - off : step;
        evbuffer_add(in, body + off, n);
        off += n;
        step = step * 3 + 1;
        h1_codec_dispatch(c, in);
    }
    evbuffer_free(in);
    h1_codec_free(c);
    is_int(evbuffer_get_length(got), blen, "long body: every byte delivered");
    ok(evbuffer_get_length(got) == blen && memcmp(evbuffer_pullup(got, -1), body, blen) == 0,
       "long body: bytes intact and in order");
    ok(rr.end_streams == 1 && strstr(rr.log, "Ck") != NULL, "long body: one end_stream, completed");
    free(body);
    evbuffer_free(got);
}

/* The bytes each message took on the wire (head, chunk framing, trailers)
 * and its head's, however the input is split: %*_WIRE_BYTES_RECEIVED% and
 * %*_HEADER_BYTES_RECEIVED%. */
static void test_wire_bytes(void)
{
    const char *head1 = "POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    const char *body1 = "3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nx-t: 1\r\n\r\n";
    const char *req2 = "GET /v HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nwxyz";
    char in[512];
    snprintf(in, sizeof(in), "%s%s%s", head1, body1, req2);
    bool all = true;
    for (size_t step = 1; step <= strlen(in); step++) {
        struct rec *r = parse(H1_SERVER, in, step);
        all = all && r->messages == 2 && r->head[0] == strlen(head1) &&
              r->wire[0] == strlen(head1) + strlen(body1) && r->wire[1] == strlen(req2) &&
              r->head[1] == strlen(req2) - 4;
        if (!all) {
            printf("# step %zu: messages %d, head %llu/%llu, wire %llu/%llu\n", step, r->messages,
                 (unsigned long long)r->head[0], (unsigned long long)r->head[1], (unsigned long long)r->wire[0],
                 (unsigned long long)r->wire[1]);
            break;
        }
    }
    ok(all, "wire and head bytes of two pipelined requests, at every split");
    const char *resp = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    struct rec *r = parse_resp("GET", resp, 3, false);
    ok(r->messages == 1 && r->wire[0] == strlen(resp) && r->head[0] == strlen(resp) - 5,
       "a response's wire and head bytes");
}

int main(void)
{
    test_headers_map();
    test_headers_map_lookup_summary();
    test_headers_lowercase_every_byte();
    test_requests();
    test_split_equivalence();
    test_keepalive_pipelining();
    test_pause_and_free_in_callbacks();
    test_expect_upgrade();
    test_smuggling();
    test_control_bytes_every_position();
    test_responses();
    test_parser_quirks();
    test_parser_rules();
    test_encoding();
    test_wire_bytes();
    return done_testing();
}
