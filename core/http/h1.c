/* HTTP/1.x codec on top of http-parser 2.9.
 *
 * http-parser (as Debian builds it, non-strict) accepts bare LF, bare CR,
 * spaces in header names, obsolete line folding and sloppy chunk framing.
 * Those are request-smuggling shapes, so every byte of a head, of chunked
 * framing and of trailers first goes through a small validator (struct scan
 * below); http-parser only ever sees bytes the validator accepted. The
 * validator stops at the end of a head so that the framing decided by the
 * headers (chunked or not) is known before the body is checked. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>

#include "common.h"
#include "http/h1.h"
#include "http/headers.h"
#include "log.h"

#define DEFAULT_HEADERS_KB 60
#define DEFAULT_HEADERS_COUNT 100

/* ------------------------------------------------------------ validator */
enum scan_state {
    SC_PRE,          /* between messages: CRLF pairs tolerated */
    SC_PRE_LF,
    SC_FIRST,        /* request/status line */
    SC_FIRST_LF,
    SC_LINE_START,   /* start of a header (or trailer) line */
    SC_NAME,
    SC_VALUE,
    SC_LINE_LF,
    SC_END_LF,       /* CR of the empty line seen */
    SC_HEAD_DONE,    /* head complete: stop, the framing decides what follows */
    SC_BODY,         /* length- or close-delimited body: not checked */
    SC_CHUNK_SIZE0,  /* first hex digit of a chunk size */
    SC_CHUNK_SIZE,
    SC_CHUNK_EXT,
    SC_CHUNK_SIZE_LF,
    SC_CHUNK_DATA,
    SC_CHUNK_DATA_CR,
    SC_CHUNK_DATA_LF,
    SC_MSG_DONE,     /* end of the trailers of a chunked message */
};

struct scan {
    enum scan_state st;
    bool trailers;       /* LINE_START.. belong to trailers: end at SC_MSG_DONE */
    unsigned digits;     /* chunk size digits */
    uint64_t chunk_left; /* SC_CHUNK_DATA */
    uint64_t raw;        /* raw head bytes (guards whitespace padding) */
};

/* A header name or value as http-parser hands it over, maybe in pieces.
 * One that comes in one piece is read where it lies in the input (ref)
 * until the header is committed, or copied when execute() returns (the
 * input goes away then); pieces are gathered in buf. Either way as
 * received: the header map lower-cases names as it stores them. */
struct piece {
    char *buf;
    size_t len, cap;
    const char *ref;
};

struct h1_codec {
    http_parser p;
    enum h1_role role;
    uint32_t max_bytes, max_count;
    const struct h1_callbacks *cbs;
    void *arg;

    struct scan sc;
    /* message being parsed */
    struct herald_headers *hdrs; /* headers, then trailers */
    /* scratch for the pieces http-parser hands over; kept across messages */
    char *url;
    size_t url_len, url_cap;
    struct piece field, value;   /* the header being read */
    bool have_field, in_value;
    size_t head_bytes, nheaders;
    struct evbuffer *body;
    bool in_message, saw_te, close_delimited, chunked_body, has_trailers, headers_end_stream, informational;

    /* facts about the current message */
    bool http10, keep_alive, expect_continue, is_upgrade;

    /* client: methods of the requests sent, oldest first */
    uint8_t *expect;
    size_t nexpect, expect_cap, expect_head;

    /* control */
    bool paused, dead, upgraded, closed, in_dispatch, in_execute, freed, msg_done;
    int err_status;
    const char *err_details;
};

enum { EXP_OTHER = 0, EXP_HEAD = 1, EXP_CONNECT = 2 };

/* RFC 9110 token characters */
static const bool tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1,
    ['9'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1,
    ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
    ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1,
    ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
    ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
};

static inline bool is_tchar(unsigned char ch)
{
    return tchar[ch];
}

static bool is_ctl(unsigned char ch)
{
    return ch < 0x20 || ch == 0x7f;
}

/* Bytes a request/status line or a field value may hold as they are: all but
 * the controls (CR, LF and the rest), with HTAB allowed. */
static const bool field_ok[256] = {
#define F(c) [c] = ((c) >= 0x20 && (c) != 0x7f) || (c) == '\t'
#define F8(b) F(b), F(b + 1), F(b + 2), F(b + 3), F(b + 4), F(b + 5), F(b + 6), F(b + 7)
#define F64(b) F8(b), F8(b + 8), F8(b + 16), F8(b + 24), F8(b + 32), F8(b + 40), F8(b + 48), F8(b + 56)
    F64(0), F64(64), F64(128), F64(192),
#undef F64
#undef F8
#undef F
};

/* Where the run of field_ok bytes from data[j] ends. Eight bytes at a
 * time while none is a control (below 0x20, or 0x7f): the word tests are
 * exact about whether such a byte is there, and the byte loop takes over
 * from the word that has one (HTAB is a control that field_ok accepts).
 * Values and request lines are most of a head's bytes. */
static inline size_t field_run_end(const unsigned char *data, size_t j, size_t len)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (j + 8 <= len) {
        uint64_t x, del;
        memcpy(&x, data + j, 8);
        del = x ^ (ones * 0x7f);
        if (((x - ones * 0x20) & ~x & highs) | ((del - ones) & ~del & highs))
            break;
        j += 8;
    }
    while (j < len && field_ok[data[j]])
        j++;
    return j;
}

/* Where the run of name (token) bytes from data[j] ends. */
static inline size_t name_run_end(const unsigned char *data, size_t j, size_t len)
{
    while (j < len && tchar[data[j]])
        j++;
    return j;
}

/* The run of bytes from data[i] that run_end accepts: lines and names are
 * checked a run at a time, not a state-machine step per byte. The head-size
 * guard counted data[i] already; the rest of the run is added here. */
#define SKIP_RUN(run_end)                                           \
    do {                                                            \
        size_t j_ = run_end(data, i + 1, len);                      \
        s->raw += j_ - i - 1;                                       \
        if (s->raw > max_raw) {                                     \
            *details = "http1.headers_too_large";                   \
            return -1;                                              \
        }                                                           \
        i = j_;                                                     \
    } while (0)

