/* redis_proxy: the RESP2 codec (see codec.h). The decoder is a state machine
 * over whatever bytes arrive: it keeps the line it is reading, the bulk
 * string it is filling and a stack of the arrays being filled, and builds the
 * value in place, so nothing is re-parsed when more bytes come. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

enum {
    D_START = 0,    /* at the type byte of a value */
    D_LINE,         /* reading the rest of a +-:$* line, up to CR */
    D_LINE_LF,      /* the CR of that line seen: LF must follow */
    D_BULK,         /* reading a bulk string's bytes */
    D_BULK_CR,      /* its bytes read: CR must follow */
    D_BULK_LF,      /* then LF */
    D_INLINE,       /* reading an inline command, up to LF */
    D_DEAD,         /* a protocol error happened */
};

#define NUM_LINE_MAX 24          /* "-9223372036854775808" and then some */
#define BULK_FIRST_ALLOC 16384   /* a bulk string's buffer starts at most this big and grows as bytes come */
#define ELEMS_FIRST_ALLOC 8

void resp_limits_request(struct resp_limits *l)
{
    /* Redis' own limits for what a client may send: proto-max-bulk-len
     * (512 MiB), 64 KiB inline commands; herald adds the element count (a
     * million keys in one DEL is already more than any client sends) and the
     * memory one request may hold (what a 512 MiB SET needs, with room). */
    l->max_bulk = 512u << 20;
    l->max_elems = 1u << 20;
    l->max_depth = 8;   /* requests are flat: deeper ones are refused by the splitter, not the codec */
    l->max_line = 64u << 10;
    l->max_mem = 640u << 20;
    l->inline_commands = true;
}

void resp_limits_reply(struct resp_limits *l)
{
    resp_limits_request(l);
    l->max_elems = 16u << 20;   /* HGETALL / LRANGE of a big key */
    l->max_depth = 32;          /* XREAD, XINFO, COMMAND nest a few levels */
    l->max_mem = 1u << 30;
    l->inline_commands = false;
}

int resp_decoder_init(struct resp_decoder *d, const struct resp_limits *lim)
{
    memset(d, 0, sizeof(*d));
    d->lim = *lim;
    if (d->lim.max_depth == 0)
        d->lim.max_depth = 1;
    d->stack = calloc(d->lim.max_depth, sizeof(*d->stack));
    if (!d->stack)
        return -1;
    d->state = D_START;
    return 0;
}

static void free_contents(struct resp_value *v)
{
    if (v->type == RESP_ARRAY) {
        for (size_t i = 0; i < v->len; i++)
            free_contents(&v->elems[i]);
        free(v->elems);
    } else {
        free(v->str);
    }
}

void resp_value_free(struct resp_value *v)
{
    if (!v)
        return;
    free_contents(v);
    free(v);
}

static void reset(struct resp_decoder *d)
{
    d->root = NULL;
    d->bulk = NULL;
    d->depth = 0;
    d->mem = 0;
    d->line_len = 0;
    d->state = D_START;
}

void resp_decoder_fini(struct resp_decoder *d)
{
    resp_value_free(d->root);
    d->root = NULL;
    free(d->line);
    free(d->stack);
    d->line = NULL;
    d->stack = NULL;
}

size_t resp_decoder_buffered(const struct resp_decoder *d)
{
    return d->mem + d->line_len;
}

static enum resp_result fail(struct resp_decoder *d, const char *why)
{
    d->error = why;
    d->state = D_DEAD;
    d->line_len = 0;
    resp_value_free(d->root);
    d->root = NULL;
    d->bulk = NULL;
    d->depth = 0;
    return RESP_ERR;
}

static bool charge(struct resp_decoder *d, size_t n)
{
    if (n > d->lim.max_mem || d->mem > d->lim.max_mem - n)
        return false;
    d->mem += n;
    return true;
}

/* A zeroed slot for the next value: the root, or the next element of the
 * innermost array. NULL (with d->error) when a limit or memory runs out. */
static struct resp_value *new_slot(struct resp_decoder *d)
{
    if (d->depth == 0) {
        if (!charge(d, sizeof(struct resp_value))) {
            d->error = "value too large";
            return NULL;
        }
        d->root = calloc(1, sizeof(*d->root));
        if (!d->root)
            d->error = "out of memory";
        return d->root;
    }
    struct resp_frame *f = &d->stack[d->depth - 1];
    struct resp_value *a = f->v;
    if (a->len == a->cap) {
        /* grow as elements arrive, never to more than the array announced */
        size_t want = a->len + f->left;
        size_t cap = a->cap ? a->cap * 2 : ELEMS_FIRST_ALLOC;
        if (cap > want)
            cap = want;
        if (!charge(d, (cap - a->cap) * sizeof(struct resp_value))) {
            d->error = "value too large";
            return NULL;
        }
        struct resp_value *e = realloc(a->elems, cap * sizeof(*e));
        if (!e) {
            d->error = "out of memory";
            return NULL;
        }
        a->elems = e;
        a->cap = cap;
    }
    struct resp_value *v = &a->elems[a->len++];
    memset(v, 0, sizeof(*v));
    return v;
}

