/* mongo_proxy: the wire protocol decoder (see codec.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bson.h"
#include "codec.h"

const char *mongo_opcode_name(int32_t op)
{
    switch (op) {
    case MONGO_OP_REPLY: return "OP_REPLY";
    case MONGO_OP_UPDATE: return "OP_UPDATE";
    case MONGO_OP_INSERT: return "OP_INSERT";
    case MONGO_OP_QUERY: return "OP_QUERY";
    case MONGO_OP_GET_MORE: return "OP_GET_MORE";
    case MONGO_OP_DELETE: return "OP_DELETE";
    case MONGO_OP_KILL_CURSORS: return "OP_KILL_CURSORS";
    case MONGO_OP_COMPRESSED: return "OP_COMPRESSED";
    case MONGO_OP_MSG: return "OP_MSG";
    default: return "UNKNOWN";
    }
}

/* A byte cursor over the kept part of a body. */
struct rd {
    const uint8_t *p;
    size_t len, off;
    bool cut;
};

static int rd_i32(struct rd *r, int32_t *v)
{
    if (r->len - r->off < 4)
        return -1;
    *v = (int32_t)bson_u32(r->p + r->off);
    r->off += 4;
    return 0;
}

static int rd_i64(struct rd *r, int64_t *v)
{
    if (r->len - r->off < 8)
        return -1;
    *v = (int64_t)bson_u64(r->p + r->off);
    r->off += 8;
    return 0;
}