/* Validates data[0..len) from state *s. Returns how many bytes may be fed to
 * http-parser: all of them, or up to and including the byte that ended a
 * head (SC_HEAD_DONE) or a chunked message (SC_MSG_DONE). On a bad byte,
 * returns -1 with *details set. */
static ssize_t scan(struct scan *s, const unsigned char *data, size_t len, uint64_t max_raw,
                    const char **details)
{
    size_t i = 0;
    while (i < len) {
        unsigned char ch = data[i];
        bool in_head = s->st <= SC_END_LF;
        if (in_head && s->st != SC_PRE && s->st != SC_PRE_LF && ++s->raw > max_raw) {
            *details = "http1.headers_too_large";
            return -1;
        }
        switch (s->st) {
        case SC_PRE:
            if (ch == '\r')
                s->st = SC_PRE_LF;
            else if (ch == '\n')
                goto bare_lf;
            else {
                s->st = SC_FIRST;
                continue; /* check this byte as part of the first line */
            }
            break;
        case SC_PRE_LF:
            if (ch != '\n')
                goto bare_cr;
            s->st = SC_PRE;
            break;
        case SC_FIRST:
            if (field_ok[ch]) {
                SKIP_RUN(field_run_end);
                continue;
            }
            if (ch == '\r')
                s->st = SC_FIRST_LF;
            else if (ch == '\n')
                goto bare_lf;
            else
                goto bad_char;
            break;
        case SC_FIRST_LF:
            if (ch != '\n')
                goto bare_cr;
            s->st = SC_LINE_START;
            break;
        case SC_LINE_START:
            if (ch == '\r')
                s->st = SC_END_LF;
            else if (ch == '\n')
                goto bare_lf;
            else if (ch == ' ' || ch == '\t') {
                *details = "http1.obsolete_line_folding";
                return -1;
            } else if (is_tchar(ch))
                s->st = SC_NAME;
            else
                goto bad_name;
            break;
        case SC_NAME:
            if (is_tchar(ch)) {
                SKIP_RUN(name_run_end);
                continue;
            }
            if (ch == ':')
                s->st = SC_VALUE;
            else
                goto bad_name;
            break;
        case SC_VALUE:
            if (field_ok[ch]) {
                SKIP_RUN(field_run_end);
                continue;
            }
            if (ch == '\r')
                s->st = SC_LINE_LF;
            else if (ch == '\n')
                goto bare_lf;
            else
                goto bad_char;
            break;
        case SC_LINE_LF:
            if (ch != '\n')
                goto bare_cr;
            s->st = SC_LINE_START;
            break;
        case SC_END_LF:
            if (ch != '\n')
                goto bare_cr;
            s->st = s->trailers ? SC_MSG_DONE : SC_HEAD_DONE;
            return (ssize_t)i + 1;
        case SC_HEAD_DONE:
        case SC_MSG_DONE:
            return (ssize_t)i;
        case SC_BODY:
            return (ssize_t)len;
        case SC_CHUNK_SIZE0:
            if (!isxdigit(ch))
                goto bad_chunk;
            s->digits = 1;
            s->chunk_left = (uint64_t)(isdigit(ch) ? ch - '0' : (tolower(ch) - 'a' + 10));
            s->st = SC_CHUNK_SIZE;
            break;
        case SC_CHUNK_SIZE:
            if (isxdigit(ch)) {
                /* 15 digits keep http-parser clear of its overflow checks */
                if (++s->digits > 15)
                    goto bad_chunk;
                uint64_t d = (uint64_t)(isdigit(ch) ? ch - '0' : (tolower(ch) - 'a' + 10));
                s->chunk_left = s->chunk_left * 16 + d;
            } else if (ch == ';') {
                s->st = SC_CHUNK_EXT;
            } else if (ch == '\r') {
                s->st = SC_CHUNK_SIZE_LF;
            } else {
                goto bad_chunk;
            }
            break;
        case SC_CHUNK_EXT:
            if (ch == '\r')
                s->st = SC_CHUNK_SIZE_LF;
            else if (is_ctl(ch) && ch != '\t')
                goto bad_chunk;
            break;
        case SC_CHUNK_SIZE_LF:
            if (ch != '\n')
                goto bad_chunk;
            if (s->chunk_left == 0) {
                s->trailers = true;
                s->raw = 0;
                s->st = SC_LINE_START;
            } else {
                s->st = SC_CHUNK_DATA;
            }
            break;
        case SC_CHUNK_DATA: {
            uint64_t take = len - i < s->chunk_left ? len - i : s->chunk_left;
            s->chunk_left -= take;
            i += take;
            if (s->chunk_left == 0)
                s->st = SC_CHUNK_DATA_CR;
            continue;
        }
        case SC_CHUNK_DATA_CR:
            if (ch != '\r')
                goto bad_chunk;
            s->st = SC_CHUNK_DATA_LF;
            break;
        case SC_CHUNK_DATA_LF:
            if (ch != '\n')
                goto bad_chunk;
            s->st = SC_CHUNK_SIZE0;
            break;
        }
        i++;
    }
    return (ssize_t)len;

bare_lf:
    *details = "http1.bare_lf";
    return -1;
bare_cr:
    *details = "http1.bare_cr";
    return -1;
bad_char:
    *details = "http1.invalid_characters";
    return -1;
bad_name:
    *details = "http1.invalid_header_name";
    return -1;
bad_chunk:
    *details = "http1.invalid_chunk_size";
    return -1;
}

/* ------------------------------------------------------------ errors and callbacks */
static int fail_cb(struct h1_codec *c, int status, const char *details)
{
    if (!c->err_status) {
        c->err_status = status;
        c->err_details = details;
    }
    return -1;
}

static void report_error(struct h1_codec *c, int status, const char *details)
{
    if (c->dead)
        return;
    c->dead = true;
    if (c->cbs->on_error)
        c->cbs->on_error(c->arg, status, details);
}

/* A callback asked to stop (pause or free) while http-parser runs. */
static void stop_parser(struct h1_codec *c)
{
    if (c->in_execute)
        http_parser_pause(&c->p, 1);
}

