/* redis_proxy's pure parts: the RESP2 codec (codec.c) on byte fixtures, each
 * fed whole, split at every point and byte by byte; broken and oversized
 * input; the key routing and hash (router.c) against libstdc++'s std::hash
 * (what Envoy hashes keys with); the command table (commands.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "commands.h"
#include "router.h"
#include "tap.h"

struct out {
    char *p;
    size_t len, cap;
};

static void out_write(void *arg, const void *p, size_t n)
{
    struct out *o = arg;
    if (o->len + n + 1 > o->cap) {
        o->cap = (o->len + n + 1) * 2;
        o->p = realloc(o->p, o->cap);
        if (!o->p)
            abort();
    }
    memcpy(o->p + o->len, p, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static void out_str(struct out *o, const char *s)
{
    out_write(o, s, strlen(s));
}

static struct resp_limits small_limits(void)
{
    struct resp_limits l;
    resp_limits_request(&l);
    return l;
}

/* Feeds in[0..len) in pieces: first `split` bytes, then the rest (split 0:
 * whole; SIZE_MAX: byte by byte). Returns every decoded value re-encoded, one
 * after the other, then "|MORE" when a value was left incomplete or
 * "|ERR:<why>" on an error. *values: how many decoded. */
static char *decode(const struct resp_limits *lim, const char *in, size_t len, size_t split, int *values)
{
    struct resp_decoder d;
    struct out o = {0};
    int nv = 0;
    bool err = false;

    if (resp_decoder_init(&d, lim) < 0)
        abort();
    size_t pos = 0;
    while (pos < len && !err) {
        size_t piece = split == SIZE_MAX ? 1 : (pos == 0 && split ? split : len - pos);
        if (piece > len - pos)
            piece = len - pos;
        const uint8_t *p = (const uint8_t *)in + pos;
        size_t left = piece;
        while (left > 0) {
            size_t used;
            struct resp_value *v;
            enum resp_result r = resp_decode(&d, p, left, &used, &v);
            if (used > left) {
                out_str(&o, "|USED>LEN");
                err = true;
                break;
            }
            p += used;
            left -= used;
            if (r == RESP_ERR) {
                out_str(&o, "|ERR:");
                out_str(&o, d.error ? d.error : "?");
                err = true;
                break;
            }
            if (r == RESP_DONE) {
                resp_encode(v, out_write, &o);
                resp_value_free(v);
                nv++;
            } else if (left != 0) {
                /* MORE must take everything */
                out_str(&o, "|MORE-LEFT-BYTES");
                err = true;
                break;
            }
        }
        pos += piece;
    }
    if (!err && resp_decoder_buffered(&d) > 0)
        out_str(&o, "|MORE");
    /* a dead decoder stays dead */
    if (err) {
        size_t used;
        struct resp_value *v;
        if (resp_decode(&d, (const uint8_t *)"+OK\r\n", 5, &used, &v) != RESP_ERR)
            out_str(&o, "|REVIVED");
    }
    resp_decoder_fini(&d);
    if (values)
        *values = nv;
    if (!o.p)
        out_str(&o, "");
    return o.p;
}

/* in decodes to want (re-encoded) whole, at every split point and byte by byte. */
static void check(const struct resp_limits *lim, const char *in, size_t len, const char *want, const char *name)
{
    char *got = decode(lim, in, len, 0, NULL);
    is_str(got, want, "%s: whole", name);
    free(got);
    size_t bad = 0;
    char first[256] = "";
    for (size_t i = 1; i < len; i++) {
        got = decode(lim, in, len, i, NULL);
        if (strcmp(got, want) != 0 && !bad++)
            snprintf(first, sizeof(first), "split at %zu: %.200s", i, got);
        free(got);
    }
    got = decode(lim, in, len, SIZE_MAX, NULL);
    if (strcmp(got, want) != 0 && !bad++)
        snprintf(first, sizeof(first), "byte by byte: %.200s", got);
    free(got);
    ok(bad == 0, "%s: the same at each of its %zu split points and byte by byte", name, len - 1);
    if (bad)
        printf("#   %s\n", first);
}

