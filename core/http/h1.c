/* HTTP/1.x codec: herald's own parser (DESIGN.md "HTTP": the library parser
 * was swapped out when the benchmark demanded it; Debian's http-parser still
 * parses absolute-form request targets and names the status codes).
 *
 * One pass over each byte: a small state machine (struct scan) validates a
 * head, chunk framing and trailers as they arrive, and notes where the first
 * line and each field line start and end. Nothing an RFC 9112 parser may be
 * lenient about is accepted: bare LF or CR, whitespace in or before a field
 * name, obsolete line folding, control bytes, sloppy chunk sizes are
 * request-smuggling shapes and refused. Once a head is complete it is read
 * from those notes where it lies in the input (copied only when it came in
 * several reads), and bodies move into the caller's buffer by evbuffer
 * chain, not byte by byte. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

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
    SC_HEAD_DONE,    /* head complete: the framing decides what follows */
    SC_CHUNK_SIZE0,  /* first hex digit of a chunk size */
    SC_CHUNK_SIZE,
    SC_CHUNK_EXT,
    SC_CHUNK_SIZE_LF,
    SC_CHUNK_DATA,   /* moved by the caller, not scanned */
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

/* One field line of the head (or trailers) being read, as offsets from the
 * head's first byte: the name runs from start to colon, the value from
 * colon + 1 to cr (its OWS is trimmed when the map is built). */
struct line_mark {
    uint32_t start, colon, cr;
};

/* What the body of the current message is. */
enum body_kind {
    BODY_NONE,    /* between messages, in a head, or in trailers */
    BODY_LENGTH,  /* body_left bytes */
    BODY_CHUNKED, /* scan's chunk states, then trailers */
    BODY_CLOSE,   /* until the peer closes (responses only) */
};

struct h1_codec {
    enum h1_role role;
    uint32_t max_bytes, max_count;
    uint64_t max_raw;
    const struct h1_callbacks *cbs;
    void *arg;

    struct scan sc;
    /* the head being read: its bytes from earlier reads (empty when it came
     * in one), and where its lines are */
    struct evbuffer *partial;
    uint32_t first_start, first_cr;
    struct line_mark *marks;
    size_t nmarks, marks_cap;

    /* message being parsed */
    enum body_kind body_kind;
    uint64_t body_left;
    struct evbuffer *body;
    bool in_message, headers_end_stream, informational;
    uint64_t msg_bytes, head_bytes;   /* the message's bytes consumed so far, and its head's */

    /* facts about the current message */
    bool http10, keep_alive, expect_continue, is_upgrade;

    /* client: methods of the requests sent, oldest first */
    uint8_t *expect;
    size_t nexpect, expect_cap, expect_head;

    /* control */
    bool paused, dead, upgraded, closed, in_dispatch, freed;
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

/* Where the run of field_ok bytes from data[j] ends. Sixteen (SSE2) or
 * eight bytes at a time while none is a control (below 0x20, or 0x7f): the
 * vector tests are exact about whether such a byte is there, and the byte
 * loop takes over from the first one (HTAB is a control that field_ok
 * accepts). Values and request lines are most of a head's bytes. */
static inline size_t field_run_end(const unsigned char *data, size_t j, size_t len)
{
#ifdef __SSE2__
    const __m128i c1f = _mm_set1_epi8(0x1f), c7f = _mm_set1_epi8(0x7f);
    while (j + 16 <= len) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(data + j));
        __m128i ctl = _mm_or_si128(_mm_cmpeq_epi8(_mm_min_epu8(x, c1f), x), _mm_cmpeq_epi8(x, c7f));
        unsigned m = (unsigned)_mm_movemask_epi8(ctl);
        if (m) {
            j += (size_t)__builtin_ctz(m);
            goto bytes;
        }
        j += 16;
    }
#endif
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
    }
#ifdef __SSE2__
bytes:
#endif
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
 * checked a run at a time, not a state-machine step per byte. */
#define SKIP_RUN(run_end) (i = run_end(data, i + 1, len))