static void reset_message(struct h1_codec *c)
{
    herald_headers_free(c->hdrs);
    c->hdrs = NULL;
    c->url_len = c->field.len = c->value.len = 0;
    c->field.ref = c->value.ref = NULL;
    c->have_field = c->in_value = false;
    c->head_bytes = c->nheaders = 0;
    c->has_trailers = false;
    evbuffer_drain(c->body, evbuffer_get_length(c->body));
}

static void append(char **buf, size_t *len, size_t *cap, const char *at, size_t n)
{
    if (*len + n + 1 > *cap) {
        *cap = (*len + n + 1) * 2 > 64 ? (*len + n + 1) * 2 : 64;
        *buf = xrealloc(*buf, *cap);
    }
    memcpy(*buf + *len, at, n);
    *len += n;
    (*buf)[*len] = '\0';
}

static int count_bytes(struct h1_codec *c, size_t n)
{
    c->head_bytes += n;
    if (c->head_bytes > c->max_bytes)
        return fail_cb(c, 431, "http1.headers_too_large");
    return 0;
}

/* What was read in place becomes a copy of ours. */
static void piece_own(struct piece *pc)
{
    if (!pc->ref)
        return;
    size_t n = pc->len;
    pc->len = 0;
    append(&pc->buf, &pc->len, &pc->cap, pc->ref, n);
    pc->ref = NULL;
}

static void piece_add(struct piece *pc, const char *at, size_t n)
{
    if (!pc->len && !pc->ref) {
        pc->ref = at;
        pc->len = n;
        return;
    }
    piece_own(pc);
    append(&pc->buf, &pc->len, &pc->cap, at, n);
}

static const char *piece_bytes(const struct piece *pc) { return pc->ref ? pc->ref : pc->buf; }

/* Whether the header name being read is lc (lower-case, n bytes). */
static bool field_is(const struct h1_codec *c, const char *lc, size_t n)
{
    return c->have_field && c->field.len == n && strncasecmp(piece_bytes(&c->field), lc, n) == 0;
}

static void commit_header(struct h1_codec *c)
{
    if (!c->have_field)
        return;
    const char *v = c->value.len ? piece_bytes(&c->value) : "";
    size_t vl = c->value.len;
    while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
        vl--;
    if (!c->hdrs)
        c->hdrs = herald_headers_new();
    /* the validator has passed every byte of the head (or of the trailers) */
    headers_add_received(c->hdrs, piece_bytes(&c->field), c->field.len, v, vl, true);
    c->field.len = c->value.len = 0;
    c->field.ref = c->value.ref = NULL;
    c->have_field = c->in_value = false;
}

static int cb_message_begin(http_parser *p)
{
    struct h1_codec *c = p->data;
    reset_message(c);
    c->in_message = true;
    c->msg_done = false;
    c->saw_te = false;
    c->chunked_body = c->headers_end_stream = c->informational = c->close_delimited = false;
    c->http10 = c->keep_alive = c->expect_continue = c->is_upgrade = false;
    if (c->cbs->on_message_begin)
        c->cbs->on_message_begin(c->arg);
    return 0;
}

static int cb_url(http_parser *p, const char *at, size_t n)
{
    struct h1_codec *c = p->data;
    append(&c->url, &c->url_len, &c->url_cap, at, n);
    return count_bytes(c, n);
}

static int cb_status(http_parser *p, const char *at, size_t n)
{
    struct h1_codec *c = p->data;
    return count_bytes(c, n);
}

static int cb_header_field(http_parser *p, const char *at, size_t n)
{
    struct h1_codec *c = p->data;
    if (c->in_value)
        commit_header(c);
    if (!c->have_field) {
        if (++c->nheaders > c->max_count)
            return fail_cb(c, 431, "http1.too_many_headers");
        c->have_field = true;
    }
    piece_add(&c->field, at, n);
    return count_bytes(c, n);
}

static int cb_header_value(http_parser *p, const char *at, size_t n)
{
    struct h1_codec *c = p->data;
    c->in_value = true;
    /* http-parser 2.9.4 flags Transfer-Encoding on a name prefix
     * ("transfer-encoding2: x" counts), then refuses a Content-Length next to
     * it or reads the body to EOF. Framing is judged on exact names here
     * (check_framing), so correct the flag once the name is complete. */
    if (field_is(c, "transfer-encoding", 17))
        c->saw_te = true;
    p->uses_transfer_encoding = c->saw_te;
    piece_add(&c->value, at, n);
    return count_bytes(c, n);
}

/* Trimmed, case-insensitive equality of a header value with a token. */
static bool value_is(const char *v, const char *tok)
{
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strlen(tok);
    if (strncasecmp(v, tok, n) != 0)
        return false;
    for (v += n; *v; v++)
        if (*v != ' ' && *v != '\t')
            return false;
    return true;
}

/* Framing headers: the smuggling checks that do not depend on raw bytes. */
static int check_framing(struct h1_codec *c, struct herald_headers *h)
{
    const char *name, *value, *cl = NULL;
    size_t nte = 0;
    for (size_t i = 0; herald_headers_at(h, i, &name, &value);) {
        if (strcmp(name, "content-length") == 0) {
            const char *v = value;
            if (!*v)
                return fail_cb(c, 400, "http1.invalid_content_length");
            for (; *v; v++)
                if (!isdigit((unsigned char)*v))
                    return fail_cb(c, 400, "http1.invalid_content_length");
            if (cl) {
                if (strcmp(cl, value) != 0)
                    return fail_cb(c, 400, "http1.duplicate_content_length");
                headers_remove_at(h, i); /* identical duplicate: folded */
                continue;
            }
            cl = value;
        } else if (strcmp(name, "transfer-encoding") == 0) {
            nte++;
            if (!value_is(value, "chunked") || nte > 1)
                return fail_cb(c, c->role == H1_SERVER ? 501 : 400, "http1.invalid_transfer_encoding");
        }
        i++;
    }
    if (nte) {
        if (cl)
            return fail_cb(c, 400, "http1.content_length_and_chunked_not_allowed");
        if (c->http10 && c->role == H1_SERVER)
            return fail_cb(c, 400, "http1.transfer_encoding_not_allowed");
    }
    return 0;
}