#define CHECK(in, want, name) check(&lim, in, sizeof(in) - 1, want, name)

static void test_types(void)
{
    struct resp_limits lim = small_limits();

    CHECK("+OK\r\n", "+OK\r\n", "simple string");
    CHECK("+\r\n", "+\r\n", "empty simple string");
    CHECK("-ERR unknown command 'foo'\r\n", "-ERR unknown command 'foo'\r\n", "error");
    CHECK(":0\r\n", ":0\r\n", "integer 0");
    CHECK(":-42\r\n", ":-42\r\n", "negative integer");
    CHECK(":9223372036854775807\r\n", ":9223372036854775807\r\n", "INT64_MAX");
    CHECK(":-9223372036854775808\r\n", ":-9223372036854775808\r\n", "INT64_MIN");
    CHECK("$5\r\nhello\r\n", "$5\r\nhello\r\n", "bulk string");
    CHECK("$0\r\n\r\n", "$0\r\n\r\n", "empty bulk string");
    CHECK("$-1\r\n", "$-1\r\n", "null bulk string");
    CHECK("$8\r\na\r\nb\0c\r\n\r\n", "$8\r\na\r\nb\0c\r\n\r\n", "binary bulk string with CRLF and NUL inside");
    CHECK("*0\r\n", "*0\r\n", "empty array");
    CHECK("*-1\r\n", "*-1\r\n", "null array");
    CHECK("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n", "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n",
          "command array");
    CHECK("*2\r\n*3\r\n:1\r\n$-1\r\n+a\r\n*2\r\n*0\r\n*-1\r\n",
          "*2\r\n*3\r\n:1\r\n$-1\r\n+a\r\n*2\r\n*0\r\n*-1\r\n", "nested arrays with nulls");
    CHECK("*4\r\n:1\r\n-E\r\n$1\r\nx\r\n*1\r\n*1\r\n+deep\r\n", "*4\r\n:1\r\n-E\r\n$1\r\nx\r\n*1\r\n*1\r\n+deep\r\n",
          "mixed array");

    /* several values in one buffer: all come out, in order */
    int n = 0;
    const char pipe[] = "+OK\r\n:1\r\n$1\r\na\r\n*1\r\n$4\r\nPING\r\n-ERR x\r\n";
    char *got = decode(&lim, pipe, sizeof(pipe) - 1, 0, &n);
    is_str(got, pipe, "pipelined values re-encode as they came");
    is_int(n, 5, "five pipelined values");
    free(got);
    CHECK("+OK\r\n:1\r\n$1\r\na\r\n*1\r\n$4\r\nPING\r\n-ERR x\r\n", pipe, "pipelined values");

    /* a value cut short is waited for */
    got = decode(&lim, "*2\r\n$3\r\nGET\r\n$1\r\n", 18, 0, &n);
    is_str(got, "|MORE", "a cut array waits for more");
    is_int(n, 0, "nothing decoded from a cut array");
    free(got);
}

static void test_inline(void)
{
    struct resp_limits lim = small_limits();

    CHECK("PING\r\n", "*1\r\n$4\r\nPING\r\n", "inline PING");
    CHECK("GET  key\t x\n", "*3\r\n$3\r\nGET\r\n$3\r\nkey\r\n$1\r\nx\r\n", "inline with blanks, LF only");
    CHECK("\r\n\r\nPING\r\n", "*1\r\n$4\r\nPING\r\n", "empty inline lines are skipped");
    CHECK("SET a 1\r\n*1\r\n$4\r\nPING\r\nGET a\r\n",
          "*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n",
          "inline and RESP mixed");
    lim.inline_commands = false;
    CHECK("PING\r\n", "|ERR:bad type byte", "inline refused in replies");
    /* inside an array a non-type byte is always an error */
    lim.inline_commands = true;
    CHECK("*1\r\nPING\r\n", "|ERR:bad type byte", "inline inside an array");
}

