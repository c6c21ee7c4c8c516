/* The header map: an ordered vector of (name, value) pairs. Names are stored
 * lower-case, so lookups compare lengths first and then bytes against the
 * lower-cased key; a linear scan beats hashing for the ~20 entries of a
 * typical request.
 *
 * Strings live in the map's own arena: an inline block, then chunks that are
 * never moved or freed before the map, so a typical map costs one malloc and a
 * copy (the router clones request headers for retries) costs one more. Values
 * handed out stay valid until the map is freed, even across later edits. */
#include <string.h>
#include <strings.h>

#include "common.h"
#include "mem_cache.h"
#include "http/headers.h"

#define INLINE_ENTRIES 16
#define INLINE_BYTES 1024
#define CHUNK_MIN 2048

struct chunk {
    struct chunk *next;
    char data[];
};

struct herald_headers {
    struct header_field *e;
    size_t n, cap;
    uint64_t names;            /* name_bit() of every name added: most lookups are for absent names */
    char *cur;                 /* free space in the current block */
    size_t left;
    struct chunk *chunks;      /* blocks allocated after the inline one */
    struct header_field inline_e[INLINE_ENTRIES];
    char inline_data[INLINE_BYTES];
};

static const unsigned char lower[256] = {
#define L(c) [c] = (unsigned char)((c) >= 'A' && (c) <= 'Z' ? (c) + 32 : (c))
#define L8(b) L(b), L(b + 1), L(b + 2), L(b + 3), L(b + 4), L(b + 5), L(b + 6), L(b + 7)
#define L64(b) L8(b), L8(b + 8), L8(b + 16), L8(b + 24), L8(b + 32), L8(b + 40), L8(b + 48), L8(b + 56)
    L64(0), L64(64), L64(128), L64(192),
#undef L64
#undef L8
#undef L
};

/* Room for n bytes that will never move. */
static char *reserve(struct herald_headers *h, size_t n)
{
    if (n > h->left) {
        size_t size = n > CHUNK_MIN ? n : CHUNK_MIN;
        struct chunk *c = xmalloc(sizeof(*c) + size);
        c->next = h->chunks;
        h->chunks = c;
        h->cur = c->data;
        h->left = size;
    }
    char *p = h->cur;
    h->cur += n;
    h->left -= n;
    return p;
}

/* s lower-cased into d, eight bytes at a time: per word, the bytes in
 * 'A'..'Z' (high bit clear, >= 0x41 and <= 0x5a, each found by an add that
 * cannot carry into the next byte) get 0x20 added. */
static void copy_lower(char *d, const char *s, size_t len)
{
    const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        uint64_t low7 = w & ~high;
        uint64_t at_least_A = low7 + ones * (0x80 - 'A');
        uint64_t above_Z = low7 + ones * (0x7f - 'Z');
        uint64_t upper = at_least_A & ~above_Z & ~w & high;
        w |= upper >> 2;
        memcpy(d + i, &w, 8);
    }
    for (; i < len; i++)
        d[i] = (char)lower[(unsigned char)s[i]];
}