/* Builds the request's pseudo-headers from the request-target and Host. */
static int request_pseudo(struct h1_codec *c, struct herald_headers *h)
{
    size_t pos = 0;
    const char *method = http_method_str((enum http_method)c->p.method);
    const char *url = c->url_len ? c->url : "";
    headers_insert_n(h, pos++, ":method", 7, method, strlen(method));
    if (headers_count_name(h, "host") > 1)
        return fail_cb(c, 400, "http1.duplicate_host");
    char *authority = NULL, *path = NULL;
    if (c->p.method == HTTP_CONNECT) {
        if (!*url)
            return fail_cb(c, 400, "http1.invalid_url");
        authority = xstrdup(url);
    } else if (url[0] == '/' || strcmp(url, "*") == 0) {
        headers_insert_n(h, pos++, ":path", 5, url, c->url_len);   /* the common case: no copy of our own */
    } else {
        struct http_parser_url u;
        http_parser_url_init(&u);
        if (http_parser_parse_url(url, c->url_len, 0, &u) != 0 || !(u.field_set & (1 << UF_HOST)) ||
            !(u.field_set & (1 << UF_SCHEMA)))
            return fail_cb(c, 400, "http1.invalid_url");
        /* authority = host[:port] as written (IPv6 brackets included) */
        size_t a_off = u.field_data[UF_HOST].off, a_end = a_off + u.field_data[UF_HOST].len;
        if (a_off > 0 && url[a_off - 1] == '[')
            a_off--, a_end++;
        if (u.field_set & (1 << UF_PORT))
            a_end = u.field_data[UF_PORT].off + u.field_data[UF_PORT].len;
        authority = xstrndup(url + a_off, a_end - a_off);
        size_t p_off = a_end;
        if (u.field_set & (1 << UF_PATH))
            p_off = u.field_data[UF_PATH].off;
        else if (u.field_set & (1 << UF_QUERY))
            p_off = u.field_data[UF_QUERY].off - 1;
        size_t p_end = c->url_len;
        if (u.field_set & (1 << UF_FRAGMENT))
            p_end = u.field_data[UF_FRAGMENT].off - 1;
        if (p_off >= p_end || url[p_off] != '/')
            path = xasprintf("/%.*s", (int)(p_end > p_off ? p_end - p_off : 0), url + p_off);
        else
            path = xstrndup(url + p_off, p_end - p_off);
    }
    if (path) {
        headers_insert_n(h, pos++, ":path", 5, path, strlen(path));
        free(path);
    }
    const char *host = HEADERS_GET(h, "host");
    if (authority) {
        headers_insert_n(h, pos++, ":authority", 10, authority, strlen(authority));
        free(authority);
    } else if (host) {
        headers_insert_n(h, pos++, ":authority", 10, host, strlen(host));
    }
    herald_headers_remove(h, "host");
    return 0;
}

static uint8_t expected_method(const struct h1_codec *c)
{
    return c->nexpect ? c->expect[c->expect_head] : EXP_OTHER;
}

static int cb_headers_complete(http_parser *p)
{
    struct h1_codec *c = p->data;
    commit_header(c);
    if (!c->hdrs)
        c->hdrs = herald_headers_new();
    struct herald_headers *h = c->hdrs;

    if (p->http_major != 1)
        return fail_cb(c, c->role == H1_SERVER ? 505 : 400, "http1.unsupported_http_version");
    c->http10 = p->http_minor == 0;
    if (check_framing(c, h) != 0)
        return -1;

    bool chunked = HEADERS_GET(h, "transfer-encoding") != NULL;
    bool has_cl = HEADERS_GET(h, "content-length") != NULL;
    int ret = 0;
    struct herald_headers *out = h;   /* pseudo-headers go in front */
    if (c->role == H1_SERVER) {
        if (request_pseudo(c, h) != 0)
            return -1;
        if (c->http10)
            c->keep_alive = headers_has_token(h, "connection", "keep-alive");
        else
            c->keep_alive = !headers_has_token(h, "connection", "close");
        c->expect_continue = !c->http10 && headers_has_token(h, "expect", "100-continue");
        c->is_upgrade = p->method == HTTP_CONNECT ||
                        headers_upgrade_requested(h);
        c->chunked_body = chunked;
        c->headers_end_stream = !chunked && (!has_cl || p->content_length == 0);
    } else {
        int status = p->status_code;
        char sbuf[8];
        size_t sl = 3;
        if (status >= 100 && status <= 999) {   /* every valid one: no printf */
            sbuf[0] = (char)('0' + status / 100);
            sbuf[1] = (char)('0' + status / 10 % 10);
            sbuf[2] = (char)('0' + status % 10);
        } else {
            sl = (size_t)snprintf(sbuf, sizeof(sbuf), "%d", status);
        }
        headers_insert_n(h, 0, ":status", 7, sbuf, sl);
        uint8_t exp = expected_method(c);
        bool skip = false;
        if (status == 101 || (exp == EXP_CONNECT && status / 100 == 2)) {
            c->is_upgrade = true;
            ret = 2;
            skip = true;
        } else if (status / 100 == 1) {
            c->informational = true;
            ret = 1;
            skip = true;
        } else if (status == 204 || status == 304 || exp == EXP_HEAD) {
            ret = 1;
            skip = true;
        }
        c->chunked_body = !skip && chunked;
        c->headers_end_stream = skip || (!chunked && has_cl && p->content_length == 0);
        bool close_delimited = !skip && !chunked && !has_cl;
        c->close_delimited = close_delimited;
        if (c->http10)
            c->keep_alive = headers_has_token(h, "connection", "keep-alive");
        else
            c->keep_alive = !headers_has_token(h, "connection", "close");
        if (close_delimited || c->is_upgrade)
            c->keep_alive = false;
    }
    c->hdrs = NULL;
    c->head_bytes = c->nheaders = 0; /* trailers count on their own */

    if (c->informational) {
        if (c->cbs->on_informational)
            c->cbs->on_informational(c->arg, out);
        else
            herald_headers_free(out);
    } else {
        c->cbs->on_headers(c->arg, out, c->headers_end_stream);
    }
    return ret;
}