static void test_errors(void)
{
    struct resp_limits lim = small_limits();

    CHECK(":12a\r\n", "|ERR:bad integer", "integer with a letter");
    CHECK(":\r\n", "|ERR:bad integer", "empty integer");
    CHECK(":+1\r\n", "|ERR:bad integer", "integer with +");
    CHECK(":9223372036854775808\r\n", "|ERR:bad integer", "integer over INT64_MAX");
    CHECK(":-9223372036854775809\r\n", "|ERR:bad integer", "integer under INT64_MIN");
    CHECK(":1234567890123456789012345\r\n", "|ERR:bad length or integer line", "integer line too long");
    CHECK("$-2\r\n", "|ERR:bad bulk string length", "bulk length -2");
    CHECK("$x\r\n", "|ERR:bad bulk string length", "bulk length not a number");
    CHECK("$3\r\nabcd\r\n", "|ERR:bulk string not followed by CRLF", "bulk string longer than announced");
    CHECK("$3\r\nab\r\n", "|ERR:bulk string not followed by CRLF", "bulk string shorter than announced");
    CHECK("$3\r\nabc\rX", "|ERR:bulk string not followed by CRLF", "bulk string CR without LF");
    CHECK("*-2\r\n", "|ERR:bad array length", "array length -2");
    CHECK("+OK\rX", "|ERR:CR without LF", "CR without LF");
    CHECK("+O\nK\r\n", "|ERR:LF without CR", "bare LF in a simple string");
    lim.inline_commands = false;
    CHECK("%1\r\n", "|ERR:bad type byte", "RESP3 map refused in a reply");
    lim.inline_commands = true;
    CHECK("*1\r\n_\r\n", "|ERR:bad type byte", "RESP3 null inside an array");
    /* what came before the error was delivered */
    CHECK("+OK\r\n:x\r\n", "+OK\r\n|ERR:bad integer", "a good value, then a bad one");

    /* limits */
    lim.max_bulk = 10;
    CHECK("$11\r\n", "|ERR:bulk string too long", "bulk string over max_bulk");
    CHECK("$10\r\n0123456789\r\n", "$10\r\n0123456789\r\n", "bulk string at max_bulk");
    lim = small_limits();
    lim.max_elems = 3;
    CHECK("*4\r\n", "|ERR:array too long", "array over max_elems");
    CHECK("A B C D\r\n", "|ERR:array too long", "inline command over max_elems");
    lim = small_limits();
    lim.max_depth = 2;
    CHECK("*1\r\n*1\r\n:1\r\n", "*1\r\n*1\r\n:1\r\n", "arrays nested at max_depth");
    CHECK("*1\r\n*1\r\n*1\r\n:1\r\n", "|ERR:arrays nested too deep", "arrays nested over max_depth");
    CHECK("*1\r\n*1\r\n*0\r\n", "*1\r\n*1\r\n*0\r\n", "an empty array does not nest");
    lim = small_limits();
    lim.max_line = 8;
    CHECK("+12345678\r\n", "+12345678\r\n", "simple string at max_line");
    CHECK("+123456789\r\n", "|ERR:line too long", "simple string over max_line");
    CHECK("-123456789\r\n", "|ERR:line too long", "error over max_line");
    CHECK("GET 12345\r\n", "|ERR:inline command too long", "inline command over max_line");
    lim = small_limits();
    lim.max_mem = 1000;
    CHECK("$2000\r\n", "|ERR:value too large", "a bulk string that cannot fit max_mem, at its header");
    char big[1300];
    memcpy(big, "*2\r\n$600\r\n", 10);
    memset(big + 10, 'x', 600);
    memcpy(big + 610, "\r\n$600\r\n", 8);
    char *got = decode(&lim, big, 618, 0, NULL);
    is_str(got, "|ERR:value too large", "the second bulk string of an array past max_mem");
    free(got);
    CHECK("*100\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n"
          ":1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n",
          "|ERR:value too large", "many small elements past max_mem");
}

