/* HTTP/2 server codec on nghttp2; see h2_server.h. */
#include "config.h"

#include <ctype.h>
#include <nghttp2/nghttp2.h>
#include <string.h>
#include <strings.h>

#include "common.h"
#include "http/h2_server.h"
#include "http/headers.h"
#include "log.h"
#include "mem_cache.h"

/* Request bytes read and dropped after the response ended before a stream
 * is reset with NO_ERROR. */
#define DISCARD_LIMIT (1024 * 1024)

struct h2s {
    struct h2_server *h;
    struct h2s *prev, *next;
    int32_t id;
    void *user;                     /* the connection manager's stream; NULL once detached */
    uint64_t created_ms;
    /* request */
    struct herald_headers *hdrs;    /* the header block being received */
    bool trailers_block;
    size_t hdr_bytes;
    uint32_t hdr_count;
    int reject;                     /* 431 while receiving an oversized block */
    const char *reject_details;
    bool headers_delivered;
    bool req_ended;                 /* END_STREAM came */
    size_t discarded;               /* request body bytes dropped after the response ended */
    bool discard_rst;               /* RST_STREAM(NO_ERROR) sent to stop an upload nobody reads */
    bool rst_received;
    bool paused;
    struct evbuffer *in;            /* received, not delivered, not consumed (NULL until needed) */
    bool in_end;                    /* the end is held behind `in` */
    struct herald_headers *in_trailers;
    /* response */
    bool resp_submitted, resp_end_queued, resp_ended;
    struct evbuffer *out;
    bool out_end;
    struct herald_headers *out_trailers;
    bool deferred;
    bool drained;                   /* out shrank during the last flush */
};

struct h2_server {
    nghttp2_session *s;
    struct h2_settings set;
    struct h2_stats st;
    const struct h2_callbacks *cbs;
    void *arg;
    struct h2s *streams;
    size_t nstreams;
    struct evbuffer *tmp;
    int busy;                       /* inside mem_recv / mem_send */
    struct evbuffer *flush_out;     /* h2_server_flush's output, for send_data */
    bool failed;
    /* abuse accounting */
    uint32_t empty_run;
    size_t block_bytes, block_frames;
    uint64_t priority_frames, window_update_frames, data_frames_sent, streams_opened;
    uint64_t premature_resets, closed_streams;
    struct h2_frame_counts counts;  /* for the keepalive */
};

static void inc(struct herald_stat *s)
{
    if (s)
        herald_stat_inc(s);
}

/* A connection-level violation: count it, GOAWAY(code), every later recv fails. */
static void fail(struct h2_server *h, struct herald_stat *stat, uint32_t code, const char *why)
{
    if (h->failed)
        return;
    h->failed = true;
    inc(stat);
    log_debug("http2", "closing connection: %s", why);
    nghttp2_session_terminate_session(h->s, code);
}

static struct h2s *stream_of(struct h2_server *h, int32_t id)
{
    return id > 0 ? nghttp2_session_get_stream_user_data(h->s, id) : NULL;
}

static void consume(struct h2_server *h, int32_t id, size_t n)
{
    if (!n)
        return;
    if (nghttp2_session_get_stream_user_data(h->s, id) || nghttp2_session_find_stream(h->s, id))
        nghttp2_session_consume(h->s, id, n);
    else
        nghttp2_session_consume_connection(h->s, n);
}

/* upload bytes waiting for the stream's reader (st->in is made on the first) */
static size_t held_len(const struct h2s *st) { return st->in ? evbuffer_get_length(st->in) : 0; }

static void free_h2s(struct h2s *st)
{
    struct h2_server *h = st->h;
    if (st->prev)
        st->prev->next = st->next;
    else
        h->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    h->nstreams--;
    herald_headers_free(st->hdrs);
    herald_headers_free(st->in_trailers);
    herald_headers_free(st->out_trailers);
    if (st->in)
        evbuffer_free(st->in);
    evbuffer_free(st->out);
    mem_cache_free(st, sizeof(*st));
}

/* ---------------------------------------------------------------- nghttp2 callbacks */