static int cb_body(http_parser *p, const char *at, size_t n)
{
    struct h1_codec *c = p->data;
    evbuffer_add(c->body, at, n);
    return 0;
}

static int cb_chunk_header(http_parser *p)
{
    struct h1_codec *c = p->data;
    if (p->content_length == 0) {
        /* trailers may follow: collect them as headers */
        c->has_trailers = true;
        c->head_bytes = c->nheaders = 0;
    }
    return 0;
}

static void deliver_body(struct h1_codec *c, bool end_stream)
{
    if (c->freed || (!end_stream && evbuffer_get_length(c->body) == 0))
        return;
    if (c->cbs->on_data)
        c->cbs->on_data(c->arg, c->body, end_stream);
    evbuffer_drain(c->body, evbuffer_get_length(c->body));
}

static int cb_message_complete(http_parser *p)
{
    struct h1_codec *c = p->data;
    commit_header(c);
    c->in_message = false;
    c->msg_done = true;
    if (c->informational) {
        reset_message(c);
        return 0;
    }
    struct herald_headers *trailers = c->hdrs;
    c->hdrs = NULL;
    if (trailers && herald_headers_count(trailers) == 0) {
        herald_headers_free(trailers);
        trailers = NULL;
    }
    if (!c->headers_end_stream && !c->freed)
        deliver_body(c, trailers == NULL);
    if (trailers) {
        if (c->headers_end_stream || c->freed || !c->cbs->on_trailers)
            herald_headers_free(trailers);
        else
            c->cbs->on_trailers(c->arg, trailers);
    }
    if (c->role == H1_CLIENT && c->nexpect) {
        c->expect_head = (c->expect_head + 1) % c->expect_cap;
        c->nexpect--;
    }
    if (c->is_upgrade)
        c->upgraded = true;
    else if (!c->keep_alive)
        c->closed = true;
    if (!c->freed && c->cbs->on_complete)
        c->cbs->on_complete(c->arg);
    if (c->role == H1_SERVER)
        c->paused = true;
    /* stop here so the validator restarts at the next message's first byte */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = cb_message_begin,
    .on_url = cb_url,
    .on_status = cb_status,
    .on_header_field = cb_header_field,
    .on_header_value = cb_header_value,
    .on_headers_complete = cb_headers_complete,
    .on_body = cb_body,
    .on_message_complete = cb_message_complete,
    .on_chunk_header = cb_chunk_header,
};

/* ------------------------------------------------------------ codec */
static pthread_once_t parser_once = PTHREAD_ONCE_INIT;

static void parser_global_init(void)
{
    /* herald enforces its own (per-listener) limit; keep http-parser's global
     * one out of the way up to Envoy's maximum of 8192 KiB plus line overhead */
    http_parser_set_max_header_size(8192u * 1024u * 2u);
}

struct h1_codec *h1_codec_new(enum h1_role role, const struct h1_limits *lim, const struct h1_callbacks *cbs,
                              void *arg)
{
    pthread_once(&parser_once, parser_global_init);
    struct h1_codec *c = xcalloc(1, sizeof(*c));
    c->role = role;
    c->cbs = cbs;
    c->arg = arg;
    uint32_t kb = lim && lim->max_request_headers_kb ? lim->max_request_headers_kb : DEFAULT_HEADERS_KB;
    c->max_bytes = kb * 1024u;
    c->max_count = lim && lim->max_headers_count ? lim->max_headers_count : DEFAULT_HEADERS_COUNT;
    c->body = evbuffer_new();
    if (!c->body)
        abort();
    http_parser_init(&c->p, role == H1_SERVER ? HTTP_REQUEST : HTTP_RESPONSE);
    c->p.data = c;
    c->sc.st = SC_PRE;
    return c;
}

static void codec_destroy(struct h1_codec *c)
{
    reset_message(c);
    free(c->url);
    free(c->field.buf);
    free(c->value.buf);
    evbuffer_free(c->body);
    free(c->expect);
    free(c);
}

void h1_codec_free(struct h1_codec *c)
{
    if (!c)
        return;
    if (c->in_dispatch) {
        c->freed = true;
        stop_parser(c);
        return;
    }
    codec_destroy(c);
}

static void map_parser_error(struct h1_codec *c, enum http_errno e)
{
    int st = 400;
    const char *d = "http1.codec_error";
    switch (e) {
    case HPE_INVALID_METHOD:
        d = "http1.invalid_method";
        break;
    case HPE_INVALID_VERSION:
        d = "http1.invalid_version";
        break;
    case HPE_INVALID_URL:
    case HPE_INVALID_HOST:
    case HPE_INVALID_PORT:
    case HPE_INVALID_PATH:
    case HPE_INVALID_QUERY_STRING:
    case HPE_INVALID_FRAGMENT:
        d = "http1.invalid_url";
        break;
    case HPE_HEADER_OVERFLOW:
        st = 431;
        d = "http1.headers_too_large";
        break;
    case HPE_INVALID_HEADER_TOKEN:
        d = "http1.invalid_characters";
        break;
    case HPE_INVALID_CONTENT_LENGTH:
        d = (c->p.flags & F_CHUNKED) ? "http1.invalid_chunk_size" : "http1.invalid_content_length";
        break;
    case HPE_UNEXPECTED_CONTENT_LENGTH:
        /* http-parser 2.9.4 refuses a second Content-Length and CL with TE */
        if (field_is(c, "content-length", 14) && c->hdrs &&
            HEADERS_GET(c->hdrs, "content-length"))
            d = "http1.duplicate_content_length";
        else
            d = "http1.content_length_and_chunked_not_allowed";
        break;
    case HPE_INVALID_TRANSFER_ENCODING:
        st = c->role == H1_SERVER ? 501 : 400;
        d = "http1.invalid_transfer_encoding";
        break;
    case HPE_INVALID_CHUNK_SIZE:
        d = "http1.invalid_chunk_size";
        break;
    case HPE_INVALID_STATUS:
        d = "http1.invalid_status";
        break;
    default:
        break;
    }
    report_error(c, st, d);
}

/* One http_parser_execute over validated bytes. Returns bytes consumed, or
 * -1 on error (reported). */