/* Sizes announced by a peer cost nothing until the bytes come. */
static void test_lazy_allocation(void)
{
    struct resp_limits lim;
    struct resp_decoder d;
    size_t used;
    struct resp_value *v;

    resp_limits_request(&lim);
    resp_decoder_init(&d, &lim);
    const char *hdr = "$536870912\r\nabcdefghij";
    is_int(resp_decode(&d, (const uint8_t *)hdr, strlen(hdr), &used, &v), RESP_MORE, "512 MiB bulk: more");
    ok(resp_decoder_buffered(&d) < 64 * 1024, "512 MiB announced, %zu bytes held", resp_decoder_buffered(&d));
    resp_decoder_fini(&d);

    resp_decoder_init(&d, &lim);
    const char *arr = "*1048576\r\n:1\r\n";
    is_int(resp_decode(&d, (const uint8_t *)arr, strlen(arr), &used, &v), RESP_MORE, "1M-element array: more");
    ok(resp_decoder_buffered(&d) < 4096, "1M elements announced, %zu bytes held", resp_decoder_buffered(&d));
    resp_decoder_fini(&d);

    resp_decoder_init(&d, &lim);
    const char *over = "*1048577\r\n";
    is_int(resp_decode(&d, (const uint8_t *)over, strlen(over), &used, &v), RESP_ERR, "over 1M elements: error");
    resp_decoder_fini(&d);
    resp_decoder_init(&d, &lim);
    const char *huge = "$536870913\r\n";
    is_int(resp_decode(&d, (const uint8_t *)huge, strlen(huge), &used, &v), RESP_ERR, "over 512 MiB: error");
    resp_decoder_fini(&d);
}

static void test_encode(void)
{
    struct out o = {0};
    resp_encode_error("ERR bad\r\nthing", out_write, &o);
    is_str(o.p, "-ERR bad  thing\r\n", "CR/LF in an error become spaces");
    o.len = 0;
    resp_encode_integer(-7, out_write, &o);
    resp_encode_null(out_write, &o);
    resp_encode_array_header(2, out_write, &o);
    resp_encode_bulk("", 0, out_write, &o);
    resp_encode_simple("PONG", out_write, &o);
    is_str(o.p, ":-7\r\n$-1\r\n*2\r\n$0\r\n\r\n+PONG\r\n", "pieces");
    free(o.p);
    struct resp_value *v = resp_value_new_str(RESP_BULK, "a\0b", 3);
    o = (struct out){0};
    resp_encode(v, out_write, &o);
    ok(o.len == 9 && memcmp(o.p, "$3\r\na\0b\r\n", 9) == 0, "a made bulk string keeps its NUL");
    resp_value_free(v);
    free(o.p);
}

