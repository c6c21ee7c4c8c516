/* mongo_proxy: a bounded BSON reader. Never trusts a length field beyond the
 * bytes it was given, and limits nesting, so hostile documents cost at most
 * a walk over the bytes at hand. */
#ifndef HERALD_MONGO_BSON_H
#define HERALD_MONGO_BSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BSON_MAX_DEPTH 100

enum {
    BSON_DOUBLE = 0x01, BSON_STRING = 0x02, BSON_DOC = 0x03, BSON_ARRAY = 0x04, BSON_BINARY = 0x05,
    BSON_UNDEFINED = 0x06, BSON_OID = 0x07, BSON_BOOL = 0x08, BSON_DATETIME = 0x09, BSON_NULL = 0x0a,
    BSON_REGEX = 0x0b, BSON_DBPOINTER = 0x0c, BSON_CODE = 0x0d, BSON_SYMBOL = 0x0e, BSON_CODEWS = 0x0f,
    BSON_INT32 = 0x10, BSON_TIMESTAMP = 0x11, BSON_INT64 = 0x12, BSON_DEC128 = 0x13,
    BSON_MINKEY = 0xff, BSON_MAXKEY = 0x7f,
};

struct bson_elem {
    uint8_t type;
    const char *key;
    const uint8_t *val; /* the value's bytes */
    size_t len;         /* their length */
};

/* Walks the elements of a document whose bytes may be cut short (avail less
 * than its declared length): iteration stops at the first element that does
 * not fit. */
struct bson_iter {
    const uint8_t *p;
    size_t end; /* min(declared length - 1, avail) */
    size_t off;
    bool cut;   /* the document continues beyond the bytes given */
};

static inline uint32_t bson_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t bson_u64(const uint8_t *p)
{
    return (uint64_t)bson_u32(p) | (uint64_t)bson_u32(p + 4) << 32;
}

/* Declared document length at p (0 when fewer than 5 bytes or it is < 5). */
uint32_t bson_doc_len(const uint8_t *p, size_t avail);
/* 0 when p holds a complete, well-formed document of at most avail bytes
 * (nesting up to max_depth), -1 otherwise. */
int bson_validate(const uint8_t *p, size_t avail, int max_depth);
/* -1 when not even the 4-byte length is there or it is below 5. */
int bson_iter_init(struct bson_iter *it, const uint8_t *p, size_t avail);
/* 1: *e filled; 0: end (or cut); -1: malformed. */
int bson_iter_next(struct bson_iter *it, struct bson_elem *e);
/* Finds key among the top-level elements that fit; 1 found, 0 not, -1 malformed. */
int bson_find(const uint8_t *p, size_t avail, const char *key, struct bson_elem *e);
/* A string value as a NUL-terminated C string inside the buffer (NULL unless type string). */
const char *bson_elem_str(const struct bson_elem *e);
/* Integer value of int32/int64/double/bool elements; def otherwise. */
int64_t bson_elem_int(const struct bson_elem *e, int64_t def);

#endif