static void copy_trunc(char *dst, size_t size, const char *src, size_t n)
{
    if (n >= size)
        n = size - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

/* fullCollectionName "db.coll" */
static int rd_ns(struct rd *r, struct mongo_msg *m)
{
    const uint8_t *s = r->p + r->off;
    const uint8_t *z = memchr(s, 0, r->len - r->off);
    if (!z)
        return -1;
    size_t n = (size_t)(z - s);
    const char *dot = memchr(s, '.', n);
    if (dot) {
        copy_trunc(m->db, sizeof(m->db), (const char *)s, (size_t)(dot - (const char *)s));
        copy_trunc(m->collection, sizeof(m->collection), dot + 1, n - (size_t)(dot + 1 - (const char *)s));
    } else {
        copy_trunc(m->db, sizeof(m->db), (const char *)s, n);
    }
    r->off += n + 1;
    return 0;
}

/* The document at the cursor: complete and valid, or (in a cut body) running
 * past the kept bytes. Returns its start and the bytes of it at hand. */
static int rd_doc(struct rd *r, const uint8_t **doc, size_t *avail, bool required)
{
    size_t room = r->len - r->off;
    if (room == 0 && !required && !r->cut)
        return 1; /* absent */
    if (room < 5) {
        if (!r->cut)
            return -1;
        *doc = NULL; /* the rest was not kept */
        *avail = 0;
        r->off = r->len;
        return 0;
    }
    uint32_t n = bson_doc_len(r->p + r->off, room);
    if (!n)
        return -1;
    *doc = r->p + r->off;
    if (n > room) {
        if (!r->cut)
            return -1;
        *avail = room;
        r->off = r->len;
        return 0;
    }
    if (bson_validate(*doc, n, BSON_MAX_DEPTH) < 0)
        return -1;
    *avail = n;
    r->off += n;
    return 0;
}

static void set_str(char *dst, size_t size, const struct bson_elem *e)
{
    const char *s = bson_elem_str(e);
    if (s)
        copy_trunc(dst, size, s, e->len - 5);
}

/* _id in a query filter: none -> scatter get, {$in: [...]} -> multi get. */
static enum mongo_query_type query_type(const uint8_t *filter, size_t avail)
{
    struct bson_elem e, in;
    if (!filter || bson_find(filter, avail, "_id", &e) != 1)
        return MONGO_Q_SCATTER_GET;
    if (e.type == BSON_DOC && bson_find(e.val, e.len, "$in", &in) == 1)
        return MONGO_Q_MULTI_GET;
    return MONGO_Q_PRIMARY_KEY;
}

static void decode_query_doc(const uint8_t *q, size_t avail, struct mongo_msg *m)
{
    struct bson_iter it;
    struct bson_elem e;

    if (!q)
        return;
    if (!strcmp(m->collection, "$cmd")) {
        /* a command: its name is the first key, its collection the value */
        if (bson_iter_init(&it, q, avail) == 0 && bson_iter_next(&it, &e) == 1) {
            copy_trunc(m->command, sizeof(m->command), e.key, strlen(e.key));
            m->collection[0] = 0;
            set_str(m->collection, sizeof(m->collection), &e);
        }
        return;
    }
    const uint8_t *filter = q;
    size_t flen = avail;
    if (bson_find(q, avail, "$query", &e) == 1 && e.type == BSON_DOC) {
        filter = e.val;
        flen = e.len;
    }
    m->query_type = query_type(filter, flen);
    m->max_time = bson_find(q, avail, "$maxTimeMS", &e) == 1;
}

/* Finds key's document or array among the top-level elements, also when it is
 * the element a cut document ends in (*vavail is then the part held). */
static int find_container(const uint8_t *doc, size_t avail, const char *key, const uint8_t **val,
                          size_t *vavail)
{
    struct bson_iter it;
    struct bson_elem e;
    int r;

    if (bson_iter_init(&it, doc, avail) < 0)
        return 0;
    while ((r = bson_iter_next(&it, &e)) == 1)
        if (!strcmp(e.key, key)) {
            if (e.type != BSON_DOC && e.type != BSON_ARRAY)
                return 0;
            *val = e.val;
            *vavail = e.len;
            return 1;
        }
    if (r < 0 || !it.cut || it.end - it.off < 2)
        return 0;
    const uint8_t *q = it.p + it.off;
    size_t room = it.end - it.off, kl = strnlen((const char *)q + 1, room - 1);
    if (kl == room - 1 || (q[0] != BSON_DOC && q[0] != BSON_ARRAY) || strcmp((const char *)q + 1, key))
        return 0;
    *val = q + 2 + kl;
    *vavail = room - 2 - kl;
    return 1;
}

/* Elements of an array held whole, plus one it is cut in the middle of. */
static int32_t count_elems(const uint8_t *p, size_t avail)
{
    struct bson_iter it;
    struct bson_elem e;
    int32_t n = 0;

    if (bson_iter_init(&it, p, avail) < 0)
        return 0;
    while (bson_iter_next(&it, &e) == 1)
        n++;
    if (it.cut && avail + 1 < bson_doc_len(p, avail))
        n++;
    return n;
}

static int decode_msg_body(const uint8_t *doc, size_t avail, bool request, struct mongo_msg *m)
{
    struct bson_iter it;
    struct bson_elem e, c;

    if (!doc)
        return 0;
    if (bson_iter_init(&it, doc, avail) < 0)
        return -1;
    if (request) {
        if (bson_iter_next(&it, &e) == 1) {
            copy_trunc(m->command, sizeof(m->command), e.key, strlen(e.key));
            set_str(m->collection, sizeof(m->collection), &e);
        }
        if (bson_find(doc, avail, "$db", &e) == 1)
            set_str(m->db, sizeof(m->db), &e);
        m->max_time = bson_find(doc, avail, "maxTimeMS", &e) == 1;
        if (!strcmp(m->command, "find")) {
            if (bson_find(doc, avail, "filter", &e) == 1 && e.type == BSON_DOC)
                m->query_type = query_type(e.val, e.len);
            else
                m->query_type = MONGO_Q_SCATTER_GET;
        }
        return 0;
    }
    if (bson_find(doc, avail, "ok", &e) == 1)
        m->ok = bson_elem_int(&e, 0) != 0;
    if (m->ok == 0 && bson_find(doc, avail, "code", &e) == 1)
        m->error_code = (int32_t)bson_elem_int(&e, 0);
    m->reply_docs = 1;
    const uint8_t *cur, *batch;
    size_t cur_avail, batch_avail;
    if (find_container(doc, avail, "cursor", &cur, &cur_avail)) {
        if (bson_find(cur, cur_avail, "id", &c) == 1)
            m->cursor_id = bson_elem_int(&c, 0);
        if (find_container(cur, cur_avail, "firstBatch", &batch, &batch_avail) ||
            find_container(cur, cur_avail, "nextBatch", &batch, &batch_avail))
            m->reply_docs = count_elems(batch, batch_avail);
    }
    return 0;
}

static int decode_op_msg(struct rd *r, struct mongo_msg *m)
{
    int32_t flags;
    bool body_seen = false;

    if (rd_i32(r, &flags) < 0)
        return -1;
    m->flags = (uint32_t)flags;
    if (!r->cut && (m->flags & MONGO_MF_CHECKSUM)) {
        if (r->len - r->off < 4)
            return -1;
        r->len -= 4;
    }
    while (r->off < r->len) {
        uint8_t kind = r->p[r->off++];
        m->nsections++;
        if (kind == 0) {
            const uint8_t *doc;
            size_t avail;
            if (body_seen || rd_doc(r, &doc, &avail, true) != 0)
                return -1;
            body_seen = true;
            /* requests carry no responseTo; replies always do */
            if (decode_msg_body(doc, avail, m->response_to == 0, m) < 0)
                return -1;
        } else if (kind == 1) {
            int32_t size;
            if (rd_i32(r, &size) < 0)
                return r->cut ? 0 : -1;
            if (size < 4)
                return -1;
            size_t rest = (size_t)size - 4;
            if (rest > r->len - r->off) {
                if (!r->cut)
                    return -1;
                r->off = r->len;
            } else {
                r->off += rest;
            }
        } else {
            return -1;
        }
    }
    return body_seen || r->cut ? 0 : -1;
}

int mongo_decode(const uint8_t hdr[MONGO_HDR_LEN], const uint8_t *body, size_t keep, bool cut,
                 struct mongo_msg *m, const char **why)
{
    struct rd r = {.p = body, .len = keep, .off = 0, .cut = cut};
    int32_t zero, i;
    int64_t l;
    const uint8_t *doc;
    size_t avail;
    int rc = 0;

    memset(m, 0, sizeof(*m));
    m->length = (int32_t)bson_u32(hdr);
    m->request_id = (int32_t)bson_u32(hdr + 4);
    m->response_to = (int32_t)bson_u32(hdr + 8);
    m->opcode = (int32_t)bson_u32(hdr + 12);
    m->cut = cut;
    m->cursor_id = -1;
    m->ok = -1;
    *why = NULL;

    switch (m->opcode) {
    case MONGO_OP_REPLY:
        if (rd_i32(&r, &i) < 0 || rd_i64(&r, &l) < 0 || rd_i32(&r, &zero) < 0 || rd_i32(&r, &m->number) < 0)
            goto short_body;
        m->flags = (uint32_t)i;
        m->cursor_id = l;
        m->reply_docs = m->number;
        m->reply_bytes = (uint32_t)m->length - MONGO_HDR_LEN - 20;
        for (int32_t k = 0; k < m->number && r.off < r.len; k++) /* check the documents we hold */
            if ((rc = rd_doc(&r, &doc, &avail, true)) < 0)
                goto bad_doc;
        if (!cut && r.off != r.len)
            goto trailing;
        break;
    case MONGO_OP_QUERY:
        if (rd_i32(&r, &i) < 0 || rd_ns(&r, m) < 0 || rd_i32(&r, &zero) < 0 || rd_i32(&r, &m->number) < 0)
            goto short_body;
        m->flags = (uint32_t)i;
        if (rd_doc(&r, &doc, &avail, true) < 0)
            goto bad_doc;
        decode_query_doc(doc, avail, m);
        if (r.off < r.len && rd_doc(&r, &doc, &avail, false) < 0) /* returnFieldsSelector */
            goto bad_doc;
        if (!cut && r.off != r.len)
            goto trailing;
        break;
    case MONGO_OP_GET_MORE:
        if (rd_i32(&r, &zero) < 0 || rd_ns(&r, m) < 0 || rd_i32(&r, &m->number) < 0 ||
            rd_i64(&r, &m->cursor_id) < 0)
            goto short_body;
        if (!cut && r.off != r.len)
            goto trailing;
        break;
    case MONGO_OP_INSERT:
        if (rd_i32(&r, &i) < 0 || rd_ns(&r, m) < 0)
            goto short_body;
        m->flags = (uint32_t)i;
        while (r.off < r.len)
            if (rd_doc(&r, &doc, &avail, true) < 0)
                goto bad_doc;
        break;
    case MONGO_OP_UPDATE:
    case MONGO_OP_DELETE:
        if (rd_i32(&r, &zero) < 0 || rd_ns(&r, m) < 0 || rd_i32(&r, &i) < 0)
            goto short_body;
        m->flags = (uint32_t)i;
        while (r.off < r.len)
            if (rd_doc(&r, &doc, &avail, true) < 0)
                goto bad_doc;
        break;
    case MONGO_OP_KILL_CURSORS:
        if (rd_i32(&r, &zero) < 0 || rd_i32(&r, &m->number) < 0)
            goto short_body;
        if (m->number < 0 || (!cut && (size_t)m->number * 8 != r.len - r.off))
            goto trailing;
        break;
    case MONGO_OP_COMPRESSED:
        if (rd_i32(&r, &m->orig_opcode) < 0 || rd_i32(&r, &m->uncompressed_size) < 0 || r.off >= r.len)
            goto short_body;
        m->compressor = r.p[r.off++];
        if (m->uncompressed_size < 0 || m->orig_opcode == MONGO_OP_COMPRESSED) {
            *why = "bad OP_COMPRESSED header";
            return -1;
        }
        break;
    case MONGO_OP_MSG:
        if (decode_op_msg(&r, m) < 0) {
            *why = "malformed OP_MSG";
            return -1;
        }
        if (m->response_to != 0)
            m->reply_bytes = (uint32_t)m->length - MONGO_HDR_LEN - 4 - (m->flags & MONGO_MF_CHECKSUM ? 4 : 0);
        break;
    default:
        *why = "unknown opcode";
        return -1;
    }
    return 0;

short_body:
    *why = "message body too short";
    return -1;
bad_doc:
    *why = "malformed BSON document";
    return -1;
trailing:
    *why = "message length does not match its contents";
    return -1;
}

void mongo_decoder_init(struct mongo_decoder *d, mongo_msg_cb on_msg, mongo_err_cb on_error, void *arg)
{
    memset(d, 0, sizeof(*d));
    d->on_msg = on_msg;
    d->on_error = on_error;
    d->arg = arg;
}

void mongo_decoder_free(struct mongo_decoder *d)
{
    free(d->body);
    d->body = NULL;
}

static void fail(struct mongo_decoder *d, const char *why, bool dead)
{
    d->errors++;
    if (dead)
        d->dead = true;
    if (d->on_error)
        d->on_error(d->arg, why);
}

static void finish_message(struct mongo_decoder *d)
{
    struct mongo_msg m;
    const char *why;

    if (mongo_decode(d->hdr, d->body, d->body_keep, d->body_len > d->body_keep, &m, &why) < 0) {
        fail(d, why, false); /* the framing holds: go on with the next message */
    } else {
        d->messages++;
        if (d->on_msg)
            d->on_msg(d->arg, &m);
    }
    d->hdr_have = 0;
}

void mongo_decoder_feed(struct mongo_decoder *d, const uint8_t *p, size_t n)
{
    while (n && !d->dead) {
        if (d->hdr_have < MONGO_HDR_LEN) {
            size_t k = MONGO_HDR_LEN - d->hdr_have;
            if (k > n)
                k = n;
            memcpy(d->hdr + d->hdr_have, p, k);
            d->hdr_have += k;
            p += k;
            n -= k;
            if (d->hdr_have < MONGO_HDR_LEN)
                return;
            uint32_t len = bson_u32(d->hdr);
            if (len < MONGO_HDR_LEN || len > MONGO_MAX_MSG) {
                fail(d, len < MONGO_HDR_LEN ? "message length below the header size"
                                            : "message length above 48000000 bytes", true);
                return;
            }
            d->body_len = len - MONGO_HDR_LEN;
            d->body_keep = d->body_len < MONGO_BODY_CAP ? d->body_len : MONGO_BODY_CAP;
            d->body_have = 0;
            if (d->body_keep && !d->body && !(d->body = malloc(MONGO_BODY_CAP))) {
                fail(d, "out of memory", true);
                return;
            }
            if (d->body_len == 0) {
                finish_message(d);
                continue;
            }
        }
        size_t want = d->body_len - d->body_have;
        size_t k = want < n ? want : n;
        if (d->body_have < d->body_keep) {
            size_t c = d->body_keep - d->body_have;
            if (c > k)
                c = k;
            memcpy(d->body + d->body_have, p, c);
        }
        d->body_have += (uint32_t)k;
        p += k;
        n -= k;
        if (d->body_have == d->body_len)
            finish_message(d);
    }
}

void mongo_pending_init(struct mongo_pending *p, uint32_t max)
{
    memset(p, 0, sizeof(*p));
    p->max = max ? max : MONGO_PENDING_MAX;
}

void mongo_pending_free(struct mongo_pending *p)
{
    free(p->v);
    mongo_pending_init(p, p->max);
}

/* Copies the live entries, oldest first, into a fresh ring of cap slots. */
static int pending_relayout(struct mongo_pending *p, uint32_t cap)
{
    struct mongo_pending_entry *v = calloc(cap, sizeof(*v));
    uint32_t k = 0;

    if (!v)
        return -1;
    for (uint32_t i = 0; i < p->n; i++) {
        struct mongo_pending_entry *e = &p->v[(p->head + i) % p->cap];
        if (e->used)
            v[k++] = *e;
    }
    free(p->v);
    p->v = v;
    p->cap = cap;
    p->head = 0;
    p->n = p->live = k;
    return 0;
}

/* Keeps head on a live entry so that a full ring drops a request, not a hole. */
static void pending_skip_holes(struct mongo_pending *p)
{
    while (p->n && !p->v[p->head].used) {
        p->head = (p->head + 1) % p->cap;
        p->n--;
    }
}

int mongo_pending_add(struct mongo_pending *p, int32_t request_id, uint64_t start_ms,
                      void *const tag[MONGO_PENDING_TAGS])
{
    if (p->n == p->cap) {
        if (p->live < p->n) {
            if (pending_relayout(p, p->cap) < 0)
                return -1;
        } else if (p->cap < p->max) {
            uint32_t cap = p->cap ? p->cap * 2 : 8;
            if (pending_relayout(p, cap < p->max ? cap : p->max) < 0)
                return -1;
        } else {
            p->v[p->head].used = false; /* full of live requests: the oldest goes */
            p->live--;
            p->dropped++;
            pending_skip_holes(p);
        }
    }
    struct mongo_pending_entry *e = &p->v[(p->head + p->n) % p->cap];
    e->request_id = request_id;
    e->used = true;
    e->start_ms = start_ms;
    memcpy(e->tag, tag, sizeof(e->tag));
    p->n++;
    p->live++;
    return 0;
}

int mongo_pending_take(struct mongo_pending *p, int32_t response_to, struct mongo_pending_entry *out)
{
    /* replies mostly come in order: the oldest first */
    for (uint32_t i = 0; i < p->n; i++) {
        struct mongo_pending_entry *e = &p->v[(p->head + i) % p->cap];
        if (e->used && e->request_id == response_to) {
            *out = *e;
            e->used = false;
            p->live--;
            pending_skip_holes(p);
            return 1;
        }
    }
    return 0;
}