/* The stream's frames, for its access log (%DOWNSTREAM_WIRE_BYTES_*%). */
static void count_frame(struct h2_server *h, struct h2s *st, const nghttp2_frame_hd *hd, bool sent)
{
    if (!h->set.count_frame_bytes || !st || !st->user)
        return;
    if (hd->type != NGHTTP2_DATA && hd->type != NGHTTP2_HEADERS && hd->type != NGHTTP2_CONTINUATION)
        return;
    h->cbs->on_frame_bytes(h->arg, st->user, hd->length + 9, hd->type != NGHTTP2_DATA, sent);
}

static int on_begin_frame(nghttp2_session *session, const nghttp2_frame_hd *hd, void *ud)
{
    struct h2_server *h = ud;

    h->counts.frames++;
    count_frame(h, stream_of(h, hd->stream_id), hd, false);   /* a request's first HEADERS: on_begin_headers */
    /* Envoy's inbound flood checks; a frame without payload that ends nothing is "empty" */
    if (hd->type == NGHTTP2_DATA || hd->type == NGHTTP2_HEADERS || hd->type == NGHTTP2_CONTINUATION) {
        if (hd->length == 0 && !(hd->flags & NGHTTP2_FLAG_END_STREAM)) {
            if (++h->empty_run > h->set.max_consecutive_inbound_frames_with_empty_payload) {
                fail(h, h->st.inbound_empty_frames_flood, NGHTTP2_ENHANCE_YOUR_CALM, "empty frames flood");
                return NGHTTP2_ERR_CALLBACK_FAILURE;
            }
        } else {
            h->empty_run = 0;
        }
    }
    switch (hd->type) {
    case NGHTTP2_HEADERS:
        h->block_bytes = hd->length;
        h->block_frames = 0;
        break;
    case NGHTTP2_CONTINUATION:
        /* CONTINUATION flood: the encoded block alone may not pass the limit */
        h->block_bytes += hd->length;
        h->block_frames++;
        if (h->block_bytes > (size_t)h->set.max_header_list_bytes + 1024) {
            fail(h, h->st.header_overflow, NGHTTP2_ENHANCE_YOUR_CALM, "CONTINUATION flood");
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        break;
    case NGHTTP2_PRIORITY:
        if (++h->priority_frames >
            (uint64_t)h->set.max_inbound_priority_frames_per_stream * (1 + h->streams_opened)) {
            fail(h, h->st.inbound_priority_frames_flood, NGHTTP2_ENHANCE_YOUR_CALM, "PRIORITY flood");
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        break;
    case NGHTTP2_WINDOW_UPDATE:
        if (++h->window_update_frames >
            5 + 2 * (h->streams_opened +
                     (uint64_t)h->set.max_inbound_window_update_frames_per_data_frame_sent *
                         h->data_frames_sent)) {
            fail(h, h->st.inbound_window_update_frames_flood, NGHTTP2_ENHANCE_YOUR_CALM,
                 "WINDOW_UPDATE flood");
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        break;
    default:
        break;
    }
    return 0;
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
    struct h2_server *h = ud;
    int32_t id = frame->hd.stream_id;

    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        /* per request: from mem_cache; the held-upload buffer only when an
         * upload has to wait (most requests have no body) */
        struct h2s *st = mem_cache_alloc_zeroed(sizeof(*st));
        st->h = h;
        st->id = id;
        st->created_ms = herald_now_ms();
        st->out = evbuffer_new();
        st->hdrs = herald_headers_new();
        st->next = h->streams;
        if (h->streams)
            h->streams->prev = st;
        h->streams = st;
        h->nstreams++;
        h->streams_opened++;
        nghttp2_session_set_stream_user_data(session, id, st);
        st->user = h->cbs->on_begin(h->arg, id);
        count_frame(h, st, &frame->hd, false);
        return 0;
    }
    struct h2s *st = stream_of(h, id);
    if (!st)
        return 0;
    /* trailers (a second HEADERS) */
    herald_headers_free(st->hdrs);
    st->hdrs = herald_headers_new();
    st->trailers_block = true;
    st->hdr_bytes = 0;
    st->hdr_count = 0;
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    struct h2_server *h = ud;
    struct h2s *st = stream_of(h, frame->hd.stream_id);

    if (!st || !st->hdrs || st->reject)
        return 0;
    st->hdr_bytes += namelen + valuelen;
    st->hdr_count++;
    if (st->hdr_bytes > h->set.max_header_list_bytes) {
        inc(h->st.header_overflow);
        st->reject = 431;
        st->reject_details = "http2.headers_too_large";
        return 0;
    }
    if (st->hdr_count > h->set.max_headers_count) {
        inc(h->st.too_many_headers);
        st->reject = 431;
        st->reject_details = "http2.too_many_headers";
        return 0;
    }
    /* nghttp2's HTTP messaging checks hand over only valid fields (names
     * lower-case tokens, values without CR, LF or NUL) */
    headers_add_received(st->hdrs, (const char *)name, namelen, (const char *)value, valuelen, false);
    return 0;
}

/* Host into :authority, the cookie crumbs back into one header (RFC 9113 8.2.3). */
static void fix_request(struct herald_headers *hd)
{
    const char *host = HEADERS_GET(hd, "host");
    if (host) {
        if (!HEADERS_GET(hd, ":authority"))
            herald_headers_set(hd, ":authority", host);
        herald_headers_remove(hd, "host");
    }
    if (headers_count_name(hd, "cookie") > 1) {
        struct evbuffer *b = evbuffer_new();
        const char *n, *v;
        for (size_t i = 0; herald_headers_at(hd, i, &n, &v); i++)
            if (!strcmp(n, "cookie"))
                evbuffer_add_printf(b, "%s%s", evbuffer_get_length(b) ? "; " : "", v);
        evbuffer_add(b, "", 1);
        char *joined = xstrdup((const char *)evbuffer_pullup(b, -1));
        evbuffer_free(b);
        herald_headers_set(hd, "cookie", joined);
        free(joined);
    }
}

static void deliver_end(struct h2_server *h, struct h2s *st)
{
    if (st->in_trailers) {
        struct herald_headers *t = st->in_trailers;
        st->in_trailers = NULL;
        h->cbs->on_trailers(h->arg, st->user, t);
    } else {
        evbuffer_drain(h->tmp, evbuffer_get_length(h->tmp));
        h->cbs->on_data(h->arg, st->user, h->tmp, true);
        evbuffer_drain(h->tmp, evbuffer_get_length(h->tmp));
    }
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
    struct h2_server *h = ud;
    struct h2s *st = stream_of(h, frame->hd.stream_id);
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;

    switch (frame->hd.type) {
    case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK)
            h->counts.ping_acks++;
        return 0;
    case NGHTTP2_HEADERS:
        if (!st || !st->hdrs)
            return 0;
        if (!st->trailers_block) {
            struct herald_headers *hd = st->hdrs;
            st->hdrs = NULL;
            st->req_ended = end;
            if (!st->user) {
                herald_headers_free(hd);
                return 0;
            }
            st->headers_delivered = true;
            if (st->reject) {
                herald_headers_free(hd);
                h->cbs->on_headers_error(h->arg, st->user, st->reject, st->reject_details);
                return 0;
            }
            fix_request(hd);
            h->cbs->on_headers(h->arg, st->user, hd, end);
            return 0;
        }
        /* trailers */
        inc(h->st.trailers);
        st->req_ended = true;
        if (!st->user || st->reject) {
            herald_headers_free(st->hdrs);
            st->hdrs = NULL;
            return 0;
        }
        if (st->paused || held_len(st)) {
            st->in_trailers = st->hdrs;
            st->hdrs = NULL;
            st->in_end = true;
            return 0;
        }
        {
            struct herald_headers *t = st->hdrs;
            st->hdrs = NULL;
            h->cbs->on_trailers(h->arg, st->user, t);
        }
        return 0;
    case NGHTTP2_DATA:
        if (!st || !end)
            return 0;
        st->req_ended = true;
        if (!st->user)
            return 0;
        if (st->paused || held_len(st)) {
            st->in_end = true;
            return 0;
        }
        deliver_end(h, st);
        return 0;
    case NGHTTP2_RST_STREAM:
        inc(h->st.rx_reset);
        if (st)
            st->rst_received = true;
        return 0;
    default:
        return 0;
    }
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                         void *ud)
{
    struct h2_server *h = ud;
    struct h2s *st = stream_of(h, id);

    if (!st || !st->user || st->reject) {
        consume(h, id, len);
        /* The response is out: the rest of the upload is read and dropped
         * (nghttp2 still checks the stream's frames), up to a bound. */
        if (st && !st->user && !st->discard_rst && (st->discarded += len) > DISCARD_LIMIT) {
            st->discard_rst = true;
            nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, id, NGHTTP2_NO_ERROR);
        }
        return 0;
    }
    if (st->paused || held_len(st)) {
        /* held, and the client's window with it */
        if (!st->in)
            st->in = evbuffer_new();
        evbuffer_add(st->in, data, len);
        return 0;
    }
    evbuffer_drain(h->tmp, evbuffer_get_length(h->tmp));
    evbuffer_add(h->tmp, data, len);
    h->cbs->on_data(h->arg, st->user, h->tmp, false);
    evbuffer_drain(h->tmp, evbuffer_get_length(h->tmp));
    consume(h, id, len);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t error_code, void *ud)
{
    struct h2_server *h = ud;
    struct h2s *st = stream_of(h, id);

    if (!st)
        return 0;
    nghttp2_session_set_stream_user_data(session, id, NULL);
    h->closed_streams++;
    /* Envoy's premature reset rule (CVE-2023-44487): a client reset within a
     * second of the stream's start; too many of them close the connection. */
    if (st->rst_received && herald_now_ms() - st->created_ms < 1000)
        h->premature_resets++;
    uint64_t limit = h->set.premature_reset_total_stream_count;
    if (limit && !h->failed &&
        (h->closed_streams < limit ? h->premature_resets * 2 >= limit
                                   : h->premature_resets * 2 >= h->closed_streams)) {
        fail(h, h->st.premature_resets, NGHTTP2_ENHANCE_YOUR_CALM, "too many premature resets");
        if (h->cbs->on_premature_reset_limit)
            h->cbs->on_premature_reset_limit(h->arg);
    }
    size_t held = held_len(st);
    if (held)
        nghttp2_session_consume_connection(session, held);
    void *user = st->user;
    bool remote = st->rst_received;
    st->user = NULL;
    free_h2s(st);
    if (user)
        h->cbs->on_reset(h->arg, user, remote);
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
    struct h2_server *h = ud;
    struct h2s *st;

    count_frame(h, stream_of(h, frame->hd.stream_id), &frame->hd, true);
    switch (frame->hd.type) {
    case NGHTTP2_RST_STREAM:
        inc(h->st.tx_reset);
        if (frame->rst_stream.error_code == NGHTTP2_REFUSED_STREAM)
            inc(h->st.stream_refused_errors);
        break;
    case NGHTTP2_GOAWAY:
        inc(h->st.goaway_sent);
        break;
    case NGHTTP2_DATA:
        h->data_frames_sent++;
        break;
    default:
        break;
    }
    if ((frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && (st = stream_of(h, frame->hd.stream_id))) {
        st->resp_ended = true;
        /* The response is out before the request ended. RFC 9113 8.1 allows
         * RST_STREAM(NO_ERROR) at once, but then nghttp2 ignores whatever the
         * client sends next, invalid frames included (h2spec 5.1/8, 6.9.1/3,
         * 8.1.2.6/1...). The stream stays half-closed instead and the upload
         * is dropped as it comes, up to DISCARD_LIMIT (on_data_chunk). */
    }
    return 0;
}

static int on_invalid_frame(nghttp2_session *session, const nghttp2_frame *frame, int lib_error_code,
                            void *ud)
{
    struct h2_server *h = ud;
    if (lib_error_code == NGHTTP2_ERR_HTTP_HEADER || lib_error_code == NGHTTP2_ERR_HTTP_MESSAGING) {
        inc(h->st.rx_messaging_error);
        if (!h->set.stream_error_on_invalid_http_messaging)
            fail(h, NULL, NGHTTP2_PROTOCOL_ERROR, "invalid HTTP messaging");
    }
    return 0;
}

static ssize_t read_body(nghttp2_session *session, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    struct h2s *st = src->ptr;
    size_t n = evbuffer_get_length(st->out);

    (void)buf;
    if (n == 0 && !st->out_end) {
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t avail = n;
    if (n > len)
        n = len;
    /* the bytes move by evbuffer chain in send_data, not through buf */
    if (n)
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (st->out_end && n == avail) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (st->out_trailers) {
            size_t cnt, k = 0;
            const struct header_field *f = headers_fields(st->out_trailers, &cnt);
            nghttp2_nv *nva = xcalloc(cnt ? cnt : 1, sizeof(*nva));
            /* names in a header map are lower-case already; nghttp2 copies them */
            for (size_t i = 0; i < cnt; i++) {
                if (f[i].name[0] == ':')
                    continue;
                nva[k++] = (nghttp2_nv){(uint8_t *)f[i].name, (uint8_t *)f[i].value, f[i].nlen, f[i].vlen,
                                        NGHTTP2_NV_FLAG_NONE};
            }
            if (k && nghttp2_submit_trailer(session, id, nva, k) == 0)
                *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            free(nva);
        }
    }
    return (ssize_t)n;
}

/* A DATA frame read_body sized: its header, then the body bytes moved
 * from the stream's buffer into the output (no padding: herald sets no
 * padding callback). */
static int send_data(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd, size_t length,
                     nghttp2_data_source *src, void *ud)
{
    struct h2_server *h = ud;
    struct h2s *st = src->ptr;
    if (!h->flush_out || frame->data.padlen > 0 || evbuffer_get_length(st->out) < length)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    evbuffer_add(h->flush_out, framehd, 9);
    if (length) {
        evbuffer_remove_buffer(st->out, h->flush_out, length);
        st->drained = true;
    }
    return 0;
}

/* ---------------------------------------------------------------- the interface */

struct h2_server *h2_server_new(const struct h2_settings *set, const struct h2_stats *st,
                                const struct h2_callbacks *cbs, void *arg)
{
    struct h2_server *h = xcalloc(1, sizeof(*h));
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;

    h->set = *set;
    h->st = *st;
    h->cbs = cbs;
    h->arg = arg;
    h->tmp = evbuffer_new();
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, on_invalid_frame);
    nghttp2_session_callbacks_set_send_data_callback(cb, send_data);
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    /* SETTINGS/PING floods: ACKs queued while the client does not read */
    nghttp2_option_set_max_outbound_ack(opt, set->max_outbound_control_frames);
    nghttp2_option_set_max_settings(opt, 32);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
    nghttp2_session_server_new3(&h->s, cb, h, opt, mem_cache_nghttp2());
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);

    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, set->max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, set->initial_stream_window_size},
        {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, set->hpack_table_size},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, set->max_header_list_bytes},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        /* RFC 8441: extended CONNECT (WebSocket over HTTP/2), with allow_connect; last */
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
    };
    nghttp2_submit_settings(h->s, NGHTTP2_FLAG_NONE, iv, ARRAY_SIZE(iv) - (set->enable_connect_protocol ? 0 : 1));
    if (set->initial_connection_window_size > 65535)
        nghttp2_session_set_local_window_size(h->s, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)set->initial_connection_window_size);
    return h;
}