static void test_router(void)
{
    struct redis_route routes[3] = {
        {.prefix = "ab", .prefix_len = 2, .cluster = 1},
        {.prefix = "abc", .prefix_len = 3, .cluster = 2},
        {.prefix = "", .prefix_len = 0, .cluster = 3},   /* an empty prefix matches every key */
    };
    struct redis_route all = {.prefix = "", .cluster = 9};
    struct redis_router r = {.routes = routes, .nroutes = 2, .catch_all = &all};

    redis_router_sort(&r);
    is_int(redis_route_match(&r, "abc:users", 9)->cluster, 2, "the longest prefix wins (abc)");
    is_int(redis_route_match(&r, "ab:users", 8)->cluster, 1, "ab");
    is_int(redis_route_match(&r, "z:users", 7)->cluster, 9, "no prefix: the catch-all");
    is_int(redis_route_match(&r, "a", 1)->cluster, 9, "a key shorter than every prefix: the catch-all");
    is_int(redis_route_match(&r, "ABC:users", 9)->cluster, 9, "case matters by default");
    r.case_insensitive = true;
    is_int(redis_route_match(&r, "ABC:users", 9)->cluster, 2, "case_insensitive");
    r.catch_all = NULL;
    ok(redis_route_match(&r, "z", 1) == NULL, "no prefix and no catch-all: no route");
    r.nroutes = 3;
    redis_router_sort(&r);
    is_int(redis_route_match(&r, "z", 1)->cluster, 3, "an empty prefix takes what longer ones do not");
    is_int(redis_route_match(&r, "abcd", 4)->cluster, 2, "and longer ones still win");

    size_t off, n;
    redis_hash_part("{user1000}.following", 20, true, &off, &n);
    ok(off == 1 && n == 8, "hash tag {user1000}");
    redis_hash_part("foo{}{bar}", 10, true, &off, &n);
    ok(off == 0 && n == 10, "an empty first tag: the whole key");
    redis_hash_part("foo{{bar}}zap", 13, true, &off, &n);
    ok(off == 4 && n == 4, "{{bar}}: the tag is '{bar'");
    redis_hash_part("foo{bar", 7, true, &off, &n);
    ok(off == 0 && n == 7, "no closing brace: the whole key");
    redis_hash_part("{user1000}.following", 20, false, &off, &n);
    ok(off == 0 && n == 20, "without hashtagging: the whole key");

    /* libstdc++'s std::hash<std::string> (g++ 12, x86_64): Envoy's murmurHash2 with STD_HASH_SEED */
    static const struct { const char *k; unsigned long long h; } vec[] = {
        {"", 0x553e93901e462a6eull},
        {"a", 0x454ddee488c1ed6bull},
        {"foo", 0x85a8e535edf11e5aull},
        {"user1000", 0x5d5fd8f8df8ea222ull},
        {"{user1000}.following", 0x9f19c972d202e649ull},
        {"abcdefgh", 0x783db3e38db898bbull},
        {"abcdefghi", 0xb4ec9257851c8aafull},
        {"0123456789abcdef0123", 0xec4b61c29f6a1075ull},
    };
    for (size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++)
        ok(redis_key_hash(vec[i].k, strlen(vec[i].k), false) == vec[i].h, "hash of '%s' is std::hash's",
           vec[i].k);
    ok(redis_key_hash("{user1000}.following", 20, true) == 0x5d5fd8f8df8ea222ull &&
           redis_key_hash("{user1000}.followers", 20, true) == redis_key_hash("user1000", 8, false),
       "with hashtagging, keys with the same tag hash as the tag");
}

static void test_commands(void)
{
    size_t n = redis_cmd_count(), unsorted = 0, idx = 0;
    for (size_t i = 1; i < n; i++)
        if (strcmp(redis_cmd_at(i - 1)->name, redis_cmd_at(i)->name) >= 0)
            unsorted++;
    is_int(unsorted, 0, "the command table is sorted (binary search)");
    ok(n > 100, "%zu commands", n);
    const struct redis_cmd *c = redis_cmd_lookup("GeT", 3, &idx);
    ok(c && c->kind == REDIS_CMD_SIMPLE && !c->write && strcmp(redis_cmd_at(idx)->name, "get") == 0,
       "GeT: a read sent whole");
    c = redis_cmd_lookup("MSET", 4, NULL);
    ok(c && c->kind == REDIS_CMD_MSET && c->write, "MSET is split");
    ok(redis_cmd_lookup("mget", 4, NULL)->kind == REDIS_CMD_MGET, "MGET is split");
    ok(redis_cmd_lookup("unlink", 6, NULL)->kind == REDIS_CMD_SUM, "UNLINK sums");
    ok(redis_cmd_lookup("EVALSHA", 7, NULL)->kind == REDIS_CMD_EVAL, "EVALSHA by its first key");
    ok(redis_cmd_lookup("auth", 4, NULL)->kind == REDIS_CMD_AUTH, "AUTH is the proxy's");
    static const char *const refused[] = {"multi", "exec", "watch", "subscribe", "keys", "scan", "client", "select",
                                          "hello", "blpop", "flushall", "info", "config", "monitor"};
    size_t found = 0;
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        found += redis_cmd_lookup(refused[i], strlen(refused[i]), NULL) != NULL;
    is_int(found, 0, "connection-state, blocking and keyless commands are not in the table");
    ok(!redis_cmd_lookup("get\0", 4, NULL), "a NUL in a name matches nothing");
    ok(!redis_cmd_lookup("getgetgetgetgetgetgetgetget", 27, NULL), "a long name matches nothing");
    ok(!redis_cmd_lookup("", 0, NULL), "an empty name matches nothing");
}

int main(void)
{
    test_types();
    test_inline();
    test_errors();
    test_lazy_allocation();
    test_encode();
    test_router();
    test_commands();
    return done_testing();
}
