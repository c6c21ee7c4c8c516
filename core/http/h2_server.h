/* HTTP/2 server codec: nghttp2's server session behind a small interface
 * for the connection manager, as h1.h is for HTTP/1. No I/O: the caller
 * feeds the bytes it read (h2_server_recv) and writes what h2_server_flush
 * produces.
 *
 * Streams. The glue keeps one record per nghttp2 stream; the caller's
 * stream (void *user, from on_begin) is attached to it until the caller
 * detaches it (h2_server_detach) when its stream is over. A detached stream
 * still sends what was queued for it; request DATA for it is consumed and
 * dropped, and when the response ended before the request did it is closed
 * with RST_STREAM(NO_ERROR) once the last frame is out.
 *
 * Flow control. Request DATA is delivered through on_data and given back to
 * the client's windows (nghttp2_session_consume) only then; a paused stream
 * (h2_server_pause) keeps its DATA here, unconsumed, so a slow upstream
 * holds the client's stream window, and the connection window with it.
 * Response data is queued per stream and pulled by nghttp2 as the client's
 * windows allow (NGHTTP2_ERR_DEFERRED when the queue is empty).
 *
 * Abuse limits (Envoy's http2_protocol_options and its CVE fixes) are
 * checked here; a violation counts its stat, queues GOAWAY and makes every
 * later recv return -1. */
#ifndef HERALD_CORE_HTTP_H2_SERVER_H
#define HERALD_CORE_HTTP_H2_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>

#include "herald/http.h"
#include "herald/stats.h"
#include "herald/timer.h"
#include "http/h2_keepalive.h"

#define H2_PREFACE     "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define H2_PREFACE_LEN 24

struct h2_settings {
    uint32_t max_concurrent_streams;         /* 100 */
    uint32_t initial_stream_window_size;     /* 65535 .. 2^31-1 */
    uint32_t initial_connection_window_size;
    uint32_t hpack_table_size;
    uint32_t max_header_list_bytes;          /* max_request_headers_kb * 1024 */
    uint32_t max_headers_count;
    uint32_t max_outbound_frames;
    uint32_t max_outbound_control_frames;
    uint32_t max_consecutive_inbound_frames_with_empty_payload;
    uint32_t max_inbound_priority_frames_per_stream;
    uint32_t max_inbound_window_update_frames_per_data_frame_sent;
    uint32_t premature_reset_total_stream_count; /* Envoy's overload.premature_reset_total_stream_count */
    bool stream_error_on_invalid_http_messaging;
    bool enable_connect_protocol;            /* SETTINGS_ENABLE_CONNECT_PROTOCOL (allow_connect) */
    bool count_frame_bytes;                  /* call on_frame_bytes (an access log wants them) */
};

/* http.<stat_prefix>.http2.* (and the one HCM counter for rapid resets) */
struct h2_stats {
    struct herald_stat *rx_reset, *tx_reset, *header_overflow, *too_many_headers, *outbound_flood,
        *outbound_control_flood, *inbound_empty_frames_flood, *inbound_priority_frames_flood,
        *inbound_window_update_frames_flood, *rx_messaging_error, *trailers, *goaway_sent,
        *stream_refused_errors, *premature_resets, *too_many_continuations,
        *keepalive_timeout;              /* counted by the connection manager */
};

struct h2_callbacks {
    /* A request stream opens; returns the caller's stream. */
    void *(*on_begin)(void *arg, int32_t id);
    /* Request headers (taken over): :method :path :authority :scheme as sent,
     * Host folded into :authority, cookies joined. */
    void (*on_headers)(void *arg, void *stream, struct herald_headers *h, bool end_stream);
    /* The request headers were refused (431 too many / too large). */
    void (*on_headers_error)(void *arg, void *stream, int status, const char *details);
    /* Request body bytes; move out what you keep. */
    void (*on_data)(void *arg, void *stream, struct evbuffer *chunk, bool end_stream);
    void (*on_trailers)(void *arg, void *stream, struct herald_headers *t); /* taken over */
    /* The stream closed while attached (RST_STREAM either way, or the
     * connection failing). remote: the client reset it. */
    void (*on_reset)(void *arg, void *stream, bool remote);
    /* Queued response bytes of an attached stream left for the wire. */
    void (*on_drained)(void *arg, void *stream, size_t still_queued);
    /* Too many premature resets (rapid reset). */
    void (*on_premature_reset_limit)(void *arg);
    /* With count_frame_bytes: a frame of an attached stream came in or went
     * out (bytes: with its 9-byte header; headers: HEADERS or CONTINUATION). */
    void (*on_frame_bytes)(void *arg, void *stream, size_t bytes, bool headers, bool sent);
};

struct h2_server;

struct h2_server *h2_server_new(const struct h2_settings *set, const struct h2_stats *st,
                                const struct h2_callbacks *cbs, void *arg);
void h2_server_free(struct h2_server *h);
/* Parses `in` (drains it). -1: the connection is done (GOAWAY queued: flush, then close). */
int h2_server_recv(struct h2_server *h, struct evbuffer *in);
/* Serialises queued frames into out. No-op from inside recv. -1: fatal. */
int h2_server_flush(struct h2_server *h, struct evbuffer *out);
/* Nothing more to read or write: close. */
bool h2_server_finished(const struct h2_server *h);
bool h2_server_failed(const struct h2_server *h);
size_t h2_server_active_streams(const struct h2_server *h);
/* Last frames of the connection: GOAWAY(NO_ERROR) with the last stream seen
 * (drain: streams in flight finish). */
void h2_server_goaway(struct h2_server *h, uint32_t error_code);
/* The first GOAWAY of a graceful drain: last stream 2^31-1, so that streams
 * already on their way are still taken; h2_server_goaway ends it. */
void h2_server_shutdown_notice(struct h2_server *h);

/* Response side. headers are read, not taken. -1: no such stream. */
int h2_server_submit_headers(struct h2_server *h, int32_t id, const struct herald_headers *resp,
                             bool end_stream);
int h2_server_submit_data(struct h2_server *h, int32_t id, struct evbuffer *data, bool end_stream);
int h2_server_submit_trailers(struct h2_server *h, int32_t id, const struct herald_headers *t);
size_t h2_server_queued(struct h2_server *h, int32_t id);
/* RST_STREAM(error_code); the stream is detached. */
void h2_server_reset(struct h2_server *h, int32_t id, uint32_t error_code);
void h2_server_detach(struct h2_server *h, int32_t id);
/* Request side backpressure. Unpausing does not deliver: h2_server_deliver does. */
void h2_server_pause(struct h2_server *h, int32_t id, bool pause);
/* Delivers held request data of unpaused streams (outside recv). */
void h2_server_deliver(struct h2_server *h);
/* Keepalive (h2_keepalive.h): queues a PING (flush after); false when the
 * connection failed. The frames and PING ACKs received so far. */
bool h2_server_ping(struct h2_server *h);
const struct h2_frame_counts *h2_server_frame_counts(const struct h2_server *h);

#endif