void h2_server_free(struct h2_server *h)
{
    if (!h)
        return;
    nghttp2_session_del(h->s); /* no callbacks from here on */
    while (h->streams)
        free_h2s(h->streams);
    evbuffer_free(h->tmp);
    free(h);
}

int h2_server_recv(struct h2_server *h, struct evbuffer *in)
{
    if (h->failed) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return -1;
    }
    h->busy++;
    while (evbuffer_get_length(in) > 0 && !h->failed) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        ssize_t n = nghttp2_session_mem_recv(h->s, v.iov_base, v.iov_len);
        if (n < 0) {
            if (n == NGHTTP2_ERR_FLOODED)
                fail(h, h->st.outbound_control_flood, NGHTTP2_ENHANCE_YOUR_CALM, "SETTINGS/PING flood");
            else if (n == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS)
                fail(h, h->st.header_overflow, NGHTTP2_ENHANCE_YOUR_CALM, "too many CONTINUATION frames");
            else
                fail(h, NULL, NGHTTP2_PROTOCOL_ERROR, nghttp2_strerror((int)n));
            break;
        }
        evbuffer_drain(in, (size_t)n);
    }
    h->busy--;
    if (!h->failed && nghttp2_session_get_outbound_queue_size(h->s) > h->set.max_outbound_frames)
        fail(h, h->st.outbound_flood, NGHTTP2_ENHANCE_YOUR_CALM, "outbound frame flood");
    if (h->failed) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return -1;
    }
    return 0;
}

