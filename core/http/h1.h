/* HTTP/1.x codec: a pure parser/encoder, no I/O. The server role parses
 * requests (connection manager), the client role parses responses (upstream
 * pools). The parser is herald's own (h1.c): strict about the shapes that
 * smuggle requests, one pass over each byte, heads read where they lie.
 *
 * Parsing: feed the bytes read from the socket to h1_codec_dispatch; it drains
 * what it parsed from `in` and calls back in this order per message:
 *   on_message_begin?  on_headers  on_data*  on_trailers?  on_complete
 * or on_error once, after which the codec is dead (every later dispatch
 * returns -1 without a callback; free it and close the connection).
 *
 * Callbacks may call h1_codec_pause, and may free the codec (h1_codec_free
 * inside a callback is deferred: dispatch returns -1 at once and touches
 * nothing). */
#ifndef HERALD_CORE_HTTP_H1_H
#define HERALD_CORE_HTTP_H1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>

#include "herald/http.h"

enum h1_role {
    H1_SERVER, /* parses requests */
    H1_CLIENT, /* parses responses */
};

struct h1_limits {
    uint32_t max_request_headers_kb; /* header section (request/status line + names + values); 0: 60 */
    uint32_t max_headers_count;      /* 0: 100 */
};

struct h1_callbacks {
    void (*on_message_begin)(void *arg); /* optional: first byte of a message */
    /* Taken over (free with herald_headers_free). Requests: :method, :path
     * (request-target; for absolute-form also :authority from the URL) and
     * :authority from Host (the Host entry is removed); no :authority when
     * neither is there (HTTP/1.1 needs one: the caller answers 400). :scheme is
     * the caller's. CONNECT: :method and :authority, no :path. Responses:
     * :status. end_stream: the HTTP framing says no body and no trailers
     * follow (for an upgrade or CONNECT the raw bytes come after the switch,
     * see h1_codec_is_upgrade). */
    void (*on_headers)(void *arg, struct herald_headers *h, bool end_stream);
    /* Body bytes (de-chunked). Move out what you keep (evbuffer_add_buffer);
     * whatever is left is discarded when the callback returns. */
    void (*on_data)(void *arg, struct evbuffer *chunk, bool end_stream);
    /* Chunked trailers (taken over); ends the body. Optional: dropped if NULL. */
    void (*on_trailers)(void *arg, struct herald_headers *t);
    /* The message is complete (always after the last of the above). */
    void (*on_complete)(void *arg);
    /* Client role only, optional: a 1xx other than 101 (e.g. 100 Continue);
     * the final response follows. Taken over. Dropped if NULL. */
    void (*on_informational)(void *arg, struct herald_headers *h);
    /* Malformed or refused input. http_status is what the server side should
     * answer (400, 413, 414, 431, 501, 505; client side: always 502-worthy,
     * status 400 reported); details is a static string for
     * %RESPONSE_CODE_DETAILS%, e.g. "http1.codec_error". */
    void (*on_error)(void *arg, int http_status, const char *details);
};

struct h1_codec;

/* lim NULL: defaults. cbs is kept by pointer (make it static). */
struct h1_codec *h1_codec_new(enum h1_role role, const struct h1_limits *lim, const struct h1_callbacks *cbs,
                              void *arg);
void h1_codec_free(struct h1_codec *c);

/* Parses as much of `in` as it can, draining what it consumed. Returns 0
 * (needs more bytes, or paused), or -1: on_error was called (now or earlier),
 * or the codec was freed from a callback. Bytes the codec does not consume
 * (paused, upgraded) stay in `in`. */
int h1_codec_dispatch(struct h1_codec *c, struct evbuffer *in);
/* The peer closed its side. Ends a close-delimited response body
 * (on_data(end_stream) / on_complete); a message cut short gets on_error
 * ("http1.premature_eof" / 400 on the server side, nothing when idle between
 * messages). Returns as dispatch does. */
int h1_codec_dispatch_eof(struct h1_codec *c);

/* Stops delivering callbacks after the current one (backpressure). The
 * server role pauses by itself after every on_complete, so that pipelined
 * requests are handled one at a time. Resume does not parse: call dispatch
 * again with the buffered bytes. */
void h1_codec_pause(struct h1_codec *c);
void h1_codec_resume(struct h1_codec *c);
bool h1_codec_paused(const struct h1_codec *c);

/* Between messages with nothing half-parsed (safe to close an idle connection). */
bool h1_codec_idle(const struct h1_codec *c);

/* The current message's bytes as read so far (head, body framing, trailers:
 * the %*_WIRE_BYTES_RECEIVED% of its stream) and its head's (start line and
 * header fields: %*_HEADER_BYTES_RECEIVED%). Valid from on_headers until the
 * next message begins. */
uint64_t h1_codec_wire_bytes(const struct h1_codec *c);
uint64_t h1_codec_head_bytes(const struct h1_codec *c);