static ssize_t execute(struct h1_codec *c, const char *data, size_t len)
{
    c->in_execute = true;
    size_t n = http_parser_execute(&c->p, &settings, data, len);
    c->in_execute = false;
    if (!c->freed) {
        piece_own(&c->field);
        piece_own(&c->value);
    }
    enum http_errno e = HTTP_PARSER_ERRNO(&c->p);
    if (e == HPE_PAUSED) {
        http_parser_pause(&c->p, 0);
        e = HPE_OK;
    }
    if (c->freed)
        return (ssize_t)n;
    if (c->err_status) {
        report_error(c, c->err_status, c->err_details);
        return -1;
    }
    if (e != HPE_OK) {
        map_parser_error(c, e);
        return -1;
    }
    return (ssize_t)n;
}

/* After n validated bytes were consumed: the validator's state for them. */
static void scan_commit(struct h1_codec *c, const struct scan *before, const struct scan *after,
                        size_t scanned, const unsigned char *data, size_t n)
{
    const char *d;
    struct scan s = *before;
    if (n == scanned)
        s = *after;   /* http-parser took all that was validated: no second pass */
    else if (n)
        scan(&s, data, n, UINT64_MAX, &d);
    c->sc = s;
    if (c->msg_done) {
        c->msg_done = false;
        memset(&c->sc, 0, sizeof(c->sc));
        c->sc.st = SC_PRE;
    } else if (c->sc.st == SC_HEAD_DONE && !c->in_message) {
        c->sc.st = SC_PRE;
    } else if (c->sc.st == SC_HEAD_DONE) {
        /* http-parser has seen the whole head: the framing is known */
        if (c->chunked_body && !(c->p.flags & F_SKIPBODY)) {
            c->sc.st = SC_CHUNK_SIZE0;
        } else {
            c->sc.st = SC_BODY;
        }
    }
}

int h1_codec_dispatch(struct h1_codec *c, struct evbuffer *in)
{
    if (c->dead)
        return -1;
    if (c->in_dispatch)
        return 0; /* re-entered from a callback: the outer loop carries on */
    c->in_dispatch = true;
    int rc = 0;
    while (!c->paused && !c->upgraded && !c->freed && !c->dead) {
        size_t avail = evbuffer_get_length(in);
        if (avail == 0)
            break;
        if (c->closed) {
            /* after a "Connection: close" message nothing more is HTTP */
            evbuffer_drain(in, avail);
            break;
        }
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
            break;
        const unsigned char *data = v.iov_base;
        struct scan before = c->sc, s = c->sc;
        const char *details = NULL;
        uint64_t max_raw = (uint64_t)c->max_bytes * 2 + 4096;
        ssize_t k = scan(&s, data, v.iov_len, max_raw, &details);
        if (k < 0) {
            report_error(c, strcmp(details, "http1.headers_too_large") == 0 ? 431 : 400, details);
            rc = -1;
            break;
        }
        size_t scanned = (size_t)k;   /* s is the state after exactly these bytes */
        if (k == 0) {
            /* the validator is at a boundary http-parser has not reached yet
             * (a pause before the last byte of a head) */
            k = (ssize_t)v.iov_len;
            if (before.st == SC_HEAD_DONE || before.st == SC_MSG_DONE)
                k = 1;
        }
        ssize_t n = execute(c, (const char *)data, (size_t)k);
        if (c->freed)
            break;
        if (n < 0) {
            rc = -1;
            break;
        }
        scan_commit(c, &before, &s, scanned ? scanned : SIZE_MAX, data, (size_t)n);
        evbuffer_drain(in, (size_t)n);
        if (c->in_message && !c->headers_end_stream && c->sc.st != SC_PRE)
            deliver_body(c, false);
        if (n == 0 && !c->paused && !c->freed && !c->upgraded) {
            /* cannot happen with a healthy parser; do not spin */
            report_error(c, 400, "http1.codec_error");
            rc = -1;
            break;
        }
    }
    c->in_dispatch = false;
    if (c->freed) {
        codec_destroy(c);
        return -1;
    }
    return c->dead ? -1 : rc;
}

int h1_codec_dispatch_eof(struct h1_codec *c)
{
    if (c->dead)
        return -1;
    if (!c->in_message || c->upgraded)
        return 0;
    if (c->role == H1_CLIENT && c->sc.st == SC_BODY && c->close_delimited) {
        c->in_dispatch = true;
        ssize_t n = execute(c, NULL, 0);
        c->in_dispatch = false;
        if (c->freed) {
            codec_destroy(c);
            return -1;
        }
        return n < 0 ? -1 : 0;
    }
    report_error(c, 400, "http1.premature_eof");
    return -1;
}

void h1_codec_pause(struct h1_codec *c)
{
    c->paused = true;
    stop_parser(c);
}

void h1_codec_resume(struct h1_codec *c)
{
    c->paused = false;
}

bool h1_codec_paused(const struct h1_codec *c)
{
    return c->paused;
}

bool h1_codec_idle(const struct h1_codec *c)
{
    return !c->in_message && (c->sc.st == SC_PRE);
}

enum herald_http_protocol h1_codec_protocol(const struct h1_codec *c)
{
    return c->http10 ? HERALD_HTTP10 : HERALD_HTTP11;
}

bool h1_codec_keep_alive(const struct h1_codec *c)
{
    return c->keep_alive;
}

bool h1_codec_expect_continue(const struct h1_codec *c)
{
    return c->expect_continue;
}

bool h1_codec_is_upgrade(const struct h1_codec *c)
{
    return c->is_upgrade;
}

bool h1_codec_upgraded(const struct h1_codec *c)
{
    return c->upgraded;
}

void h1_codec_cancel_upgrade(struct h1_codec *c)
{
    if (!c->upgraded)
        return;
    c->upgraded = false;
    c->is_upgrade = false;
    /* http-parser left itself at a message start; CONNECT responses (2) end
     * it for good, so start afresh */
    http_parser_init(&c->p, c->role == H1_SERVER ? HTTP_REQUEST : HTTP_RESPONSE);
    c->p.data = c;
    memset(&c->sc, 0, sizeof(c->sc));
    c->sc.st = SC_PRE;
}

