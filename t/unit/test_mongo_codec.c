/* mongo_proxy's BSON reader and wire decoder: every opcode, arbitrary splits,
 * messages longer than the cap, and hostile input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bson.h"
#include "codec.h"
#include "tap.h"

struct bb {
    uint8_t *p;
    size_t n, cap;
};

static void put(struct bb *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            abort();
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void put32(struct bb *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(b, x, 4);
}

static void put64(struct bb *b, uint64_t v)
{
    put32(b, (uint32_t)v);
    put32(b, (uint32_t)(v >> 32));
}

static void patch32(struct bb *b, size_t at, uint32_t v)
{
    b->p[at] = (uint8_t)v;
    b->p[at + 1] = (uint8_t)(v >> 8);
    b->p[at + 2] = (uint8_t)(v >> 16);
    b->p[at + 3] = (uint8_t)(v >> 24);
}

static size_t doc_begin(struct bb *b)
{
    size_t at = b->n;
    put32(b, 0);
    return at;
}

static void doc_end(struct bb *b, size_t at)
{
    put(b, "", 1);
    patch32(b, at, (uint32_t)(b->n - at));
}

static void key(struct bb *b, uint8_t t, const char *k)
{
    put(b, &t, 1);
    put(b, k, strlen(k) + 1);
}

static void e_str(struct bb *b, const char *k, const char *v)
{
    key(b, BSON_STRING, k);
    put32(b, (uint32_t)strlen(v) + 1);
    put(b, v, strlen(v) + 1);
}

static void e_i32(struct bb *b, const char *k, int32_t v)
{
    key(b, BSON_INT32, k);
    put32(b, (uint32_t)v);
}

static void e_i64(struct bb *b, const char *k, int64_t v)
{
    key(b, BSON_INT64, k);
    put64(b, (uint64_t)v);
}

static size_t e_doc(struct bb *b, const char *k)
{
    key(b, BSON_DOC, k);
    return doc_begin(b);
}

static size_t msg_begin(struct bb *b, int32_t rid, int32_t to, int32_t op)
{
    size_t at = b->n;
    put32(b, 0);
    put32(b, (uint32_t)rid);
    put32(b, (uint32_t)to);
    put32(b, (uint32_t)op);
    return at;
}

static void msg_end(struct bb *b, size_t at)
{
    patch32(b, at, (uint32_t)(b->n - at));
}

struct got {
    struct mongo_msg m[16];
    int n, errs;
};

static void on_msg(void *arg, const struct mongo_msg *m)
{
    struct got *g = arg;
    if (g->n < 16)
        g->m[g->n] = *m;
    g->n++;
}

static void on_err(void *arg, const char *why)
{
    struct got *g = arg;
    g->errs++;
}

static void decode_all(const struct bb *b, size_t step, struct got *g)
{
    struct mongo_decoder d;
    memset(g, 0, sizeof(*g));
    mongo_decoder_init(&d, on_msg, on_err, g);
    for (size_t off = 0; off < b->n; off += step)
        mongo_decoder_feed(&d, b->p + off, b->n - off < step ? b->n - off : step);
    mongo_decoder_free(&d);
}

int main(void)
{
    struct bb b = {0};
    struct got g;
    size_t m, d, d2;

    /* OP_QUERY isMaster on admin.$cmd (the driver's legacy handshake) */
    m = msg_begin(&b, 1, 0, MONGO_OP_QUERY);
    put32(&b, 0);
    put(&b, "admin.$cmd", 11);
    put32(&b, 0);
    put32(&b, (uint32_t)-1);
    d = doc_begin(&b);
    e_i32(&b, "isMaster", 1);
    doc_end(&b, d);
    msg_end(&b, m);
    /* OP_QUERY test.users {$query: {_id: {$in: [..]}}, $maxTimeMS}, tailable|exhaust */
    m = msg_begin(&b, 2, 0, MONGO_OP_QUERY);
    put32(&b, MONGO_QF_TAILABLE | MONGO_QF_EXHAUST);
    put(&b, "test.users", 11);
    put32(&b, 0);
    put32(&b, 10);
    d = doc_begin(&b);
    d2 = e_doc(&b, "$query");
    size_t d3 = e_doc(&b, "_id");
    key(&b, BSON_ARRAY, "$in");
    size_t arr = doc_begin(&b);
    e_i32(&b, "0", 1);
    e_i32(&b, "1", 2);
    doc_end(&b, arr);
    doc_end(&b, d3);
    doc_end(&b, d2);
    e_i32(&b, "$maxTimeMS", 100);
    doc_end(&b, d);
    msg_end(&b, m);
    /* OP_MSG find with a filter without _id, then a document sequence and a checksum */
    m = msg_begin(&b, 3, 0, MONGO_OP_MSG);
    put32(&b, MONGO_MF_CHECKSUM);
    put(&b, "", 1);
    d = doc_begin(&b);
    e_str(&b, "find", "orders");
    d2 = e_doc(&b, "filter");
    e_str(&b, "state", "open");
    doc_end(&b, d2);
    e_str(&b, "$db", "shop");
    doc_end(&b, d);
    put(&b, "\x01", 1);
    size_t seq = b.n;
    put32(&b, 0);
    put(&b, "documents", 10);
    d = doc_begin(&b);
    e_i32(&b, "a", 1);
    doc_end(&b, d);
    patch32(&b, seq, (uint32_t)(b.n - seq));
    put32(&b, 0xdeadbeef);
    msg_end(&b, m);
    /* OP_MSG reply {cursor: {firstBatch: [], id: 77}, ok: 1} */
    m = msg_begin(&b, 4, 3, MONGO_OP_MSG);
    put32(&b, 0);
    put(&b, "", 1);
    d = doc_begin(&b);
    d2 = e_doc(&b, "cursor");
    key(&b, BSON_ARRAY, "firstBatch");
    arr = doc_begin(&b);
    doc_end(&b, arr);
    e_i64(&b, "id", 77);
    doc_end(&b, d2);
    e_i32(&b, "ok", 1);
    doc_end(&b, d);
    msg_end(&b, m);
    /* OP_REPLY cursor-not-found, cursor 0, no documents */
    m = msg_begin(&b, 5, 2, MONGO_OP_REPLY);
    put32(&b, MONGO_RF_CURSOR_NOT_FOUND);
    put64(&b, 0);
    put32(&b, 0);
    put32(&b, 0);
    msg_end(&b, m);
    /* OP_GET_MORE, OP_INSERT, OP_KILL_CURSORS, OP_COMPRESSED */
    m = msg_begin(&b, 6, 0, MONGO_OP_GET_MORE);
    put32(&b, 0);
    put(&b, "test.users", 11);
    put32(&b, 5);
    put64(&b, 1234);
    msg_end(&b, m);
    m = msg_begin(&b, 7, 0, MONGO_OP_INSERT);
    put32(&b, 0);
    put(&b, "test.logs", 10);
    d = doc_begin(&b);
    e_i32(&b, "x", 1);
    doc_end(&b, d);
    msg_end(&b, m);
    m = msg_begin(&b, 8, 0, MONGO_OP_KILL_CURSORS);
    put32(&b, 0);
    put32(&b, 1);
    put64(&b, 1234);
    msg_end(&b, m);
    m = msg_begin(&b, 9, 0, MONGO_OP_COMPRESSED);
    put32(&b, MONGO_OP_MSG);
    put32(&b, 100);
    put(&b, "\x02zzzzzz", 7);
    msg_end(&b, m);

    size_t steps[] = {b.n, 1, 3, 16, 17, 100};
    for (size_t si = 0; si < sizeof(steps) / sizeof(steps[0]); si++) {
        decode_all(&b, steps[si], &g);
        is_int(g.n, 9, "split %zu: nine messages", steps[si]);
        is_int(g.errs, 0, "split %zu: no errors", steps[si]);
    }
    decode_all(&b, 7, &g);
    is_str(g.m[0].command, "isMaster", "OP_QUERY on $cmd: command");
    is_str(g.m[0].db, "admin", "OP_QUERY on $cmd: db");
    is_str(g.m[1].collection, "users", "OP_QUERY: collection");
    is_int(g.m[1].query_type, MONGO_Q_MULTI_GET, "OP_QUERY $in on _id: multi get");
    ok(g.m[1].max_time, "OP_QUERY: $maxTimeMS seen");
    is_int((int)g.m[1].flags, MONGO_QF_TAILABLE | MONGO_QF_EXHAUST, "OP_QUERY flags");
    is_str(g.m[2].command, "find", "OP_MSG: command");
    is_str(g.m[2].collection, "orders", "OP_MSG: collection");
    is_str(g.m[2].db, "shop", "OP_MSG: $db");
    is_int(g.m[2].query_type, MONGO_Q_SCATTER_GET, "OP_MSG find without _id: scatter get");
    is_int((int)g.m[2].nsections, 2, "OP_MSG: body and document sequence");
    is_int((int)g.m[3].cursor_id, 77, "OP_MSG reply: cursor id");
    is_int(g.m[3].ok, 1, "OP_MSG reply: ok");
    is_int((int)g.m[4].flags, MONGO_RF_CURSOR_NOT_FOUND, "OP_REPLY flags");
    is_int((int)g.m[4].cursor_id, 0, "OP_REPLY cursor");
    is_int((int)g.m[5].cursor_id, 1234, "OP_GET_MORE cursor");
    is_str(g.m[6].collection, "logs", "OP_INSERT collection");
    is_int(g.m[7].number, 1, "OP_KILL_CURSORS count");
    is_int(g.m[8].orig_opcode, MONGO_OP_MSG, "OP_COMPRESSED original opcode");
    is_int(g.m[8].compressor, 2, "OP_COMPRESSED zlib");
    is_int(g.m[3].reply_docs, 0, "OP_MSG reply: empty firstBatch, no documents");
    is_int((int)g.m[3].reply_bytes, g.m[3].length - 20, "OP_MSG reply: bytes of its sections");
    is_int(g.m[4].reply_docs, 0, "OP_REPLY: numberReturned documents");
    is_int((int)g.m[4].reply_bytes, 0, "OP_REPLY: no document bytes");

    /* a 2 MiB OP_MSG (an insert of a big document in the body): decoded from its start */
    struct bb big = {0};
    m = msg_begin(&big, 10, 0, MONGO_OP_MSG);
    put32(&big, 0);
    put(&big, "", 1);
    d = doc_begin(&big);
    e_str(&big, "insert", "blobs");
    char *s = malloc(2 << 20);
    memset(s, 'x', (2 << 20) - 1);
    s[(2 << 20) - 1] = 0;
    e_str(&big, "blob", s);
    free(s);
    e_str(&big, "$db", "t");
    doc_end(&big, d);
    msg_end(&big, m);
    decode_all(&big, 4096, &g);
    is_int(g.n, 1, "2 MiB message: decoded");
    is_int(g.errs, 0, "2 MiB message: no error");
    ok(g.m[0].cut, "2 MiB message: cut");
    is_str(g.m[0].command, "insert", "2 MiB message: command from its start");
    is_str(g.m[0].collection, "blobs", "2 MiB message: collection");

    /* hostile: a 100 MiB length, a length below the header */
    struct bb h = {0};
    msg_begin(&h, 1, 0, MONGO_OP_MSG);
    patch32(&h, 0, 100u << 20);
    decode_all(&h, 1, &g);
    is_int(g.errs, 1, "100 MiB claimed: one error");
    struct bb h2 = {0};
    msg_begin(&h2, 1, 0, MONGO_OP_MSG);
    patch32(&h2, 0, 5);
    put(&h2, "garbagegarbage", 14);
    decode_all(&h2, 1, &g);
    is_int(g.errs, 1, "length 5: one error, then decoding stops");
    is_int(g.n, 0, "length 5: nothing decoded");

    /* nesting: 100 levels pass, 101 do not; a framed bomb is an error and decoding goes on */
    for (int depth = 99; depth <= 101; depth++) {
        struct bb n = {0};
        size_t at[128];
        at[0] = doc_begin(&n);
        for (int i = 1; i < depth; i++)
            at[i] = e_doc(&n, "a");
        for (int i = depth - 1; i >= 0; i--)
            doc_end(&n, at[i]);
        is_int(bson_validate(n.p, n.n, BSON_MAX_DEPTH), depth <= BSON_MAX_DEPTH ? 0 : -1,
               "nesting depth %d", depth);
        free(n.p);
    }
    struct bb nb = {0};
    m = msg_begin(&nb, 1, 0, MONGO_OP_MSG);
    put32(&nb, 0);
    put(&nb, "", 1);
    size_t at[300];
    at[0] = doc_begin(&nb);
    for (int i = 1; i < 300; i++)
        at[i] = e_doc(&nb, "a");
    for (int i = 299; i >= 0; i--)
        doc_end(&nb, at[i]);
    msg_end(&nb, m);
    put(&nb, b.p, b.n); /* then the nine good messages */
    decode_all(&nb, 5, &g);
    is_int(g.errs, 1, "nesting bomb: an error");
    is_int(g.n, 9, "nesting bomb: the messages after it still decode");

    /* a document whose length lies (inside a sound frame) */
    struct bb l = {0};
    m = msg_begin(&l, 1, 0, MONGO_OP_MSG);
    put32(&l, 0);
    put(&l, "", 1);
    put32(&l, 1u << 30);
    put(&l, "\0\0\0\0", 4);
    msg_end(&l, m);
    decode_all(&l, 2, &g);
    is_int(g.errs, 1, "document length beyond the message: an error");

    /* BSON: a string whose length runs past the document */
    struct bb sb = {0};
    d = doc_begin(&sb);
    key(&sb, BSON_STRING, "s");
    put32(&sb, 1000);
    put(&sb, "abc", 4);
    doc_end(&sb, d);
    is_int(bson_validate(sb.p, sb.n, BSON_MAX_DEPTH), -1, "string length beyond the document");

    /* reply sizes: an OP_MSG nextBatch of 3, an OP_REPLY with 2 documents, a command reply */
    struct bb r = {0};
    m = msg_begin(&r, 20, 11, MONGO_OP_MSG);
    put32(&r, 0);
    put(&r, "", 1);
    d = doc_begin(&r);
    d2 = e_doc(&r, "cursor");
    key(&r, BSON_ARRAY, "nextBatch");
    arr = doc_begin(&r);
    for (int i = 0; i < 3; i++) {
        char k[2] = {(char)('0' + i), 0};
        size_t x = e_doc(&r, k);
        e_i32(&r, "v", i);
        doc_end(&r, x);
    }
    doc_end(&r, arr);
    e_i64(&r, "id", 0);
    doc_end(&r, d2);
    e_i32(&r, "ok", 1);
    doc_end(&r, d);
    msg_end(&r, m);
    m = msg_begin(&r, 21, 12, MONGO_OP_REPLY);
    put32(&r, 0);
    put64(&r, 0);
    put32(&r, 0);
    put32(&r, 2);
    size_t docs_at = r.n;
    for (int i = 0; i < 2; i++) {
        d = doc_begin(&r);
        e_i32(&r, "n", i);
        doc_end(&r, d);
    }
    size_t docs_len = r.n - docs_at;
    msg_end(&r, m);
    m = msg_begin(&r, 22, 13, MONGO_OP_MSG);
    put32(&r, 0);
    put(&r, "", 1);
    d = doc_begin(&r);
    e_i32(&r, "n", 1);
    e_i32(&r, "ok", 1);
    doc_end(&r, d);
    msg_end(&r, m);
    decode_all(&r, 5, &g);
    is_int(g.n, 3, "reply sizes: three messages");
    is_int(g.m[0].reply_docs, 3, "OP_MSG nextBatch: 3 documents");
    is_int(g.m[1].reply_docs, 2, "OP_REPLY: 2 documents");
    is_int((int)g.m[1].reply_bytes, (int)docs_len, "OP_REPLY: bytes of its documents");
    is_int(g.m[2].reply_docs, 1, "OP_MSG command reply: its body document");

    /* the in-flight table: matching, out of order, unknown ids, the bound */
    struct mongo_pending pd;
    struct mongo_pending_entry pe;
    void *tags[MONGO_PENDING_TAGS] = {&pd, NULL, NULL, NULL, NULL, &pe};
    mongo_pending_init(&pd, 4);
    is_int(mongo_pending_take(&pd, 1, &pe), 0, "pending: empty table finds nothing");
    for (int32_t i = 1; i <= 3; i++)
        mongo_pending_add(&pd, i, 100 + (uint64_t)i, tags);
    is_int(mongo_pending_take(&pd, 2, &pe), 1, "pending: a reply out of order matches");
    is_int((int)pe.start_ms, 102, "pending: its start time");
    ok(pe.tag[0] == &pd && pe.tag[1] == NULL && pe.tag[5] == &pe, "pending: its tags");
    is_int(mongo_pending_take(&pd, 2, &pe), 0, "pending: a second reply to it matches nothing");
    is_int(mongo_pending_take(&pd, 99, &pe), 0, "pending: an unknown responseTo matches nothing");
    for (int32_t i = 4; i <= 6; i++) /* 1 3 4 5 fill the 4 slots; 6 pushes out 1 */
        mongo_pending_add(&pd, i, 0, tags);
    is_int((int)pd.live, 4, "pending: bounded");
    is_int((int)pd.dropped, 1, "pending: the oldest dropped");
    is_int(mongo_pending_take(&pd, 1, &pe), 0, "pending: the dropped request is gone");
    int found = 0;
    for (int32_t i = 3; i <= 6; i++)
        found += mongo_pending_take(&pd, i, &pe);
    is_int(found, 4, "pending: the others still match");
    is_int((int)pd.live, 0, "pending: empty again");
    for (int32_t i = 0; i < 1000; i++) /* long runs wrap the ring */
        mongo_pending_add(&pd, i, 0, tags);
    is_int(mongo_pending_take(&pd, 996, &pe), 1, "pending: after wrapping, a recent one matches");
    is_int(mongo_pending_take(&pd, 995, &pe), 0, "pending: after wrapping, an old one is gone");
    mongo_pending_free(&pd);
    mongo_pending_init(&pd, MONGO_PENDING_MAX);
    for (int32_t i = 0; i < 2000; i++)
        mongo_pending_add(&pd, i, 0, tags);
    is_int((int)pd.live, MONGO_PENDING_MAX, "pending: at most MONGO_PENDING_MAX in flight");
    is_int(mongo_pending_take(&pd, 2000 - MONGO_PENDING_MAX, &pe), 1, "pending: the oldest kept matches");
    mongo_pending_free(&pd);

    free(r.p);
    free(b.p);
    free(big.p);
    free(h.p);
    free(h2.p);
    free(nb.p);
    free(l.p);
    free(sb.p);
    return done_testing();
}