int h2_server_flush(struct h2_server *h, struct evbuffer *out)
{
    if (h->busy)
        return 0;
    h->busy++;
    h->flush_out = out;
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(h->s, &data);
        if (n < 0) {
            h->failed = true;
            break;
        }
        if (n == 0)
            break;
        evbuffer_add(out, data, (size_t)n);
    }
    h->flush_out = NULL;
    h->busy--;
    /* watermark news after the send loop, never from inside it */
    for (struct h2s *st = h->streams, *nx; st; st = nx) {
        nx = st->next;
        if (st->drained && st->user) {
            st->drained = false;
            h->cbs->on_drained(h->arg, st->user, evbuffer_get_length(st->out));
        } else {
            st->drained = false;
        }
    }
    return h->failed ? -1 : 0;
}

bool h2_server_finished(const struct h2_server *h)
{
    return !nghttp2_session_want_read(h->s) && !nghttp2_session_want_write(h->s);
}

bool h2_server_failed(const struct h2_server *h) { return h->failed; }
size_t h2_server_active_streams(const struct h2_server *h) { return h->nstreams; }

void h2_server_goaway(struct h2_server *h, uint32_t error_code)
{
    if (error_code != NGHTTP2_NO_ERROR) {
        fail(h, NULL, error_code, "local");
        return;
    }
    nghttp2_submit_goaway(h->s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h->s),
                          NGHTTP2_NO_ERROR, NULL, 0);
}