/* A field line starts at offset at: noted, and counted against the limit. */
static int mark_line(struct h1_codec *c, size_t at)
{
    if (c->nmarks >= c->max_count)
        return -1;
    if (c->nmarks == c->marks_cap) {
        c->marks_cap = c->marks_cap ? c->marks_cap * 2 : 16;
        c->marks = xrealloc(c->marks, c->marks_cap * sizeof(*c->marks));
    }
    c->marks[c->nmarks++] = (struct line_mark){.start = (uint32_t)at};
    return 0;
}

/* scan's state machine over data[0..len) (see scan). */
static ssize_t scan_bytes(struct h1_codec *c, const unsigned char *data, size_t len, size_t base,
                          const char **details)
{
    struct scan *s = &c->sc;
    size_t i = 0;
    while (i < len) {
        unsigned char ch = data[i];
        switch (s->st) {
        case SC_PRE:
            if (ch == '\r')
                s->st = SC_PRE_LF;
            else if (ch == '\n')
                goto bare_lf;
            else {
                s->st = SC_FIRST;
                c->first_start = (uint32_t)(base + i);
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
            if (ch == '\r') {
                s->st = SC_FIRST_LF;
                c->first_cr = (uint32_t)(base + i);
            } else if (ch == '\n')
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
            } else if (is_tchar(ch)) {
                if (mark_line(c, base + i) != 0) {
                    *details = "http1.too_many_headers";
                    return -1;
                }
                /* the name's and the value's runs at once; SC_NAME / SC_VALUE
                 * take over at the byte that ended a run (a bad one, the
                 * line's CR, or the end of this piece) */
                size_t colon = name_run_end(data, i + 1, len);
                if (colon == len || data[colon] != ':') {
                    s->st = SC_NAME;
                    i = colon;
                    continue;
                }
                c->marks[c->nmarks - 1].colon = (uint32_t)(base + colon);
                size_t cr = field_run_end(data, colon + 1, len);
                if (cr + 1 < len && data[cr] == '\r' && data[cr + 1] == '\n') {
                    c->marks[c->nmarks - 1].cr = (uint32_t)(base + cr);
                    i = cr + 2;   /* the whole line in one step: the usual case */
                    continue;
                }
                s->st = SC_VALUE;
                i = cr;
                continue;
            } else
                goto bad_name;
            break;
        case SC_NAME:
            if (is_tchar(ch)) {
                SKIP_RUN(name_run_end);
                continue;
            }
            if (ch != ':')
                goto bad_name;
            c->marks[c->nmarks - 1].colon = (uint32_t)(base + i);
            s->st = SC_VALUE;
            break;
        case SC_VALUE:
            if (field_ok[ch]) {
                SKIP_RUN(field_run_end);
                continue;
            }
            if (ch == '\r') {
                c->marks[c->nmarks - 1].cr = (uint32_t)(base + i);
                s->st = SC_LINE_LF;
            } else if (ch == '\n')
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
        case SC_CHUNK_DATA:
            return (ssize_t)i;
        case SC_CHUNK_SIZE0:
            if (!isxdigit(ch))
                goto bad_chunk;
            s->digits = 0;
            s->chunk_left = 0;
            s->st = SC_CHUNK_SIZE;
            continue;   /* the first digit, counted as SC_CHUNK_SIZE counts them */
        case SC_CHUNK_SIZE:
            if (isxdigit(ch)) {
                /* 15 digits: a size far beyond any body, and no overflow */
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
            return (ssize_t)i + 1;
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

/* Validates data[0..len) from the codec's scan state; data[0] is byte
 * `base` of the head being read (offsets of lines are noted from there).
 * Returns how many bytes it went through: all of them, or up to and
 * including the byte that ended a head (SC_HEAD_DONE), trailers
 * (SC_MSG_DONE), a chunk size line (SC_CHUNK_DATA: the caller moves the
 * data) or the last chunk's (SC_LINE_START of the trailers). On a bad byte,
 * returns -1 with *details set.
 *
 * A head (or trailers) may take c->max_raw bytes, whitespace padding and
 * all: counted per call, not per byte. A call that starts in a head ends
 * in it or right after its last byte, so every byte it went through is a
 * head's. */
static ssize_t scan(struct h1_codec *c, const unsigned char *data, size_t len, size_t base, const char **details)
{
    if (c->sc.st > SC_END_LF)
        return scan_bytes(c, data, len, base, details);
    uint64_t room = c->max_raw - c->sc.raw;
    size_t lim = len < room ? len : (size_t)room;
    ssize_t k = scan_bytes(c, data, lim, base, details);
    if (k < 0)
        return -1;
    c->sc.raw += (uint64_t)k;
    if ((size_t)k == lim && lim < len && c->sc.st <= SC_END_LF) {
        *details = "http1.headers_too_large";
        return -1;
    }
    return k;
}

/* ------------------------------------------------------------ errors and callbacks */
static void report_error(struct h1_codec *c, int status, const char *details)
{
    if (c->dead)
        return;
    c->dead = true;
    if (c->cbs->on_error)
        c->cbs->on_error(c->arg, status, details);
}

/* The next message's head starts afresh: its bytes, lines and scan state. */
static void reset_head(struct h1_codec *c)
{
    evbuffer_drain(c->partial, evbuffer_get_length(c->partial));
    c->nmarks = 0;
    memset(&c->sc, 0, sizeof(c->sc));
    c->sc.st = SC_PRE;
}

static void deliver_body(struct h1_codec *c, bool end_stream)
{
    if (c->freed || (!end_stream && evbuffer_get_length(c->body) == 0))
        return;
    if (c->cbs->on_data)
        c->cbs->on_data(c->arg, c->body, end_stream);
    evbuffer_drain(c->body, evbuffer_get_length(c->body));
}

/* The message ends (trailers: taken over, or NULL). */
static void message_complete(struct h1_codec *c, struct herald_headers *trailers)
{
    c->in_message = false;
    c->body_kind = BODY_NONE;
    reset_head(c);
    if (c->informational) {
        /* a 1xx: the final response to the same request follows */
        c->informational = false;
        return;
    }
    if (trailers && herald_headers_count(trailers) == 0) {
        herald_headers_free(trailers);
        trailers = NULL;
    }
    if (!c->headers_end_stream)
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
        c->paused = true; /* pipelined requests: one at a time */
}

/* ------------------------------------------------------------ reading a head */

/* Case-insensitive equality of n received bytes with a lower-case literal
 * (a name, or a trimmed value). */
static inline bool name_is(const char *name, size_t n, const char *lc, size_t lcn)
{
    return n == lcn && strncasecmp(name, lc, n) == 0;
}

/* The value of field line m, OWS trimmed on both sides. */
static const char *mark_value(const char *head, const struct line_mark *m, size_t *vlen)
{
    const char *v = head + m->colon + 1, *end = head + m->cr;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *vlen = (size_t)(end - v);
    return v;
}

/* The methods http-parser 2.9 knew (the set herald has always accepted). */
static const char *const known_methods[] = {
#define XX(num, name, string) #string,
    HTTP_METHOD_MAP(XX)
#undef XX
};

static bool method_known(const char *m, size_t n)
{
    if ((n == 3 && memcmp(m, "GET", 3) == 0) || (n == 4 && memcmp(m, "POST", 4) == 0))
        return true;
    for (size_t i = 0; i < ARRAY_SIZE(known_methods); i++)
        if (strlen(known_methods[i]) == n && memcmp(known_methods[i], m, n) == 0)
            return true;
    return false;
}

/* "HTTP/d.d" -> major and minor; false for anything else. */
static bool parse_version(const char *v, size_t n, int *major, int *minor)
{
    if (n != 8 || memcmp(v, "HTTP/", 5) != 0 || !isdigit((unsigned char)v[5]) || v[6] != '.' ||
        !isdigit((unsigned char)v[7]))
        return false;
    *major = v[5] - '0';
    *minor = v[7] - '0';
    return true;
}

/* What a head's framing fields said. */
struct framing {
    bool has_cl, chunked;
    uint64_t cl;
    const char *cl_value;   /* as received: a duplicate must be the same bytes */
    size_t cl_len;
};

/* A head that cannot be taken: the status and details to report. */
struct head_error {
    int status;
    const char *details;
};

static int head_fail(struct head_error *e, int status, const char *details)
{
    e->status = status;
    e->details = details;
    return -1;
}

/* Content-Length and Transfer-Encoding (values OWS-trimmed), checked as
 * each comes (the request-smuggling rules). 1: an identical duplicate
 * Content-Length, to be folded (left out of the map). */
static int framing_field(struct h1_codec *c, struct framing *fr, const char *name, size_t nlen, const char *v,
                         size_t vlen, struct head_error *err)
{
    if (name_is(name, nlen, "content-length", 14)) {
        if (!vlen)
            return head_fail(err, 400, "http1.invalid_content_length");
        uint64_t n = 0;
        for (size_t i = 0; i < vlen; i++) {
            if (!isdigit((unsigned char)v[i]) || n > (UINT64_MAX - 9) / 10)
                return head_fail(err, 400, "http1.invalid_content_length");
            n = n * 10 + (uint64_t)(v[i] - '0');
        }
        if (fr->has_cl) {
            if (fr->cl_len != vlen || memcmp(fr->cl_value, v, vlen) != 0)
                return head_fail(err, 400, "http1.duplicate_content_length");
            return 1;
        }
        fr->has_cl = true;
        fr->cl = n;
        fr->cl_value = v;
        fr->cl_len = vlen;
    } else if (name_is(name, nlen, "transfer-encoding", 17)) {
        /* one Transfer-Encoding, exactly "chunked" */
        if (!name_is(v, vlen, "chunked", 7) || fr->chunked)
            return head_fail(err, c->role == H1_SERVER ? 501 : 400, "http1.invalid_transfer_encoding");
        fr->chunked = true;
    }
    return 0;
}

static int framing_done(struct h1_codec *c, const struct framing *fr, struct head_error *err)
{
    if (fr->chunked && fr->has_cl)
        return head_fail(err, 400, "http1.content_length_and_chunked_not_allowed");
    if (fr->chunked && c->http10 && c->role == H1_SERVER)
        return head_fail(err, 400, "http1.transfer_encoding_not_allowed");
    return 0;
}

/* Bytes max_request_headers_kb counts: the request-target or reason, and
 * every field line but its colon and line end. */
static size_t head_field_bytes(const struct h1_codec *c)
{
    size_t n = 0;
    for (size_t i = 0; i < c->nmarks; i++)
        n += c->marks[i].cr - c->marks[i].start - 1;
    return n;
}

/* :path (not for CONNECT) and :authority of a request-target that is not
 * origin-form, added to h in that order. */
static int target_pseudo(struct herald_headers *h, bool connect, const char *url, size_t len,
                         struct head_error *err)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (connect) {
        if (http_parser_parse_url(url, len, 1, &u) != 0)
            return head_fail(err, 400, "http1.invalid_url");
        headers_add_n(h, ":authority", 10, url, len);
        return 0;
    }
    if (http_parser_parse_url(url, len, 0, &u) != 0 || !(u.field_set & (1 << UF_HOST)) ||
        !(u.field_set & (1 << UF_SCHEMA)))
        return head_fail(err, 400, "http1.invalid_url");
    /* authority = host[:port] as written (IPv6 brackets included) */
    size_t a_off = u.field_data[UF_HOST].off, a_end = a_off + u.field_data[UF_HOST].len;
    if (a_off > 0 && url[a_off - 1] == '[')
        a_off--, a_end++;
    if (u.field_set & (1 << UF_PORT))
        a_end = u.field_data[UF_PORT].off + u.field_data[UF_PORT].len;
    size_t p_off = a_end;
    if (u.field_set & (1 << UF_PATH))
        p_off = u.field_data[UF_PATH].off;
    else if (u.field_set & (1 << UF_QUERY))
        p_off = u.field_data[UF_QUERY].off - 1;
    size_t p_end = len;
    if (u.field_set & (1 << UF_FRAGMENT))
        p_end = u.field_data[UF_FRAGMENT].off - 1;
    if (p_off >= p_end || url[p_off] != '/') {
        char *path = xasprintf("/%.*s", (int)(p_end > p_off ? p_end - p_off : 0), url + p_off);
        headers_add_n(h, ":path", 5, path, strlen(path));
        free(path);
    } else {
        headers_add_n(h, ":path", 5, url + p_off, p_end - p_off);
    }
    headers_add_n(h, ":authority", 10, url + a_off, a_end - a_off);
    return 0;
}

/* Where a request's Host goes: :authority, third in the map after :method
 * and :path, unless the request-target named one. */
struct authority_slot {
    size_t at;              /* its position */
    bool from_target, seen_host;
    const char *host;       /* a Host that came after other fields: inserted at the end */
    size_t host_len;
};

/* The field lines of a head or trailers into h. fr: a head's framing rules
 * apply (NULL for trailers). as: a request's Host becomes :authority (NULL
 * for responses and trailers). */
static int add_fields(struct h1_codec *c, struct herald_headers *h, const char *head, struct framing *fr,
                      struct authority_slot *as, struct head_error *err)
{
    for (size_t i = 0; i < c->nmarks; i++) {
        const struct line_mark *m = &c->marks[i];
        const char *name = head + m->start;
        size_t nlen = m->colon - m->start, vlen;
        const char *v = mark_value(head, m, &vlen);
        if (as && name_is(name, nlen, "host", 4)) {
            if (as->seen_host)
                return head_fail(err, 400, "http1.duplicate_host");
            as->seen_host = true;
            if (as->from_target)
                continue;   /* the absolute-form's authority wins */
            if (herald_headers_count(h) == as->at) {
                headers_add_n(h, ":authority", 10, v, vlen);   /* Host first: in place */
            } else {
                as->host = v;
                as->host_len = vlen;
            }
            continue;
        }
        int f = fr ? framing_field(c, fr, name, nlen, v, vlen, err) : 0;
        if (f < 0)
            return -1;
        if (f == 0)
            headers_add_received(h, name, nlen, v, vlen, true);
    }
    if (as && as->host)
        headers_insert_n(h, as->at, ":authority", 10, as->host, as->host_len);
    return fr ? framing_done(c, fr, err) : 0;
}

/* A complete request head at `head` -> the map with :method, :path and
 * :authority (from the target, else from Host, which leaves the map). */
static struct herald_headers *read_request(struct h1_codec *c, const char *head, bool *connect,
                                           struct framing *fr, struct head_error *err)
{
    const char *line = head + c->first_start;
    size_t llen = c->first_cr - c->first_start;
    const char *sp1 = memchr(line, ' ', llen);
    if (!sp1 || sp1 == line || !method_known(line, (size_t)(sp1 - line))) {
        head_fail(err, 400, "http1.invalid_method");
        return NULL;
    }
    size_t mlen = (size_t)(sp1 - line);
    const char *target = sp1 + 1, *end = line + llen;
    const char *sp2 = memrchr(target, ' ', (size_t)(end - target));
    if (!sp2) {   /* "GET /": HTTP/0.9 */
        head_fail(err, 505, "http1.unsupported_http_version");
        return NULL;
    }
    int major, minor;
    if (!parse_version(sp2 + 1, (size_t)(end - sp2 - 1), &major, &minor)) {
        head_fail(err, 400, "http1.invalid_version");
        return NULL;
    }
    if (major != 1) {
        head_fail(err, 505, "http1.unsupported_http_version");
        return NULL;
    }
    c->http10 = minor == 0;
    size_t tlen = (size_t)(sp2 - target);
    /* no whitespace in a request-target: the validator lets HTAB through
     * (reason phrases and values may hold it), a peer could split on it */
    if (!tlen || memchr(target, ' ', tlen) || memchr(target, '\t', tlen)) {
        head_fail(err, 400, "http1.invalid_url");
        return NULL;
    }
    if (tlen + head_field_bytes(c) > c->max_bytes) {
        head_fail(err, 431, "http1.headers_too_large");
        return NULL;
    }
    *connect = mlen == 7 && memcmp(line, "CONNECT", 7) == 0;

    struct herald_headers *h = herald_headers_new();
    headers_add_n(h, ":method", 7, line, mlen);
    struct authority_slot as = {.at = 2};   /* after :method and :path */
    if (!*connect && (target[0] == '/' || (tlen == 1 && target[0] == '*'))) {
        headers_add_n(h, ":path", 5, target, tlen);
    } else {
        if (target_pseudo(h, *connect, target, tlen, err) != 0)
            goto fail;
        as.from_target = true;
    }
    if (add_fields(c, h, head, fr, &as, err) != 0)
        goto fail;
    return h;
fail:
    herald_headers_free(h);
    return NULL;
}

/* A complete status line and head -> the map with :status; *status. */
static struct herald_headers *read_response(struct h1_codec *c, const char *head, int *status,
                                            struct framing *fr, struct head_error *err)
{
    const char *line = head + c->first_start;
    size_t llen = c->first_cr - c->first_start;
    int major, minor;
    if (llen < 8 || !parse_version(line, 8, &major, &minor)) {
        head_fail(err, 400, "http1.invalid_version");
        return NULL;
    }
    if (major != 1) {
        head_fail(err, 400, "http1.unsupported_http_version");
        return NULL;
    }
    const char *st = line + 9;
    if (llen < 12 || line[8] != ' ' || !isdigit((unsigned char)st[0]) || !isdigit((unsigned char)st[1]) ||
        !isdigit((unsigned char)st[2]) || st[0] == '0' || (llen > 12 && st[3] != ' ')) {
        head_fail(err, 400, "http1.invalid_status");
        return NULL;
    }
    if (llen - 12 + head_field_bytes(c) > c->max_bytes) {
        head_fail(err, 431, "http1.headers_too_large");
        return NULL;
    }
    c->http10 = minor == 0;
    *status = (st[0] - '0') * 100 + (st[1] - '0') * 10 + (st[2] - '0');
    struct herald_headers *h = herald_headers_new();
    headers_add_n(h, ":status", 7, st, 3);
    if (add_fields(c, h, head, fr, NULL, err) != 0) {
        herald_headers_free(h);
        return NULL;
    }
    return h;
}

static uint8_t expected_method(const struct h1_codec *c)
{
    return c->nexpect ? c->expect[c->expect_head] : EXP_OTHER;
}

static void set_keep_alive(struct h1_codec *c, const struct herald_headers *h)
{
    if (c->http10)
        c->keep_alive = headers_has_token(h, "connection", "keep-alive");
    else
        c->keep_alive = !headers_has_token(h, "connection", "close");
}

/* A complete head at `head`: the map, and the framing it decides. NULL:
 * refused (reported). Nothing is called back yet: the head's bytes are
 * dropped from the input first. */
static struct herald_headers *build_head(struct h1_codec *c, const char *head)
{
    struct framing fr = {0};
    struct head_error err = {400, "http1.codec_error"};
    struct herald_headers *h;
    c->http10 = c->keep_alive = c->expect_continue = c->is_upgrade = false;
    c->informational = false;
    c->body_left = 0;
    if (c->role == H1_SERVER) {
        bool connect = false;
        h = read_request(c, head, &connect, &fr, &err);
        if (!h)
            goto fail;
        set_keep_alive(c, h);
        c->expect_continue = !c->http10 && headers_has_token(h, "expect", "100-continue");
        c->is_upgrade = connect || headers_upgrade_requested(h);
        if (connect) {
            c->body_kind = BODY_NONE;   /* what follows is the tunnel's */
        } else if (fr.chunked) {
            c->body_kind = BODY_CHUNKED;
        } else if (fr.has_cl && fr.cl > 0) {
            c->body_kind = BODY_LENGTH;
            c->body_left = fr.cl;
        } else {
            c->body_kind = BODY_NONE;
        }
    } else {
        int status = 0;
        h = read_response(c, head, &status, &fr, &err);
        if (!h)
            goto fail;
        uint8_t exp = expected_method(c);
        bool skip = false;
        if (status == 101 || (exp == EXP_CONNECT && status / 100 == 2)) {
            c->is_upgrade = true;
            skip = true;
        } else if (status / 100 == 1) {
            c->informational = true;
            skip = true;
        } else if (status == 204 || status == 304 || exp == EXP_HEAD) {
            skip = true;
        }
        if (skip)
            c->body_kind = BODY_NONE;
        else if (fr.chunked)
            c->body_kind = BODY_CHUNKED;
        else if (fr.has_cl) {
            c->body_kind = fr.cl ? BODY_LENGTH : BODY_NONE;
            c->body_left = fr.cl;
        } else
            c->body_kind = BODY_CLOSE;
        set_keep_alive(c, h);
        if (c->body_kind == BODY_CLOSE || c->is_upgrade)
            c->keep_alive = false;
    }
    c->headers_end_stream = c->body_kind == BODY_NONE;
    if (c->body_kind == BODY_CHUNKED) {
        c->sc.st = SC_CHUNK_SIZE0;
        c->sc.raw = 0;
    }
    return h;
fail:
    report_error(c, err.status, err.details);
    return NULL;
}

/* Hands a built head over; a message without a body ends here. */
static void deliver_head(struct h1_codec *c, struct herald_headers *h)
{
    if (c->informational) {
        if (c->cbs->on_informational)
            c->cbs->on_informational(c->arg, h);
        else
            herald_headers_free(h);
    } else {
        c->cbs->on_headers(c->arg, h, c->headers_end_stream);
    }
    if (c->body_kind == BODY_NONE && !c->freed)
        message_complete(c, NULL);
}

/* Trailers complete at `head`: their map (NULL: none). */
static struct herald_headers *build_trailers(struct h1_codec *c, const char *head)
{
    if (!c->nmarks)
        return NULL;
    struct herald_headers *t = herald_headers_new();
    add_fields(c, t, head, NULL, NULL, NULL);   /* no framing, no Host: cannot fail */
    return t;
}

/* ------------------------------------------------------------ codec */
struct h1_codec *h1_codec_new(enum h1_role role, const struct h1_limits *lim, const struct h1_callbacks *cbs,
                              void *arg)
{
    struct h1_codec *c = xcalloc(1, sizeof(*c));
    c->role = role;
    c->cbs = cbs;
    c->arg = arg;
    uint32_t kb = lim && lim->max_request_headers_kb ? lim->max_request_headers_kb : DEFAULT_HEADERS_KB;
    c->max_bytes = kb * 1024u;
    c->max_raw = (uint64_t)c->max_bytes * 2 + 4096;
    c->max_count = lim && lim->max_headers_count ? lim->max_headers_count : DEFAULT_HEADERS_COUNT;
    c->body = evbuffer_new();
    c->partial = evbuffer_new();
    if (!c->body || !c->partial)
        abort();
    c->sc.st = SC_PRE;
    return c;
}

static void codec_destroy(struct h1_codec *c)
{
    evbuffer_free(c->body);
    evbuffer_free(c->partial);
    free(c->marks);
    free(c->expect);
    free(c);
}

void h1_codec_free(struct h1_codec *c)
{
    if (!c)
        return;
    if (c->in_dispatch) {
        c->freed = true;
        return;
    }
    codec_destroy(c);
}

/* A head (or trailers) in progress: validates the first piece of `in`. A
 * complete head is read where it lies when it came in one piece, else from
 * the bytes gathered in c->partial. Returns 1 (progress), 0 (needs more),
 * -1 (refused, reported). */
static int step_head(struct h1_codec *c, struct evbuffer *in)
{
    struct evbuffer_iovec v;
    if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
        return 0;
    size_t base = evbuffer_get_length(c->partial);
    const char *details = NULL;
    ssize_t k = scan(c, v.iov_base, v.iov_len, base, &details);
    if (k < 0) {
        bool too_large = strcmp(details, "http1.headers_too_large") == 0 ||
                         strcmp(details, "http1.too_many_headers") == 0;
        report_error(c, too_large ? 431 : 400, details);
        return -1;
    }
    if (k == 0) {
        report_error(c, 400, "http1.codec_error");   /* cannot happen: do not spin */
        return -1;
    }
    if (!c->in_message && c->sc.st > SC_PRE_LF) {
        c->in_message = true;
        c->msg_bytes = c->head_bytes = 0;
        if (c->cbs->on_message_begin)
            c->cbs->on_message_begin(c->arg);
        if (c->freed)
            return 0;
    }
    bool done = c->sc.st == SC_HEAD_DONE || c->sc.st == SC_MSG_DONE;
    if (!done) {
        if (c->sc.st <= SC_PRE_LF && base == 0) {
            evbuffer_drain(in, (size_t)k);   /* empty lines between messages */
        } else {
            evbuffer_remove_buffer(in, c->partial, (size_t)k);
            c->msg_bytes += (size_t)k;
        }
        return 1;
    }
    c->msg_bytes += (size_t)k;
    if (c->sc.st == SC_HEAD_DONE)
        c->head_bytes = c->msg_bytes;
    const char *head;
    if (base == 0) {
        head = v.iov_base;   /* the common case: the whole head in one piece */
    } else {
        evbuffer_remove_buffer(in, c->partial, (size_t)k);
        head = (const char *)evbuffer_pullup(c->partial, -1);
    }
    /* the maps copy what they keep: the bytes go before any callback (one
     * may free the caller's buffer along with the codec) */
    bool trailers = c->sc.st == SC_MSG_DONE;
    struct herald_headers *h = trailers ? build_trailers(c, head) : build_head(c, head);
    if (base == 0)
        evbuffer_drain(in, (size_t)k);
    else
        evbuffer_drain(c->partial, evbuffer_get_length(c->partial));
    if (trailers) {
        message_complete(c, h);
        return 1;
    }
    if (!h)
        return -1;
    deliver_head(c, h);
    return 1;
}

/* A chunked body: framing scanned, data moved into c->body. */
static int step_chunked(struct h1_codec *c, struct evbuffer *in)
{
    while (evbuffer_get_length(in) > 0) {
        if (c->sc.st == SC_CHUNK_DATA) {
            size_t avail = evbuffer_get_length(in);
            size_t n = c->sc.chunk_left < avail ? (size_t)c->sc.chunk_left : avail;
            evbuffer_remove_buffer(in, c->body, n);
            c->msg_bytes += n;
            c->sc.chunk_left -= n;
            if (c->sc.chunk_left == 0)
                c->sc.st = SC_CHUNK_DATA_CR;
            continue;
        }
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
            break;
        const char *details = NULL;
        ssize_t k = scan(c, v.iov_base, v.iov_len, 0, &details);
        if (k < 0) {
            report_error(c, 400, details);
            return -1;
        }
        evbuffer_drain(in, (size_t)k);
        c->msg_bytes += (size_t)k;
        if (c->sc.trailers) {
            /* the last chunk: trailers (or the empty line) follow */
            c->nmarks = 0;
            c->body_kind = BODY_NONE;
            return 1;
        }
    }
    deliver_body(c, false);
    return 0;
}

/* A Content-Length body. */
static int step_length(struct h1_codec *c, struct evbuffer *in)
{
    size_t avail = evbuffer_get_length(in);
    size_t n = c->body_left < avail ? (size_t)c->body_left : avail;
    evbuffer_remove_buffer(in, c->body, n);
    c->msg_bytes += n;
    c->body_left -= n;
    if (c->body_left == 0) {
        message_complete(c, NULL);
        return 1;
    }
    deliver_body(c, false);
    return 0;
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
        int r;
        switch (c->body_kind) {
        case BODY_LENGTH:
            r = step_length(c, in);
            break;
        case BODY_CHUNKED:
            r = step_chunked(c, in);
            break;
        case BODY_CLOSE:
            evbuffer_remove_buffer(in, c->body, avail);
            c->msg_bytes += avail;
            deliver_body(c, false);
            r = 0;
            break;
        default:
            r = step_head(c, in);
            break;
        }
        if (r < 0) {
            rc = -1;
            break;
        }
        if (r == 0)
            break;
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
    if (c->body_kind == BODY_CLOSE) {
        c->in_dispatch = true;
        message_complete(c, NULL);
        c->in_dispatch = false;
        if (c->freed) {
            codec_destroy(c);
            return -1;
        }
        return 0;
    }
    report_error(c, 400, "http1.premature_eof");
    return -1;
}

void h1_codec_pause(struct h1_codec *c)
{
    c->paused = true;
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
    return !c->in_message && c->sc.st == SC_PRE;
}

uint64_t h1_codec_wire_bytes(const struct h1_codec *c) { return c->msg_bytes; }
uint64_t h1_codec_head_bytes(const struct h1_codec *c) { return c->head_bytes; }

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
    c->in_message = false;
    c->body_kind = BODY_NONE;
    reset_head(c);
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
    if (status == 101 || ((e->flags & H1_ENC_UPGRADE) && status / 100 == 2)) {
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
