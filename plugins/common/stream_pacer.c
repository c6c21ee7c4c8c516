/* Envoy's StreamRateLimiter; see stream_pacer.h. */
#include <stdint.h>
#include <stdlib.h>

#include "stream_pacer.h"
#include "xalloc.h"

#define DEFAULT_BUFFER_LIMIT (1024 * 1024)

struct stream_pacer {
    struct herald_http_stream *s;
    void *session;
    bool encode;
    struct pace_bucket own, *bucket;
    uint64_t fill_ms;
    uint64_t limit;             /* the connection's buffer limit */
    struct herald_buf *pending;
    struct herald_timer *timer;
    bool timer_armed;
    bool saw_end;               /* the body's end is in pending */
    bool saw_trailers;          /* trailers wait for the last bytes */
    bool finished;              /* the end (or the trailers) went on */
    bool stopped;
    bool source_paused;
    bool started;
    uint64_t first_ms;          /* when the first byte came in */
    pacer_sent_cb sent;
    void *arg;
};

static void on_tick(struct herald_timer *t, void *arg);

struct stream_pacer *stream_pacer_new(struct herald_http_stream *s, void *session, bool encode,
                                      struct pace_bucket *shared, uint64_t limit_kbps, uint64_t fill_ms,
                                      pacer_sent_cb sent, void *arg)
{
    struct stream_pacer *p = xcalloc(1, sizeof(*p));
    p->s = s;
    p->session = session;
    p->encode = encode;
    if (shared) {
        p->bucket = shared;
    } else {
        pace_bucket_init(&p->own, limit_kbps);
        p->bucket = &p->own;
    }
    p->fill_ms = fill_ms ? fill_ms : 50;
    uint32_t limit = herald_conn_buffer_limit(herald_http_stream_conn(s));
    p->limit = limit ? limit : DEFAULT_BUFFER_LIMIT;
    p->pending = herald_buf_new();
    p->timer = herald_timer_new(on_tick, p);
    p->sent = sent;
    p->arg = arg;
    return p;
}

/* Stops (or lets go) whatever feeds this direction: the upstream, or the
 * client's reads. Both watermarks are counted apart from the router's own
 * reasons, so each is called once each way. */
static void source_pause(struct stream_pacer *p, bool pause)
{
    if (p->source_paused == pause)
        return;
    p->source_paused = pause;
    if (p->encode)
        herald_http_stream_encode_watermark(p->s, pause);
    else
        herald_http_stream_decode_watermark(p->s, pause);
}

static void arm(struct stream_pacer *p, uint64_t ms)
{
    p->timer_armed = true;
    herald_timer_arm(p->timer, ms);
}

enum herald_http_status stream_pacer_data(struct stream_pacer *p, struct herald_buf *data, bool end_stream)
{
    if (p->stopped || p->finished) {
        herald_buf_drain(data, herald_buf_len(data));
        return HERALD_HTTP_STOP;
    }
    if (!p->started) {
        p->started = true;
        p->first_ms = herald_now_ms();
    }
    herald_buf_move(p->pending, data, SIZE_MAX);
    p->saw_end = p->saw_end || end_stream;
    if (herald_buf_len(p->pending) > p->limit)
        source_pause(p, true);
    /* the first bytes go from the timer too: never inject from inside a callback */
    if (!p->timer_armed)
        arm(p, 0);
    return HERALD_HTTP_STOP;
}

enum herald_http_status stream_pacer_trailers(struct stream_pacer *p)
{
    if (p->stopped || !herald_buf_len(p->pending))
        return HERALD_HTTP_CONTINUE;
    p->saw_trailers = true;
    return HERALD_HTTP_STOP;
}

uint64_t stream_pacer_pending(const struct stream_pacer *p)
{
    return herald_buf_len(p->pending);
}

static void on_tick(struct herald_timer *t, void *arg)
{
    (void)t;
    struct stream_pacer *p = arg;
    p->timer_armed = false;
    if (p->stopped || p->finished)
        return;
    size_t len = herald_buf_len(p->pending);
    uint64_t now = herald_now_ms();
    uint64_t got = len ? pace_bucket_take(p->bucket, len, now) : 0;
    bool last = got == len && (p->saw_end || p->saw_trailers);
    if (got || (last && p->saw_end)) {
        struct herald_buf *out = herald_buf_new();
        herald_buf_move(out, p->pending, got);
        if (p->source_paused && herald_buf_len(p->pending) <= p->limit / 2)
            source_pause(p, false);
        if (last)
            p->finished = true;
        if (p->sent)
            p->sent(p->arg, got, herald_buf_len(p->pending) > 0, last,
                    last && now > p->first_ms ? now - p->first_ms : 0);
        if (p->encode)
            herald_http_stream_inject_encoded_data(p->s, p->session, out, last && p->saw_end);
        else
            herald_http_stream_inject_decoded_data(p->s, p->session, out, last && p->saw_end);
        herald_buf_free(out);
        if (p->stopped)
            return;
    }
    if (last && p->saw_trailers) {
        if (p->encode)
            herald_http_stream_continue_encoding(p->s);
        else
            herald_http_stream_continue_decoding(p->s);
        return;
    }
    if (herald_buf_len(p->pending))
        arm(p, p->fill_ms);
}

void stream_pacer_stop(struct stream_pacer *p)
{
    if (!p || p->stopped)
        return;
    p->stopped = true;
    herald_timer_cancel(p->timer);
    p->timer_armed = false;
}

void stream_pacer_free(struct stream_pacer *p)
{
    if (!p)
        return;
    herald_timer_free(p->timer);
    herald_buf_free(p->pending);
    if (p->bucket == &p->own)
        pace_bucket_destroy(&p->own);
    free(p);
}