void h2_server_shutdown_notice(struct h2_server *h)
{
    if (!h->failed)
        nghttp2_submit_shutdown_notice(h->s);
}

int h2_server_submit_headers(struct h2_server *h, int32_t id, const struct herald_headers *resp,
                             bool end_stream)
{
    struct h2s *st = stream_of(h, id);
    const char *status = HEADERS_GET(resp, ":status");
    if (!st || !status || st->resp_end_queued)
        return -1;
    size_t cnt = herald_headers_count(resp);
    nghttp2_nv small[32], *nva = cnt + 1 <= 32 ? small : xcalloc(cnt + 1, sizeof(*nva));
    size_t k = 0, nf;
    nva[k++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status, 7, strlen(status), NGHTTP2_NV_FLAG_NONE};
    /* names in a header map are lower-case already; nghttp2 copies them */
    const struct header_field *f = headers_fields(resp, &nf);
    for (size_t i = 0; i < nf; i++) {
        if (f[i].name[0] == ':' || headers_hop_of(f[i].name, f[i].nlen))   /* connection-specific: not HTTP/2's */
            continue;
        nva[k++] = (nghttp2_nv){(uint8_t *)f[i].name, (uint8_t *)f[i].value, f[i].nlen, f[i].vlen,
                                NGHTTP2_NV_FLAG_NONE};
    }
    int code = status_code(status);
    int rc;
    if (code >= 100 && code < 200) {
        rc = nghttp2_submit_headers(h->s, NGHTTP2_FLAG_NONE, id, NULL, nva, k, NULL);
    } else {
        nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_body};
        rc = nghttp2_submit_response(h->s, id, nva, k, end_stream ? NULL : &prd);
        st->resp_submitted = true;
        st->resp_end_queued = end_stream;
    }
    if (nva != small)
        free(nva);
    return rc == 0 ? 0 : -1;
}