void h1_codec_expect_response(struct h1_codec *c, const char *method)
{
    uint8_t m = EXP_OTHER;
    if (method && strcasecmp(method, "HEAD") == 0)
        m = EXP_HEAD;
    else if (method && strcasecmp(method, "CONNECT") == 0)
        m = EXP_CONNECT;
    if (c->nexpect == c->expect_cap) {
        size_t ncap = c->expect_cap ? c->expect_cap * 2 : 4;
        uint8_t *n = xmalloc(ncap);
        for (size_t i = 0; i < c->nexpect; i++)
            n[i] = c->expect[(c->expect_head + i) % c->expect_cap];
        free(c->expect);
        c->expect = n;
        c->expect_cap = ncap;
        c->expect_head = 0;
    }
    c->expect[(c->expect_head + c->nexpect) % c->expect_cap] = m;
    c->nexpect++;
}

/* ------------------------------------------------------------ encoding */
void h1_encoder_init(struct h1_encoder *e, unsigned flags)
{
    memset(e, 0, sizeof(*e));
    e->flags = flags;
}

static bool safe_str(const char *s)
{
    for (; *s; s++)
        if (*s == '\r' || *s == '\n')
            return false;
    return true;
}

static bool safe_name(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!is_tchar((unsigned char)*s))
            return false;
    return true;
}

/* A response or request head is assembled here and added to the output in
 * one piece: no evbuffer of its own and no printf per line. */
struct headbuf {
    char *p;
    size_t len, cap;
    char small[1536];
};

static void hb_init(struct headbuf *b)
{
    b->p = b->small;
    b->len = 0;
    b->cap = sizeof(b->small);
}

static void hb_grow(struct headbuf *b, size_t n)
{
    size_t cap = (b->len + n) * 2;
    char *p = xmalloc(cap);
    memcpy(p, b->p, b->len);
    if (b->p != b->small)
        free(b->p);
    b->p = p;
    b->cap = cap;
}

