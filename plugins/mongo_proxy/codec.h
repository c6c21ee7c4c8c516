/* mongo_proxy: an incremental decoder of the MongoDB wire protocol. It is fed
 * the bytes of one direction in pieces of any size, keeps at most
 * MONGO_BODY_CAP bytes of each message (the header and the start of the body:
 * enough for the fixed fields and the first document), skips the rest without
 * buffering it, and reports each message once it has passed whole. It never
 * changes or holds back the bytes it is fed. */
#ifndef HERALD_MONGO_CODEC_H
#define HERALD_MONGO_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MONGO_HDR_LEN 16
#define MONGO_MAX_MSG (48 * 1000 * 1000) /* the server's maxMessageSizeBytes */
#define MONGO_BODY_CAP 16384

enum mongo_opcode {
    MONGO_OP_REPLY = 1,
    MONGO_OP_UPDATE = 2001,
    MONGO_OP_INSERT = 2002,
    MONGO_OP_QUERY = 2004,
    MONGO_OP_GET_MORE = 2005,
    MONGO_OP_DELETE = 2006,
    MONGO_OP_KILL_CURSORS = 2007,
    MONGO_OP_COMPRESSED = 2012,
    MONGO_OP_MSG = 2013,
};

/* OP_QUERY flags */
#define MONGO_QF_TAILABLE 0x02u
#define MONGO_QF_NO_CURSOR_TIMEOUT 0x10u
#define MONGO_QF_AWAIT_DATA 0x20u
#define MONGO_QF_EXHAUST 0x40u
/* OP_REPLY flags */
#define MONGO_RF_CURSOR_NOT_FOUND 0x01u
#define MONGO_RF_QUERY_FAILURE 0x02u
/* OP_MSG flags */
#define MONGO_MF_CHECKSUM 0x01u
#define MONGO_MF_MORE_TO_COME 0x02u

enum mongo_query_type { MONGO_Q_NONE = 0, MONGO_Q_PRIMARY_KEY, MONGO_Q_SCATTER_GET, MONGO_Q_MULTI_GET };

struct mongo_msg {
    int32_t length, request_id, response_to, opcode;
    bool cut;                /* longer than MONGO_BODY_CAP: decoded from its start only */
    uint32_t flags;          /* OP_QUERY, OP_REPLY, OP_MSG, OP_UPDATE/DELETE flags */
    int64_t cursor_id;       /* OP_REPLY, OP_GET_MORE; an OP_MSG reply's cursor.id (-1: none) */
    int32_t number;          /* numberReturned / numberToReturn / numberOfCursorIDs / skip */
    int32_t orig_opcode;     /* OP_COMPRESSED */
    int32_t uncompressed_size;
    uint8_t compressor;      /* 0 noop, 1 snappy, 2 zlib, 3 zstd */
    uint32_t nsections;      /* OP_MSG: sections seen (document sequences included) */
    char db[64];
    char collection[128];    /* without the database */
    char command[64];        /* command name (OP_MSG, or OP_QUERY on $cmd); "" for a plain query */
    enum mongo_query_type query_type;
    bool max_time;           /* $maxTimeMS / maxTimeMS present */
    int ok;                  /* OP_MSG reply: 1 ok, 0 failed, -1 unknown */
    int32_t error_code;      /* OP_MSG reply with ok 0: code */
    int32_t reply_docs;      /* reply: numberReturned, or an OP_MSG reply's cursor batch length
                              * (elements held, when cut), or 1 for its body document */
    uint32_t reply_bytes;    /* reply: bytes of its documents (OP_REPLY) or sections (OP_MSG) */
};

typedef void (*mongo_msg_cb)(void *arg, const struct mongo_msg *m);
typedef void (*mongo_err_cb)(void *arg, const char *why);

struct mongo_decoder {
    mongo_msg_cb on_msg;
    mongo_err_cb on_error;
    void *arg;
    bool dead;               /* framing lost (bad length): stop decoding, bytes still pass */
    uint8_t hdr[MONGO_HDR_LEN];
    size_t hdr_have;
    uint32_t body_len;       /* of the message in progress (length - 16) */
    uint32_t body_keep;      /* min(body_len, MONGO_BODY_CAP) */
    uint32_t body_have;      /* bytes of the body seen so far */
    uint8_t *body;           /* MONGO_BODY_CAP bytes, allocated on first use */
    uint64_t messages, errors;
};

void mongo_decoder_init(struct mongo_decoder *d, mongo_msg_cb on_msg, mongo_err_cb on_error, void *arg);
void mongo_decoder_free(struct mongo_decoder *d);
/* Feeds the next n bytes of the stream. */
void mongo_decoder_feed(struct mongo_decoder *d, const uint8_t *p, size_t n);

/* Decodes one message from its header and the first `keep` bytes of its body
 * (cut: the body is longer). 0, or -1 with *why set when it is malformed. */
int mongo_decode(const uint8_t hdr[MONGO_HDR_LEN], const uint8_t *body, size_t keep, bool cut,
                 struct mongo_msg *m, const char **why);
const char *mongo_opcode_name(int32_t opcode);

/* Requests waiting for their reply, matched by requestID/responseTo. A
 * bounded table: when full the oldest entry is dropped. tag[] carries what the
 * caller wants back with the reply (stat handles); the codec never reads it. */
#define MONGO_PENDING_MAX 1024
#define MONGO_PENDING_TAGS 6

struct mongo_pending_entry {
    int32_t request_id;
    bool used;
    uint64_t start_ms;
    void *tag[MONGO_PENDING_TAGS];
};

struct mongo_pending {
    struct mongo_pending_entry *v; /* a ring of cap slots from head; taken ones leave holes */
    uint32_t cap, max, head, n, live;
    uint64_t dropped;              /* entries pushed out unanswered (tests only) */
};

void mongo_pending_init(struct mongo_pending *p, uint32_t max);
void mongo_pending_free(struct mongo_pending *p);
/* Remembers a request; 0, or -1 when out of memory (nothing remembered). */
int mongo_pending_add(struct mongo_pending *p, int32_t request_id, uint64_t start_ms,
                      void *const tag[MONGO_PENDING_TAGS]);
/* Takes the request that response_to answers into *out: 1 found, 0 not. */
int mongo_pending_take(struct mongo_pending *p, int32_t response_to, struct mongo_pending_entry *out);

#endif