/* The value just filled is complete: count it in the arrays around it.
 * true when the root is complete. */
static bool complete(struct resp_decoder *d)
{
    while (d->depth > 0) {
        struct resp_frame *f = &d->stack[d->depth - 1];
        if (--f->left > 0)
            return false;
        d->depth--;   /* that array is complete: an element of the one below */
    }
    return true;
}

static bool line_add(struct resp_decoder *d, const uint8_t *p, size_t n, size_t max)
{
    if (n > max || d->line_len > max - n)
        return false;
    if (d->line_len + n + 1 > d->line_cap) {
        size_t cap = d->line_cap ? d->line_cap : 64;
        while (cap < d->line_len + n + 1)
            cap *= 2;
        char *l = realloc(d->line, cap);
        if (!l)
            return false;
        d->line = l;
        d->line_cap = cap;
    }
    memcpy(d->line + d->line_len, p, n);
    d->line_len += n;
    d->line[d->line_len] = '\0';
    return true;
}

/* A decimal int64 as RESP writes it: an optional '-', then digits. */
static bool parse_int(const char *s, size_t n, int64_t *out)
{
    bool neg = n > 0 && s[0] == '-';
    size_t i = neg ? 1 : 0;
    uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;

    if (i == n)
        return false;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned dgt = (unsigned)(s[i] - '0');
        if (v > (lim - dgt) / 10)
            return false;
        v = v * 10 + dgt;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

static struct resp_value *new_string(struct resp_decoder *d, enum resp_type t, const char *p, size_t n)
{
    struct resp_value *v = new_slot(d);
    if (!v)
        return NULL;
    v->type = t;
    if (!charge(d, n + 1)) {
        d->error = "value too large";
        return NULL;
    }
    v->str = malloc(n + 1);
    if (!v->str) {
        d->error = "out of memory";
        return NULL;
    }
    memcpy(v->str, p, n);
    v->str[n] = '\0';
    v->len = n;
    v->cap = n + 1;
    return v;
}

/* A whole +-:$* line is in d->line (without CRLF): start or finish its value.
 * Returns RESP_DONE when the root is complete, RESP_MORE to go on, RESP_ERR. */
static enum resp_result line_done(struct resp_decoder *d)
{
    const char *l = d->line ? d->line : "";
    size_t n = d->line_len;
    int64_t num = 0;
    struct resp_value *v;

    d->line_len = 0;
    d->state = D_START;
    switch (d->type) {
    case '+':
    case '-':
        if (!new_string(d, d->type == '+' ? RESP_SIMPLE : RESP_ERROR, l, n))
            return fail(d, d->error);
        return complete(d) ? RESP_DONE : RESP_MORE;
    case ':':
        if (!parse_int(l, n, &num))
            return fail(d, "bad integer");
        if (!(v = new_slot(d)))
            return fail(d, d->error);
        v->type = RESP_INTEGER;
        v->integer = num;
        return complete(d) ? RESP_DONE : RESP_MORE;
    case '$':
        if (!parse_int(l, n, &num) || num < -1)
            return fail(d, "bad bulk string length");
        if ((uint64_t)(num < 0 ? 0 : num) > d->lim.max_bulk)
            return fail(d, "bulk string too long");
        if (!(v = new_slot(d)))
            return fail(d, d->error);
        if (num < 0) {
            v->type = RESP_NULL;
            return complete(d) ? RESP_DONE : RESP_MORE;
        }
        v->type = RESP_BULK;
        v->len = (size_t)num;   /* announced; the bytes come in D_BULK (str holds what arrived) */
        if (v->len + 1 > d->lim.max_mem - d->mem)
            return fail(d, "value too large");   /* it could never fit: nothing is allocated for it */
        {
            size_t first = v->len < BULK_FIRST_ALLOC ? v->len + 1 : BULK_FIRST_ALLOC;
            if (!charge(d, first))
                return fail(d, "value too large");
            if (!(v->str = malloc(first)))
                return fail(d, "out of memory");
            v->str[0] = '\0';
            v->cap = first;
            v->integer = 0;     /* bytes received so far, while filling */
        }
        d->bulk = v;
        d->state = v->len ? D_BULK : D_BULK_CR;
        return RESP_MORE;
    case '*':
        if (!parse_int(l, n, &num) || num < -1)
            return fail(d, "bad array length");
        if ((uint64_t)(num < 0 ? 0 : num) > d->lim.max_elems)
            return fail(d, "array too long");
        if (num > 0 && d->depth >= d->lim.max_depth)
            return fail(d, "arrays nested too deep");
        if (!(v = new_slot(d)))
            return fail(d, d->error);
        v->type = num < 0 ? RESP_NULL_ARRAY : RESP_ARRAY;
        if (num <= 0)
            return complete(d) ? RESP_DONE : RESP_MORE;
        d->stack[d->depth].v = v;
        d->stack[d->depth].left = (size_t)num;
        d->depth++;
        return RESP_MORE;
    default:
        return fail(d, "bad type byte");
    }
}

/* An inline command line (without its line end): split on blanks into an
 * array of bulk strings. Returns RESP_DONE, RESP_MORE (an empty line, which
 * Redis ignores too) or RESP_ERR. */
static enum resp_result inline_done(struct resp_decoder *d)
{
    const char *l = d->line ? d->line : "";
    size_t n = d->line_len, count = 0;

    d->line_len = 0;
    d->state = D_START;
    for (size_t i = 0; i < n;) {
        while (i < n && (l[i] == ' ' || l[i] == '\t'))
            i++;
        if (i < n)
            count++;
        while (i < n && l[i] != ' ' && l[i] != '\t')
            i++;
    }
    if (count == 0)
        return RESP_MORE;
    if (count > d->lim.max_elems)
        return fail(d, "array too long");
    struct resp_value *a = new_slot(d);
    if (!a)
        return fail(d, d->error);
    a->type = RESP_ARRAY;
    d->stack[0].v = a;
    d->stack[0].left = count;
    d->depth = 1;
    for (size_t i = 0; i < n;) {
        while (i < n && (l[i] == ' ' || l[i] == '\t'))
            i++;
        size_t start = i;
        while (i < n && l[i] != ' ' && l[i] != '\t')
            i++;
        if (i > start) {
            if (!new_string(d, RESP_BULK, l + start, i - start))
                return fail(d, d->error);
            complete(d);
        }
    }
    return RESP_DONE;
}

static bool is_type(uint8_t c)
{
    return c == '+' || c == '-' || c == ':' || c == '$' || c == '*';
}

enum resp_result resp_decode(struct resp_decoder *d, const uint8_t *p, size_t len, size_t *used,
                             struct resp_value **out)
{
    size_t i = 0;
    enum resp_result r = RESP_MORE;

    *out = NULL;
    *used = 0;
    if (d->state == D_DEAD)
        return RESP_ERR;
    while (i < len) {
        switch (d->state) {
        case D_START:
            if (is_type(p[i])) {
                d->type = (char)p[i++];
                d->state = D_LINE;
            } else if (d->depth == 0 && d->lim.inline_commands) {
                d->state = D_INLINE;
            } else {
                *used = i;
                return fail(d, "bad type byte");
            }
            break;
        case D_LINE: {
            size_t max = (d->type == '+' || d->type == '-') ? d->lim.max_line : NUM_LINE_MAX;
            const uint8_t *cr = memchr(p + i, '\r', len - i);
            size_t end = cr ? (size_t)(cr - p) : len;
            if (memchr(p + i, '\n', end - i)) {
                *used = i;
                return fail(d, "LF without CR");
            }
            if (!line_add(d, p + i, end - i, max)) {
                *used = i;
                return fail(d, max == NUM_LINE_MAX ? "bad length or integer line" : "line too long");
            }
            i = end;
            if (cr) {
                i++;
                d->state = D_LINE_LF;
            }
            break;
        }
        case D_LINE_LF:
            if (p[i++] != '\n') {
                *used = i;
                return fail(d, "CR without LF");
            }
            r = line_done(d);
            break;
        case D_BULK: {
            struct resp_value *v = d->bulk;
            size_t got = (size_t)v->integer, want = v->len - got, take = len - i < want ? len - i : want;
            if (got + take + 1 > v->cap) {
                size_t cap = v->cap * 2;
                while (cap < got + take + 1)
                    cap *= 2;
                if (cap > v->len + 1)
                    cap = v->len + 1;
                if (!charge(d, cap - v->cap)) {
                    *used = i;
                    return fail(d, "value too large");
                }
                char *s = realloc(v->str, cap);
                if (!s) {
                    *used = i;
                    return fail(d, "out of memory");
                }
                v->str = s;
                v->cap = cap;
            }
            memcpy(v->str + got, p + i, take);
            i += take;
            v->integer = (int64_t)(got + take);
            if (got + take == v->len) {
                v->str[v->len] = '\0';
                d->state = D_BULK_CR;
            }
            break;
        }
        case D_BULK_CR:
            if (p[i++] != '\r') {
                *used = i;
                return fail(d, "bulk string not followed by CRLF");
            }
            d->state = D_BULK_LF;
            break;
        case D_BULK_LF:
            if (p[i++] != '\n') {
                *used = i;
                return fail(d, "bulk string not followed by CRLF");
            }
            d->bulk->integer = 0;
            d->bulk = NULL;
            d->state = D_START;
            r = complete(d) ? RESP_DONE : RESP_MORE;
            break;
        case D_INLINE: {
            const uint8_t *lf = memchr(p + i, '\n', len - i);
            size_t end = lf ? (size_t)(lf - p) : len;
            if (!line_add(d, p + i, end - i, d->lim.max_line)) {
                *used = i;
                return fail(d, "inline command too long");
            }
            i = end;
            if (lf) {
                i++;
                if (d->line_len && d->line[d->line_len - 1] == '\r')
                    d->line[--d->line_len] = '\0';
                r = inline_done(d);
            }
            break;
        }
        default:
            *used = i;
            return RESP_ERR;
        }
        if (r == RESP_ERR) {
            *used = i;
            return r;
        }
        if (r == RESP_DONE) {
            *out = d->root;
            reset(d);
            *used = i;
            return RESP_DONE;
        }
    }
    *used = i;
    return RESP_MORE;
}

struct resp_value *resp_value_new_str(enum resp_type type, const char *p, size_t len)
{
    struct resp_value *v = calloc(1, sizeof(*v));
    if (!v)
        return NULL;
    v->type = type;
    if (type == RESP_SIMPLE || type == RESP_ERROR || type == RESP_BULK) {
        v->str = malloc(len + 1);
        if (!v->str) {
            free(v);
            return NULL;
        }
        if (len)
            memcpy(v->str, p, len);
        v->str[len] = '\0';
        v->len = len;
        v->cap = len + 1;
    }
    return v;
}

struct resp_value *resp_value_new_int(int64_t n)
{
    struct resp_value *v = calloc(1, sizeof(*v));
    if (v) {
        v->type = RESP_INTEGER;
        v->integer = n;
    }
    return v;
}

/* ---------------------------------------------------------------- encoding */

static void header(char type, long long n, resp_write_fn w, void *arg)
{
    char b[32];
    int k = snprintf(b, sizeof(b), "%c%lld\r\n", type, n);
    w(arg, b, (size_t)k);
}

void resp_encode_array_header(size_t n, resp_write_fn w, void *arg)
{
    header('*', (long long)n, w, arg);
}

void resp_encode_bulk(const void *p, size_t len, resp_write_fn w, void *arg)
{
    header('$', (long long)len, w, arg);
    if (len)
        w(arg, p, len);
    w(arg, "\r\n", 2);
}

void resp_encode_integer(int64_t n, resp_write_fn w, void *arg)
{
    header(':', (long long)n, w, arg);
}

void resp_encode_null(resp_write_fn w, void *arg)
{
    w(arg, "$-1\r\n", 5);
}

static void line(char type, const char *s, size_t n, resp_write_fn w, void *arg)
{
    char t = type;
    w(arg, &t, 1);
    /* a line cannot hold CR or LF: they would end it early */
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r' || s[i] == '\n') {
            if (i > start)
                w(arg, s + start, i - start);
            w(arg, " ", 1);
            start = i + 1;
        }
    }
    if (n > start)
        w(arg, s + start, n - start);
    w(arg, "\r\n", 2);
}

