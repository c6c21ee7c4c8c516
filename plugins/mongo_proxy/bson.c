/* mongo_proxy: the bounded BSON reader (see bson.h). */
#include <string.h>

#include "bson.h"

uint32_t bson_doc_len(const uint8_t *p, size_t avail)
{
    if (avail < 5)
        return 0;
    uint32_t n = bson_u32(p);
    return n < 5 || n > INT32_MAX ? 0 : n;
}

int bson_iter_init(struct bson_iter *it, const uint8_t *p, size_t avail)
{
    uint32_t n = bson_doc_len(p, avail);
    if (!n)
        return -1;
    it->p = p;
    it->off = 4;
    it->cut = avail < n;
    it->end = it->cut ? avail : n - 1; /* the trailing NUL is not an element */
    return 0;
}

static size_t cstr_len(const uint8_t *p, size_t avail)
{
    const uint8_t *z = memchr(p, 0, avail);
    return z ? (size_t)(z - p) : SIZE_MAX;
}

/* Length of a value of type t at p with room bytes available; SIZE_MAX when it
 * is malformed or does not fit. */
static size_t value_len(uint8_t t, const uint8_t *p, size_t room)
{
    size_t need, a, b;
    uint32_t n;

    switch (t) {
    case BSON_DOUBLE: case BSON_DATETIME: case BSON_TIMESTAMP: case BSON_INT64: need = 8; break;
    case BSON_UNDEFINED: case BSON_NULL: case BSON_MINKEY: case BSON_MAXKEY: need = 0; break;
    case BSON_OID: need = 12; break;
    case BSON_BOOL: need = 1; break;
    case BSON_INT32: need = 4; break;
    case BSON_DEC128: need = 16; break;
    case BSON_STRING: case BSON_CODE: case BSON_SYMBOL: case BSON_DBPOINTER:
        if (room < 4)
            return SIZE_MAX;
        n = bson_u32(p);
        if (n < 1 || n > INT32_MAX)
            return SIZE_MAX;
        need = 4 + (size_t)n + (t == BSON_DBPOINTER ? 12 : 0);
        if (need > room || p[4 + n - 1] != 0)
            return SIZE_MAX;
        return need;
    case BSON_DOC: case BSON_ARRAY: case BSON_CODEWS:
        if (room < 4)
            return SIZE_MAX;
        n = bson_u32(p);
        if (n < 5 || n > INT32_MAX)
            return SIZE_MAX;
        need = n;
        break;
    case BSON_BINARY:
        if (room < 5)
            return SIZE_MAX;
        n = bson_u32(p);
        if (n > INT32_MAX)
            return SIZE_MAX;
        need = 5 + (size_t)n;
        break;
    case BSON_REGEX:
        a = cstr_len(p, room);
        if (a == SIZE_MAX)
            return SIZE_MAX;
        b = cstr_len(p + a + 1, room - a - 1);
        if (b == SIZE_MAX)
            return SIZE_MAX;
        return a + b + 2;
    default:
        return SIZE_MAX;
    }
    return need > room ? SIZE_MAX : need;
}

int bson_iter_next(struct bson_iter *it, struct bson_elem *e)
{
    if (it->off >= it->end)
        return 0;
    size_t room = it->end - it->off;
    const uint8_t *q = it->p + it->off;
    uint8_t t = q[0];
    if (t == 0)
        return it->cut ? 0 : -1; /* a NUL before the declared end */
    size_t kl = cstr_len(q + 1, room - 1);
    if (kl == SIZE_MAX)
        return it->cut ? 0 : -1;
    size_t hdr = 1 + kl + 1;
    size_t vl = value_len(t, q + hdr, room - hdr);
    if (vl == SIZE_MAX)
        return it->cut ? 0 : -1; /* a value running past the bytes given ends a cut document */
    e->type = t;
    e->key = (const char *)(q + 1);
    e->val = q + hdr;
    e->len = vl;
    it->off += hdr + vl;
    return 1;
}

static int validate(const uint8_t *p, size_t avail, int depth)
{
    struct bson_iter it;
    struct bson_elem e;
    int r;

    if (depth <= 0)
        return -1;
    uint32_t n = bson_doc_len(p, avail);
    if (!n || n > avail || p[n - 1] != 0)
        return -1;
    if (bson_iter_init(&it, p, n) < 0)
        return -1;
    while ((r = bson_iter_next(&it, &e)) == 1) {
        if (e.type == BSON_DOC || e.type == BSON_ARRAY) {
            if (e.len != bson_u32(e.val) || validate(e.val, e.len, depth - 1) < 0)
                return -1;
        } else if (e.type == BSON_CODEWS) {
            /* int32 total, string, document */
            if (e.len < 14)
                return -1;
            size_t sl = value_len(BSON_STRING, e.val + 4, e.len - 4);
            if (sl == SIZE_MAX || validate(e.val + 4 + sl, e.len - 4 - sl, depth - 1) < 0)
                return -1;
        }
    }
    if (r < 0 || it.off != n - 1)
        return -1;
    return 0;
}

int bson_validate(const uint8_t *p, size_t avail, int max_depth)
{
    return validate(p, avail, max_depth);
}

int bson_find(const uint8_t *p, size_t avail, const char *key, struct bson_elem *e)
{
    struct bson_iter it;
    int r;

    if (bson_iter_init(&it, p, avail) < 0)
        return -1;
    while ((r = bson_iter_next(&it, e)) == 1)
        if (!strcmp(e->key, key))
            return 1;
    return r;
}

const char *bson_elem_str(const struct bson_elem *e)
{
    if (e->type != BSON_STRING)
        return NULL;
    return (const char *)e->val + 4;
}

int64_t bson_elem_int(const struct bson_elem *e, int64_t def)
{
    switch (e->type) {
    case BSON_INT32: return (int32_t)bson_u32(e->val);
    case BSON_INT64: return (int64_t)bson_u64(e->val);
    case BSON_BOOL: return e->val[0] != 0;
    case BSON_DOUBLE: {
        double d;
        uint64_t u = bson_u64(e->val);
        memcpy(&d, &u, 8);
        return d != d || d > 9.2e18 || d < -9.2e18 ? def : (int64_t)d;
    }
    default: return def;
    }
}