/* Facts about the current message, valid from on_headers until the next
 * message begins. */
enum herald_http_protocol h1_codec_protocol(const struct h1_codec *c); /* HERALD_HTTP10 or HERALD_HTTP11 */
/* Server: whether the connection may carry another request after this one
 * (HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with "Connection:
 * keep-alive"). Client: whether the connection can be reused after this
 * response (also false for close-delimited bodies). */
bool h1_codec_keep_alive(const struct h1_codec *c);
/* Server: the request carries "Expect: 100-continue" (HTTP/1.1). The caller
 * decides whether to write h1_encode_100_continue; the codec does nothing. */
bool h1_codec_expect_continue(const struct h1_codec *c);
/* Server: Upgrade + "Connection: upgrade" (or CONNECT). Client: a 101.
 * The codec stops parsing once such a message completes (on_complete): every
 * later dispatch consumes nothing and returns 0, the bytes left in `in` are the
 * upgraded protocol's; the caller forwards raw bytes from then on. If the
 * caller refuses the upgrade (e.g. no 101 upstream), call
 * h1_codec_cancel_upgrade to parse HTTP again, or close. */
bool h1_codec_is_upgrade(const struct h1_codec *c);
bool h1_codec_upgraded(const struct h1_codec *c);
void h1_codec_cancel_upgrade(struct h1_codec *c);

/* Client: the method of the request this response answers, before the
 * response's bytes are dispatched (HEAD: no body whatever the headers say;
 * CONNECT 2xx: the tunnel starts after the headers, as an upgrade). Responses
 * are expected in request order; call it once per request sent. */
void h1_codec_expect_response(struct h1_codec *c, const char *method);

/* ------------------------------------------------------------ encoding
 * One h1_encoder per message. Framing is chosen from the headers: a
 * content-length entry -> length-delimited; else chunked for HTTP/1.1; else
 * (HTTP/1.0 peer) a response body is close-delimited and a request body is an
 * error. Any transfer-encoding entry is replaced by the codec's own choice.
 * Hop-by-hop headers (connection, keep-alive, upgrade...) are the caller's
 * business and are written as given. */
#define H1_ENC_HTTP10 0x1u /* the peer speaks HTTP/1.0: no chunked, "HTTP/1.0" request line */
#define H1_ENC_HEAD   0x2u /* response to HEAD: headers as given, no body bytes */
/* request asking for an Upgrade (herald_http_stream_is_upgrade): the head only,
 * no body framing and no content-length added; what follows passes unframed
 * (the new protocol's bytes once the 101 came), as for CONNECT. On a
 * response: the answer to a CONNECT, whose 2xx starts the tunnel (unframed). */
#define H1_ENC_UPGRADE 0x4u

enum h1_framing {
    H1_FRAME_NONE = 0, /* no body (end_stream on headers, HEAD, 1xx/204/304) */
    H1_FRAME_LENGTH,
    H1_FRAME_CHUNKED,
    H1_FRAME_CLOSE,    /* HTTP/1.0 response without content-length */
    H1_FRAME_RAW,      /* CONNECT request / 101 response: data passes unframed */
};

struct h1_encoder {
    unsigned flags;
    enum h1_framing framing;
    uint64_t remaining; /* H1_FRAME_LENGTH: bytes still due */
    bool headers_done, done;
};

void h1_encoder_init(struct h1_encoder *e, unsigned flags);
/* :method :path (:authority -> host, placed first) + headers. end_stream:
 * no body follows (content-length: 0 added for methods with a body meaning,
 * e.g. POST/PUT). Returns -1 (nothing written) without :method, or :path
 * (except CONNECT). */
int h1_encode_request_headers(struct h1_encoder *e, struct evbuffer *out, const struct herald_headers *h,
                              bool end_stream);
/* :status + headers, "HTTP/1.1 <code> <reason>". end_stream with no
 * content-length -> "content-length: 0" (not for 1xx/204/304). Returns -1
 * without a valid :status. */
int h1_encode_response_headers(struct h1_encoder *e, struct evbuffer *out, const struct herald_headers *h,
                               bool end_stream);
/* Moves all of `data` into `out` framed (drains data). -1: more bytes than the
 * content-length, or data after the end. */
int h1_encode_data(struct h1_encoder *e, struct evbuffer *out, struct evbuffer *data, bool end_stream);
/* Ends the message with trailers (chunked: written as chunked trailers; other
 * framings: dropped, logged at debug). */
int h1_encode_trailers(struct h1_encoder *e, struct evbuffer *out, const struct herald_headers *t);
/* The message's end is the connection's close (H1_FRAME_CLOSE): the caller
 * must close after the last byte. */
bool h1_encoder_close_delimited(const struct h1_encoder *e);
/* "HTTP/1.1 100 Continue\r\n\r\n" */
void h1_encode_100_continue(struct evbuffer *out);
/* Standard reason phrase, "Unknown" for unknown codes. */
const char *h1_reason_phrase(int status);

#endif