/* inline: most pieces are two-byte literals (": ", "\r\n") */
static inline void hb_add(struct headbuf *b, const char *s, size_t n)
{
    if (b->len + n > b->cap)
        hb_grow(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

#define HB_LIT(b, lit) hb_add((b), (lit), sizeof(lit) - 1)

static void hb_str(struct headbuf *b, const char *s)
{
    hb_add(b, s, strlen(s));
}

static void hb_done(struct headbuf *b, struct evbuffer *out)
{
    evbuffer_add(out, b->p, b->len);
    if (b->p != b->small)
        free(b->p);
}

static void hb_drop(struct headbuf *b)
{
    if (b->p != b->small)
        free(b->p);
}

static bool safe_value_n(const char *s, size_t n)
{
    return !memchr(s, '\r', n) && !memchr(s, '\n', n);
}

/* "name: value\r\n" for each regular (non-pseudo) header, room made once
 * per line; skips transfer-encoding (framing is the encoder's) and host when
 * :authority gave it. -1 on a name or value that would break the framing
 * (CR/LF injection); fields a codec received and validated are not checked
 * again. */
static int write_fields(struct headbuf *b, const struct herald_headers *h, bool skip_host)
{
    size_t n;
    const struct header_field *f = headers_fields(h, &n);
    for (size_t i = 0; i < n; i++) {
        const char *name = f[i].name, *value = f[i].value;
        size_t nlen = f[i].nlen, vlen = f[i].vlen;
        if (name[0] == ':' || (nlen == 17 && memcmp(name, "transfer-encoding", 17) == 0) ||
            (skip_host && nlen == 4 && memcmp(name, "host", 4) == 0))
            continue;
        if (!f[i].received && (!safe_name(name) || !safe_value_n(value, vlen)))
            return -1;
        size_t need = nlen + vlen + 4;
        if (b->len + need > b->cap)
            hb_grow(b, need);
        char *d = b->p + b->len;
        memcpy(d, name, nlen);
        d += nlen;
        *d++ = ':';
        *d++ = ' ';
        memcpy(d, value, vlen);
        d[vlen] = '\r';
        d[vlen + 1] = '\n';
        b->len += need;
    }
    return 0;
}

static int parse_cl(const char *v, uint64_t *out)
{
    if (!v || !*v)
        return -1;
    uint64_t n = 0;
    for (; *v; v++) {
        if (!isdigit((unsigned char)*v) || n > (UINT64_MAX - 9) / 10)
            return -1;
        n = n * 10 + (uint64_t)(*v - '0');
    }
    *out = n;
    return 0;
}

static bool method_has_body_meaning(const char *m)
{
    static const char *const no[] = {"GET", "HEAD", "DELETE", "OPTIONS", "TRACE", "CONNECT"};
    for (size_t i = 0; i < ARRAY_SIZE(no); i++)
        if (strcmp(m, no[i]) == 0)
            return false;
    return true;
}

int h1_encode_request_headers(struct h1_encoder *e, struct evbuffer *out, const struct herald_headers *h,
                              bool end_stream)
{
    const char *method = HEADERS_GET(h, ":method");
    const char *path = HEADERS_GET(h, ":path");
    const char *authority = HEADERS_GET(h, ":authority");
    const char *cl = HEADERS_GET(h, "content-length");
    bool connect = method && strcmp(method, "CONNECT") == 0;
    if (e->headers_done || !method || !safe_name(method) || (!connect && !path) || (connect && !authority))
        return -1;
    const char *target = connect ? authority : path;
    if (!safe_str(target) || strchr(target, ' ') || (authority && !safe_str(authority)))
        return -1;
    uint64_t len = 0;
    if (cl && parse_cl(cl, &len) != 0)
        return -1;
    struct headbuf hb, *b = &hb;
    hb_init(b);
    hb_str(b, method);
    HB_LIT(b, " ");
    hb_str(b, target);
    if (e->flags & H1_ENC_HTTP10)
        HB_LIT(b, " HTTP/1.0\r\n");
    else
        HB_LIT(b, " HTTP/1.1\r\n");
    if (authority) {
        HB_LIT(b, "host: ");
        hb_str(b, authority);
        HB_LIT(b, "\r\n");
    }
    if (write_fields(b, h, authority != NULL) != 0) {
        hb_drop(b);
        return -1;
    }
    if (connect || (e->flags & H1_ENC_UPGRADE)) {
        e->framing = H1_FRAME_RAW;
        if (e->flags & H1_ENC_UPGRADE)
            end_stream = false; /* the tunnel's end is the caller's half-close, not the head's */
    } else if (cl) {
        e->framing = H1_FRAME_LENGTH;
        e->remaining = len;
    } else if (end_stream) {
        e->framing = H1_FRAME_NONE;
        if (method_has_body_meaning(method))
            HB_LIT(b, "content-length: 0\r\n");
    } else if (!(e->flags & H1_ENC_HTTP10)) {
        e->framing = H1_FRAME_CHUNKED;
        HB_LIT(b, "transfer-encoding: chunked\r\n");
    } else {
        hb_drop(b);
        return -1; /* an HTTP/1.0 request body needs a length */
    }
    HB_LIT(b, "\r\n");
    hb_done(b, out);
    e->headers_done = true;
    e->done = end_stream || (e->framing == H1_FRAME_LENGTH && len == 0);
    return 0;
}

int h1_encode_response_headers(struct h1_encoder *e, struct evbuffer *out, const struct herald_headers *h,
                               bool end_stream)
{
    const char *st = HEADERS_GET(h, ":status");
    const char *cl = HEADERS_GET(h, "content-length");
    if (e->headers_done || !st || strlen(st) != 3 || !isdigit((unsigned char)st[0]) ||
        !isdigit((unsigned char)st[1]) || !isdigit((unsigned char)st[2]) || st[0] == '0')
        return -1;
    int status = status_code(st);
    uint64_t len = 0;
    bool no_body = status / 100 == 1 || status == 204 || status == 304;
    if (cl && !no_body && parse_cl(cl, &len) != 0)
        return -1;
    struct headbuf hb, *b = &hb;
    hb_init(b);
    HB_LIT(b, "HTTP/1.1 ");
    hb_add(b, st, 3);
    HB_LIT(b, " ");
    hb_str(b, h1_reason_phrase(status));
    HB_LIT(b, "\r\n");
    if (write_fields(b, h, false) != 0) {
        hb_drop(b);
        return -1;
    }
    bool informational = status / 100 == 1 && status != 101;
    if (status == 101) {
        e->framing = H1_FRAME_RAW;
    } else if (no_body || (e->flags & H1_ENC_HEAD)) {
        e->framing = H1_FRAME_NONE;
    } else if (cl) {
        e->framing = H1_FRAME_LENGTH;
        e->remaining = len;
    } else if (end_stream) {
        e->framing = H1_FRAME_NONE;
        HB_LIT(b, "content-length: 0\r\n");
    } else if (e->flags & H1_ENC_HTTP10) {
        e->framing = H1_FRAME_CLOSE;
    } else {
        e->framing = H1_FRAME_CHUNKED;
        HB_LIT(b, "transfer-encoding: chunked\r\n");
    }
    HB_LIT(b, "\r\n");
    hb_done(b, out);
    if (informational) {
        e->framing = H1_FRAME_NONE; /* the final response follows */
        return 0;
    }
    e->headers_done = true;
    e->done = end_stream || (e->framing == H1_FRAME_LENGTH && len == 0);
    return 0;
}

int h1_encode_data(struct h1_encoder *e, struct evbuffer *out, struct evbuffer *data, bool end_stream)
{
    size_t len = data ? evbuffer_get_length(data) : 0;
    if (!e->headers_done)
        return -1;
    if (e->done) {
        if (data)
            evbuffer_drain(data, len);
        /* HEAD and 204/304 bodies vanish; anything else after the end is a bug */
        return len == 0 || e->framing == H1_FRAME_NONE ? 0 : -1;
    }
    switch (e->framing) {
    case H1_FRAME_NONE:
        if (data)
            evbuffer_drain(data, len);
        if (len && !(e->flags & H1_ENC_HEAD))
            return -1;
        break;
    case H1_FRAME_LENGTH:
        if (len > e->remaining)
            return -1;
        if (len)
            evbuffer_add_buffer(out, data);
        e->remaining -= len;
        if (e->remaining == 0)
            e->done = true;
        else if (end_stream)
            return -1; /* the peer would wait for the rest forever */
        break;
    case H1_FRAME_CHUNKED:
        if (len) {
            evbuffer_add_printf(out, "%zx\r\n", len);
            evbuffer_add_buffer(out, data);
            evbuffer_add(out, "\r\n", 2);
        }
        if (end_stream)
            evbuffer_add(out, "0\r\n\r\n", 5);
        break;
    case H1_FRAME_CLOSE:
    case H1_FRAME_RAW:
        if (len)
            evbuffer_add_buffer(out, data);
        break;
    }
    if (end_stream)
        e->done = true;
    return 0;
}

int h1_encode_trailers(struct h1_encoder *e, struct evbuffer *out, const struct herald_headers *t)
{
    if (!e->headers_done || e->done) {
        return e->done ? 0 : -1;
    }
    if (e->framing == H1_FRAME_CHUNKED) {
        struct headbuf hb;
        hb_init(&hb);
        HB_LIT(&hb, "0\r\n");
        if (write_fields(&hb, t, false) != 0) {
            hb_drop(&hb);
            return -1;
        }
        HB_LIT(&hb, "\r\n");
        hb_done(&hb, out);
    } else {
        log_debug("http1", "dropping %zu trailers: the body is not chunked", herald_headers_count(t));
        if (e->framing == H1_FRAME_LENGTH && e->remaining > 0)
            return -1;
    }
    e->done = true;
    return 0;
}

bool h1_encoder_close_delimited(const struct h1_encoder *e)
{
    return e->framing == H1_FRAME_CLOSE;
}

void h1_encode_100_continue(struct evbuffer *out)
{
    evbuffer_add(out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
}

const char *h1_reason_phrase(int status)
{
    switch (status) {
    case 425:
        return "Too Early";
    default:
        break;
    }
    const char *s = http_status_str((enum http_status)status);
    return s && s[0] != '<' ? s : "Unknown";
}