static void resume(struct h2_server *h, struct h2s *st)
{
    if (st->deferred) {
        st->deferred = false;
        nghttp2_session_resume_data(h->s, st->id);
    }
}

int h2_server_submit_data(struct h2_server *h, int32_t id, struct evbuffer *data, bool end_stream)
{
    struct h2s *st = stream_of(h, id);
    if (!st || !st->resp_submitted || st->resp_end_queued || st->out_end) {
        evbuffer_drain(data, evbuffer_get_length(data));
        return -1;
    }
    evbuffer_add_buffer(st->out, data);
    st->out_end = end_stream;
    resume(h, st);
    return 0;
}

int h2_server_submit_trailers(struct h2_server *h, int32_t id, const struct herald_headers *t)
{
    struct h2s *st = stream_of(h, id);
    if (!st || !st->resp_submitted || st->resp_end_queued || st->out_end)
        return -1;
    if (t && herald_headers_count(t))
        st->out_trailers = herald_headers_copy(t);
    st->out_end = true;
    resume(h, st);
    return 0;
}

size_t h2_server_queued(struct h2_server *h, int32_t id)
{
    struct h2s *st = stream_of(h, id);
    return st ? evbuffer_get_length(st->out) : 0;
}

void h2_server_detach(struct h2_server *h, int32_t id)
{
    struct h2s *st = stream_of(h, id);
    if (!st || !st->user)
        return;
    st->user = NULL;
    size_t held = held_len(st);
    if (held) {
        evbuffer_drain(st->in, held);   /* held > 0: st->in exists */
        consume(h, id, held);
    }
    if (!st->resp_submitted || (st->resp_ended && !st->req_ended))
        nghttp2_submit_rst_stream(h->s, NGHTTP2_FLAG_NONE, id,
                                  st->resp_submitted ? NGHTTP2_NO_ERROR : NGHTTP2_INTERNAL_ERROR);
}

