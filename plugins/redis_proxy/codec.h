/* redis_proxy: the RESP2 codec. Pure: no I/O, no SDK. The decoder is fed
 * bytes as they arrive, split anywhere, and hands out one complete value at
 * a time (simple string, error, integer, bulk string or null, array or null
 * array, nested); requests may also come in Redis' inline form ("GET k\r\n").
 * Every size a peer announces is checked against limits before anything is
 * allocated for it, buffers grow only as bytes really arrive, and the memory
 * one value holds is counted, so bad input ends in an error, never in a
 * crash or unbounded memory. The encoder writes values through a callback. */
#ifndef HERALD_PLUGIN_REDIS_CODEC_H
#define HERALD_PLUGIN_REDIS_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum resp_type {
    RESP_SIMPLE = 0,    /* +OK */
    RESP_ERROR,         /* -ERR ... */
    RESP_INTEGER,       /* :42 */
    RESP_BULK,          /* $3 foo */
    RESP_NULL,          /* $-1 */
    RESP_ARRAY,         /* *2 ... */
    RESP_NULL_ARRAY,    /* *-1 */
};

struct resp_value {
    enum resp_type type;
    size_t len;                  /* bytes of str, or elements of an array */
    int64_t integer;             /* RESP_INTEGER */
    char *str;                   /* SIMPLE, ERROR, BULK: len bytes and a NUL (bulk strings may hold NULs) */
    struct resp_value *elems;    /* ARRAY: len values */
    size_t cap;                  /* the decoder's: str bytes or elems allocated */
};

struct resp_limits {
    size_t max_bulk;        /* longest bulk string (Redis: proto-max-bulk-len, 512 MiB) */
    size_t max_elems;       /* most elements in one array */
    unsigned max_depth;     /* arrays nested in arrays (1: flat arrays only) */
    size_t max_line;        /* longest simple string, error or inline command line */
    size_t max_mem;         /* memory one decoded value may hold, all counted */
    bool inline_commands;   /* accept "GET k\r\n" at the top level (requests) */
};

enum resp_result {
    RESP_MORE = 0,  /* all bytes taken, the value is not complete yet */
    RESP_DONE,      /* a value is complete */
    RESP_ERR,       /* protocol error: the decoder is dead (d->error says why) */
};

struct resp_frame {
    struct resp_value *v;   /* an array being filled */
    size_t left;            /* elements still to come */
};

struct resp_decoder {
    struct resp_limits lim;
    int state;                   /* codec.c's D_* */
    char type;                   /* the type byte of the line being read */
    char *line;                  /* the line being read (header, simple string, error, inline) */
    size_t line_len, line_cap;
    struct resp_value *root;     /* the value being built */
    struct resp_value *bulk;     /* the bulk string being filled */
    struct resp_frame *stack;    /* arrays being filled, outermost first */
    unsigned depth;
    size_t mem;                  /* bytes held for root (values, strings, arrays) */
    const char *error;           /* why decoding stopped (static) */
};

/* The limits herald uses: requests from clients and replies from servers. */
void resp_limits_request(struct resp_limits *l);
void resp_limits_reply(struct resp_limits *l);

/* 0, or -1 (out of memory). */
int resp_decoder_init(struct resp_decoder *d, const struct resp_limits *lim);
void resp_decoder_fini(struct resp_decoder *d);
/* Takes bytes from p (len of them) until a value is complete: RESP_DONE with
 * *out set (the caller owns it: resp_value_free) and *used the bytes taken,
 * which may be fewer than len (call again for the rest); RESP_MORE with all
 * len bytes taken; RESP_ERR with d->error set (the decoder stays dead). */
enum resp_result resp_decode(struct resp_decoder *d, const uint8_t *p, size_t len, size_t *used,
                             struct resp_value **out);
/* Bytes held for the value being decoded (0 between values). */
size_t resp_decoder_buffered(const struct resp_decoder *d);

void resp_value_free(struct resp_value *v);
/* A value made from parts (for replies made locally): a string type with a
 * copy of p (len bytes), or an integer. NULL when out of memory. */
struct resp_value *resp_value_new_str(enum resp_type type, const char *p, size_t len);
struct resp_value *resp_value_new_int(int64_t n);

/* ---------------------------------------------------------------- encoding */
typedef void (*resp_write_fn)(void *arg, const void *p, size_t n);

void resp_encode(const struct resp_value *v, resp_write_fn w, void *arg);
/* Pieces, for values never built as a tree (fragments of a request, local replies). */
void resp_encode_array_header(size_t n, resp_write_fn w, void *arg);
void resp_encode_bulk(const void *p, size_t len, resp_write_fn w, void *arg);
void resp_encode_simple(const char *s, resp_write_fn w, void *arg);   /* no CR or LF in s */
void resp_encode_error(const char *s, resp_write_fn w, void *arg);    /* CR and LF become spaces */
void resp_encode_integer(int64_t n, resp_write_fn w, void *arg);
void resp_encode_null(resp_write_fn w, void *arg);

const char *resp_type_name(enum resp_type t);

#endif