void resp_encode_simple(const char *s, resp_write_fn w, void *arg)
{
    line('+', s, strlen(s), w, arg);
}

void resp_encode_error(const char *s, resp_write_fn w, void *arg)
{
    line('-', s, strlen(s), w, arg);
}

void resp_encode(const struct resp_value *v, resp_write_fn w, void *arg)
{
    switch (v->type) {
    case RESP_SIMPLE:
        line('+', v->str ? v->str : "", v->len, w, arg);
        break;
    case RESP_ERROR:
        line('-', v->str ? v->str : "", v->len, w, arg);
        break;
    case RESP_INTEGER:
        resp_encode_integer(v->integer, w, arg);
        break;
    case RESP_BULK:
        resp_encode_bulk(v->str, v->len, w, arg);
        break;
    case RESP_NULL:
        resp_encode_null(w, arg);
        break;
    case RESP_ARRAY:
        resp_encode_array_header(v->len, w, arg);
        for (size_t i = 0; i < v->len; i++)
            resp_encode(&v->elems[i], w, arg);
        break;
    case RESP_NULL_ARRAY:
        w(arg, "*-1\r\n", 5);
        break;
    }
}

const char *resp_type_name(enum resp_type t)
{
    switch (t) {
    case RESP_SIMPLE: return "simple string";
    case RESP_ERROR: return "error";
    case RESP_INTEGER: return "integer";
    case RESP_BULK: return "bulk string";
    case RESP_NULL: return "null";
    case RESP_ARRAY: return "array";
    case RESP_NULL_ARRAY: return "null array";
    }
    return "?";
}