void h2_server_reset(struct h2_server *h, int32_t id, uint32_t error_code)
{
    struct h2s *st = stream_of(h, id);
    if (!st)
        return;
    st->user = NULL;
    size_t held = held_len(st);
    if (held) {
        evbuffer_drain(st->in, held);   /* held > 0: st->in exists */
        consume(h, id, held);
    }
    nghttp2_submit_rst_stream(h->s, NGHTTP2_FLAG_NONE, id, error_code);
}

void h2_server_pause(struct h2_server *h, int32_t id, bool pause)
{
    struct h2s *st = stream_of(h, id);
    if (st)
        st->paused = pause;
}

void h2_server_deliver(struct h2_server *h)
{
    if (h->busy)
        return;
    h->busy++;
    for (struct h2s *st = h->streams; st; st = st->next) {
        /* one pass per stream; a stream pausing again keeps the rest */
        while (st->user && !st->paused && (held_len(st) || st->in_end)) {
            size_t n = held_len(st);
            if (n) {
                evbuffer_drain(h->tmp, evbuffer_get_length(h->tmp));
                evbuffer_add_buffer(h->tmp, st->in);
                h->cbs->on_data(h->arg, st->user, h->tmp, false);
                evbuffer_drain(h->tmp, evbuffer_get_length(h->tmp));
                consume(h, st->id, n);
                continue;
            }
            st->in_end = false;
            deliver_end(h, st);
        }
    }
    h->busy--;
}

bool h2_server_ping(struct h2_server *h)
{
    return !h->failed && nghttp2_submit_ping(h->s, NGHTTP2_FLAG_NONE, NULL) == 0;
}

const struct h2_frame_counts *h2_server_frame_counts(const struct h2_server *h)
{
    return &h->counts;
}