static const char *store(struct herald_headers *h, const char *s, size_t len, bool lowercase)
{
    char *p = reserve(h, len + 1);
    if (lowercase)
        copy_lower(p, s, len);
    else
        memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

static struct header_field *push(struct herald_headers *h)
{
    if (h->n == h->cap) {
        size_t cap = h->cap * 2;
        struct header_field *e = xmalloc(cap * sizeof(*e));
        memcpy(e, h->e, h->n * sizeof(*e));
        if (h->e != h->inline_e)
            free(h->e);
        h->e = e;
        h->cap = cap;
    }
    return &h->e[h->n++];
}

/* One of 64 bits for a lower-case name, from its length and end bytes. A
 * map ORs in the bit of each name it gets (removals leave it: a stale bit
 * only costs a scan), so a lookup whose bit is clear is a miss without
 * touching an entry. */
static inline uint64_t name_bit(size_t len, unsigned char first, unsigned char last)
{
    return (uint64_t)1 << ((len * 7u + first * 3u + last) & 63u);
}

static inline uint64_t lc_name_bit(const char *lc, size_t len)
{
    return len ? name_bit(len, (unsigned char)lc[0], (unsigned char)lc[len - 1]) : name_bit(0, 0, 0);
}

/* name (already lower-case when lowercase is false) and value copied in */
static void add_n(struct herald_headers *h, const char *name, size_t nlen, const char *value, size_t vlen,
                  bool lowercase)
{
    struct header_field *e = push(h);
    e->name = store(h, name, nlen, lowercase);
    e->value = store(h, value, vlen, false);
    e->nlen = (uint32_t)nlen;
    e->vlen = (uint32_t)vlen;
    e->received = 0;
    h->names |= lc_name_bit(e->name, nlen);
}

/* A lookup key: its length and lower-cased first byte, computed once per
 * lookup; entries are compared on those before any other byte. */
struct key {
    const char *s;
    size_t len;
    char first;
    uint64_t bit;              /* name_bit() */
};

static inline struct key key_of(const char *name)
{
    size_t len = strlen(name);
    if (!len)
        return (struct key){name, 0, 0, name_bit(0, 0, 0)};
    unsigned char first = lower[(unsigned char)name[0]], last = lower[(unsigned char)name[len - 1]];
    return (struct key){name, len, (char)first, name_bit(len, first, last)};
}

static inline bool may_have(const struct herald_headers *h, const struct key *k) { return (h->names & k->bit) != 0; }

static inline __attribute__((always_inline)) bool name_is(const struct header_field *e, const struct key *k)
{
    if (e->nlen != k->len || (k->len && e->name[0] != k->first))
        return false;
    for (size_t i = 1; i < k->len; i++)
        if (e->name[i] != (char)lower[(unsigned char)k->s[i]])
            return false;
    return true;
}

/* A request makes three or four maps, each larger than what malloc's
 * per-thread cache keeps: mem_cache keeps them. */
struct herald_headers *herald_headers_new(void)
{
    struct herald_headers *h = mem_cache_alloc(sizeof(*h));
    h->e = h->inline_e;
    h->n = 0;
    h->names = 0;
    h->cap = INLINE_ENTRIES;
    h->cur = h->inline_data;
    h->left = INLINE_BYTES;
    h->chunks = NULL;
    return h;
}

void herald_headers_free(struct herald_headers *h)
{
    if (!h)
        return;
    for (struct chunk *c = h->chunks, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    if (h->e != h->inline_e)
        free(h->e);
    mem_cache_free(h, sizeof(*h));
}

size_t herald_headers_count(const struct herald_headers *h)
{
    return h ? h->n : 0;
}

bool herald_headers_at(const struct herald_headers *h, size_t i, const char **name, const char **value)
{
    if (!h || i >= h->n)
        return false;
    if (name)
        *name = h->e[i].name;
    if (value)
        *value = h->e[i].value;
    return true;
}

const char *herald_headers_get(const struct herald_headers *h, const char *name)
{
    if (!h || !name)
        return NULL;
    struct key k = key_of(name);
    if (!may_have(h, &k))
        return NULL;
    for (size_t i = 0; i < h->n; i++)
        if (name_is(&h->e[i], &k))
            return h->e[i].value;
    return NULL;
}

char *herald_headers_get_all(const struct herald_headers *h, const char *name)
{
    if (!h || !name)
        return NULL;
    struct key k = key_of(name);
    if (!may_have(h, &k))
        return NULL;
    size_t total = 0, count = 0;
    for (size_t i = 0; i < h->n; i++)
        if (name_is(&h->e[i], &k)) {
            total += h->e[i].vlen + 1;
            count++;
        }
    if (!count)
        return NULL;
    char *out = xmalloc(total), *p = out;
    for (size_t i = 0; i < h->n; i++)
        if (name_is(&h->e[i], &k)) {
            if (p != out)
                *p++ = ',';
            memcpy(p, h->e[i].value, h->e[i].vlen);
            p += h->e[i].vlen;
        }
    *p = '\0';
    return out;
}

const char *headers_get_lc(const struct herald_headers *h, const char *lc, size_t len)
{
    if (!h)
        return NULL;
    if (!(h->names & lc_name_bit(lc, len)))
        return NULL;
    for (size_t i = 0; i < h->n; i++)
        if (h->e[i].nlen == len && memcmp(h->e[i].name, lc, len) == 0)
            return h->e[i].value;
    return NULL;
}

void headers_add_n(struct herald_headers *h, const char *name, size_t nlen, const char *value, size_t vlen)
{
    add_n(h, name, nlen, value, vlen, false);
}

void headers_add_received(struct herald_headers *h, const char *name, size_t nlen, const char *value, size_t vlen,
                          bool lowercase)
{
    add_n(h, name, nlen, value, vlen, lowercase);
    h->e[h->n - 1].received = 1;
}

const struct header_field *headers_fields(const struct herald_headers *h, size_t *n)
{
    *n = h ? h->n : 0;
    return h ? h->e : NULL;
}

void headers_insert_n(struct herald_headers *h, size_t pos, const char *name, size_t nlen, const char *value,
                      size_t vlen)
{
    add_n(h, name, nlen, value, vlen, false);
    if (pos >= h->n - 1)
        return;
    struct header_field e = h->e[h->n - 1];
    memmove(&h->e[pos + 1], &h->e[pos], (h->n - 1 - pos) * sizeof(e));
    h->e[pos] = e;
}

void herald_headers_add(struct herald_headers *h, const char *name, const char *value)
{
    if (!h || !name)
        return;
    if (!value)
        value = "";
    add_n(h, name, strlen(name), value, strlen(value), true);
}

bool headers_remove_at(struct herald_headers *h, size_t i)
{
    if (!h || i >= h->n)
        return false;
    memmove(&h->e[i], &h->e[i + 1], (h->n - i - 1) * sizeof(h->e[0]));
    h->n--;
    return true;
}

size_t herald_headers_remove(struct herald_headers *h, const char *name)
{
    size_t removed = 0;
    if (!h || !name)
        return 0;
    struct key k = key_of(name);
    if (!may_have(h, &k))
        return 0;
    for (size_t i = 0; i < h->n;) {
        if (name_is(&h->e[i], &k)) {
            headers_remove_at(h, i);
            removed++;
        } else {
            i++;
        }
    }
    return removed;
}

unsigned headers_hop_of(const char *name, size_t len)
{
    switch (len) {
    case 7: return memcmp(name, "upgrade", 7) == 0 ? HOP_UPGRADE : 0;
    case 10:
        if (memcmp(name, "connection", 10) == 0)
            return HOP_CONNECTION;
        return memcmp(name, "keep-alive", 10) == 0 ? HOP_KEEP_ALIVE : 0;
    case 16: return memcmp(name, "proxy-connection", 16) == 0 ? HOP_PROXY_CONNECTION : 0;
    case 17: return memcmp(name, "transfer-encoding", 17) == 0 ? HOP_TRANSFER_ENCODING : 0;
    default: return 0;
    }
}

void headers_remove_hop_by_hop(struct herald_headers *h, unsigned mask)
{
    if (!h)
        return;
    size_t out = 0;
    for (size_t i = 0; i < h->n; i++)
        if (!(headers_hop_of(h->e[i].name, h->e[i].nlen) & mask))
            h->e[out++] = h->e[i];
    h->n = out;
}

void herald_headers_set(struct herald_headers *h, const char *name, const char *value)
{
    if (!h || !name)
        return;
    if (!value)
        value = "";
    struct key k = key_of(name);
    /* Keep the position of the first entry so a rewritten header does not
     * jump to the end (order matters for :pseudo-headers and for diffs). */
    size_t n = may_have(h, &k) ? h->n : 0;   /* the loop returns before changing h->n */
    for (size_t i = 0; i < n; i++) {
        if (name_is(&h->e[i], &k)) {
            size_t vlen = strlen(value);
            h->e[i].value = store(h, value, vlen, false);
            h->e[i].vlen = (uint32_t)vlen;
            h->e[i].received = 0;
            for (size_t j = i + 1; j < h->n;) {
                if (name_is(&h->e[j], &k))
                    headers_remove_at(h, j);
                else
                    j++;
            }
            return;
        }
    }
    add_n(h, name, k.len, value, strlen(value), true);
}

size_t headers_byte_size(const struct herald_headers *h)
{
    size_t n = 0;
    for (size_t i = 0; h && i < h->n; i++)
        n += h->e[i].nlen + h->e[i].vlen;
    return n;
}

/* A string of the copy: where it sat in the original's inline block, else
 * copied into the copy's arena. */
static const char *copy_str(struct herald_headers *c, const struct herald_headers *h, size_t used, const char *p,
                            size_t len)
{
    if (p >= h->inline_data && p < h->inline_data + used)
        return c->inline_data + (p - h->inline_data);
    return store(c, p, len, false);
}

/* The router copies every request (retries need the original): the inline
 * block goes across in one memcpy, and entries are rebased onto it. */
struct herald_headers *herald_headers_copy(const struct herald_headers *h)
{
    struct herald_headers *c = herald_headers_new();
    if (!h || h->n == 0)
        return c;
    size_t used = h->chunks ? INLINE_BYTES : (size_t)(h->cur - h->inline_data);
    memcpy(c->inline_data, h->inline_data, used);
    c->cur = c->inline_data + used;
    c->left = INLINE_BYTES - used;
    if (h->n > c->cap) {
        c->e = xmalloc(h->cap * sizeof(*c->e));
        c->cap = h->cap;
    }
    for (size_t i = 0; i < h->n; i++) {
        const struct header_field *e = &h->e[i];
        c->e[i].name = copy_str(c, h, used, e->name, e->nlen);
        c->e[i].value = copy_str(c, h, used, e->value, e->vlen);
        c->e[i].nlen = e->nlen;
        c->e[i].vlen = e->vlen;
        c->e[i].received = e->received;
    }
    c->n = h->n;
    c->names = h->names;
    return c;
}

size_t headers_count_name(const struct herald_headers *h, const char *name)
{
    size_t n = 0;
    struct key k = key_of(name);
    if (!h || !may_have(h, &k))
        return 0;
    for (size_t i = 0; i < h->n; i++)
        if (name_is(&h->e[i], &k))
            n++;
    return n;
}

bool headers_has_token(const struct herald_headers *h, const char *name, const char *tok)
{
    struct key k = key_of(name);
    if (!h || !may_have(h, &k))
        return false;
    size_t tlen = strlen(tok);
    for (size_t i = 0; i < h->n; i++) {
        if (!name_is(&h->e[i], &k))
            continue;
        const char *p = h->e[i].value;
        while (*p) {
            while (*p == ' ' || *p == '\t' || *p == ',')
                p++;
            const char *start = p;
            while (*p && *p != ',')
                p++;
            const char *end = p;
            while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
                end--;
            if ((size_t)(end - start) == tlen && strncasecmp(start, tok, tlen) == 0)
                return true;
        }
    }
    return false;
}

bool headers_upgrade_requested(const struct herald_headers *h)
{
    return HEADERS_GET(h, "upgrade") && headers_has_token(h, "connection", "upgrade");
}

bool headers_is_grpc(const struct herald_headers *h)
{
    static const char grpc[] = "application/grpc";
    const size_t n = sizeof(grpc) - 1;
    const char *ct = h ? HEADERS_GET(h, "content-type") : NULL;
    return ct && strncmp(ct, grpc, n) == 0 && (ct[n] == '\0' || ct[n] == '+');
}
