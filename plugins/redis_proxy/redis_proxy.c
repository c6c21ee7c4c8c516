/* redis_proxy: one session per client connection. Requests are decoded as
 * they arrive and each becomes an entry of the session's queue, in arrival
 * order. The splitter answers some itself (PING, AUTH, errors), sends the
 * others to the servers owning their keys (multi-key commands as one
 * fragment per key, to whichever servers those are) and puts replies back
 * together; a reply goes out only when every request before it has gone, so
 * a pipelining client reads its replies in the order it asked, whatever
 * order the servers answer in. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include "redis_proxy.h"
#include "xalloc.h"

#define MAX_INFLIGHT 256             /* requests waiting per client before reading from it pauses */
#define PAUSE_INFLIGHT HERALD_PAUSE_USER
#define CMD_NAME_IN_ERRORS 128       /* how much of an unknown command's name an error repeats */

struct request;

struct redis_frag {
    struct request *rq;
    struct redis_upreq *up;          /* waiting in a server connection's queue; NULL once answered */
};

struct request {
    struct request *next;
    struct session *s;
    enum redis_cmd_kind kind;
    struct redis_cmd_stats *stats;   /* command.<name>.*, or NULL */
    uint64_t start_us;
    size_t nfrag, pending;
    struct redis_frag *frags;
    struct resp_value **parts;       /* the reply of each fragment (SIMPLE, EVAL, MGET) */
    int64_t sum;                     /* SUM */
    size_t errors;
    bool dispatching;                /* fragments are still being sent: do not finish yet */
    bool done;
    struct herald_buf *out;          /* the encoded reply */
};

struct session {
    struct redis_proxy_conf *conf;
    struct redis_pool *pool;
    struct herald_conn *c;
    struct resp_decoder dec;
    struct request *head, *tail;
    size_t nreq;
    bool authed;
    bool closing;                    /* no more requests: close once the queue is written (QUIT, bad input) */
    bool down_ended;                 /* the client half-closed: close once the queue is written */
    bool closed;                     /* the connection is gone: nothing waits in the pool any more */
    bool draining;
    bool in_read;                    /* on_read flushes at its end */
    bool flushing;
    bool paused_inflight, paused_peer;
    int64_t rx_buffered, tx_buffered;   /* our share of the *_bytes_buffered gauges */
};

static const struct redis_cmd custom_cmd = {"", REDIS_CMD_SIMPLE, true};

/* Sizes a peer controls are bounded before anything is allocated for them;
 * a failing malloc for what is left is the end (xalloc.h), as elsewhere in
 * herald. */

static void buf_write(void *arg, const void *p, size_t n)
{
    if (herald_buf_add(arg, p, n) < 0)
        abort();
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static struct resp_value *error_value(const char *msg)
{
    struct resp_value *v = resp_value_new_str(RESP_ERROR, msg, strlen(msg));
    if (!v)
        abort();
    return v;
}

/* ---------------------------------------------------------------- the queue */

static struct request *request_new(struct session *s)
{
    struct request *rq = xcalloc(1, sizeof(*rq));
    rq->s = s;
    rq->out = herald_buf_new();
    if (!rq->out)
        abort();
    if (s->tail)
        s->tail->next = rq;
    else
        s->head = rq;
    s->tail = rq;
    s->nreq++;
    herald_gauge_add(s->conf->stats.downstream_rq_active, 1);
    return rq;
}

static void request_free(struct request *rq)
{
    for (size_t i = 0; i < rq->nfrag; i++) {
        redis_upreq_cancel(rq->frags[i].up);
        if (rq->parts)
            resp_value_free(rq->parts[i]);
    }
    free(rq->frags);
    free(rq->parts);
    herald_buf_free(rq->out);
    free(rq);
}

static void reply_error(struct request *rq, const char *msg)
{
    resp_encode_error(msg, buf_write, rq->out);
    rq->done = true;
}

static void reply_simple(struct request *rq, const char *msg)
{
    resp_encode_simple(msg, buf_write, rq->out);
    rq->done = true;
}

static void reply_bulk(struct request *rq, const char *p, size_t n)
{
    resp_encode_bulk(p, n, buf_write, rq->out);
    rq->done = true;
}

static void set_gauge(struct herald_stat *g, int64_t *mine, int64_t v)
{
    if (v != *mine) {
        herald_gauge_add(g, v - *mine);
        *mine = v;
    }
}

static void cancel_all(struct session *s)
{
    /* the pool's queues keep their entries (the replies still come and are dropped) */
    while (s->head) {
        struct request *rq = s->head;
        s->head = rq->next;
        request_free(rq);
    }
    s->tail = NULL;
    if (s->nreq)
        herald_gauge_add(s->conf->stats.downstream_rq_active, -(int64_t)s->nreq);
    s->nreq = 0;
}

static void resume_if_unblocked(struct session *s);

static void close_conn(struct session *s)
{
    /* LOCAL_CLOSE comes back at once (on_event) and cancels what is left */
    herald_conn_close(s->c, HERALD_CLOSE_FLUSH);
}

/* Writes out the replies at the head of the queue that are complete. */
static void flush(struct session *s)
{
    if (s->flushing || s->closed)
        return;
    s->flushing = true;
    struct herald_buf *w = NULL;
    while (s->head && s->head->done) {
        struct request *rq = s->head;
        if (!w && !(w = herald_buf_new()))
            abort();
        herald_buf_move(w, rq->out, SIZE_MAX);
        s->head = rq->next;
        if (!s->head)
            s->tail = NULL;
        s->nreq--;
        herald_gauge_add(s->conf->stats.downstream_rq_active, -1);
        request_free(rq);
    }
    if (w) {
        herald_stat_add(s->conf->stats.downstream_cx_tx_bytes_total, herald_buf_len(w));
        herald_conn_write(s->c, w, false);
        herald_buf_free(w);
    }
    s->flushing = false;
    if (s->closed)
        return;
    set_gauge(s->conf->stats.downstream_cx_tx_bytes_buffered, &s->tx_buffered,
              (int64_t)herald_conn_output_len(s->c));
    if (s->nreq == 0 && (s->closing || s->down_ended)) {
        close_conn(s);
        return;
    }
    if (s->nreq == 0 && s->draining && herald_runtime_feature_enabled("redis.drain_close_enabled", 100, 100)) {
        herald_stat_inc(s->conf->stats.downstream_cx_drain_close);
        close_conn(s);
        return;
    }
    resume_if_unblocked(s);
}

/* ---------------------------------------------------------------- replies from servers */

static void finish(struct request *rq)
{
    struct herald_buf *o = rq->out;
    char msg[64];

    switch (rq->kind) {
    case REDIS_CMD_SIMPLE:
    case REDIS_CMD_EVAL:
        resp_encode(rq->parts[0], buf_write, o);
        break;
    case REDIS_CMD_MGET:
        resp_encode_array_header(rq->nfrag, buf_write, o);
        for (size_t i = 0; i < rq->nfrag; i++)
            resp_encode(rq->parts[i], buf_write, o);
        break;
    case REDIS_CMD_MSET:
    case REDIS_CMD_SUM:
        if (rq->errors) {
            snprintf(msg, sizeof(msg), "finished with %zu error(s)", rq->errors);
            resp_encode_error(msg, buf_write, o);
        } else if (rq->kind == REDIS_CMD_MSET) {
            resp_encode_simple("OK", buf_write, o);
        } else {
            resp_encode_integer(rq->sum, buf_write, o);
        }
        break;
    default:
        break;
    }
    if (rq->stats) {
        herald_stat_inc(rq->errors ? rq->stats->error : rq->stats->success);
        uint64_t us = now_us() - rq->start_us;
        herald_histogram_record(rq->stats->latency, rq->s->conf->latency_in_micros ? us : us / 1000);
    }
    rq->done = true;
}

void redis_frag_done(struct redis_frag *f, struct resp_value *v, const char *err)
{
    struct request *rq = f->rq;
    struct session *s = rq->s;
    size_t i = (size_t)(f - rq->frags);

    f->up = NULL;
    switch (rq->kind) {
    case REDIS_CMD_SIMPLE:
    case REDIS_CMD_EVAL:
        /* whatever the server said, errors included, is the answer (a success, as in Envoy) */
        if (!v)
            rq->errors++;
        rq->parts[i] = v ? v : error_value(err);
        v = NULL;
        break;
    case REDIS_CMD_MGET:
        if (!v) {
            rq->errors++;
            rq->parts[i] = error_value(err);
        } else if (v->type == RESP_BULK || v->type == RESP_NULL || v->type == RESP_ERROR) {
            if (v->type == RESP_ERROR)
                rq->errors++;
            rq->parts[i] = v;
            v = NULL;
        } else {
            rq->errors++;
            rq->parts[i] = error_value(REDIS_UPSTREAM_PROTOCOL_ERROR);
        }
        break;
    case REDIS_CMD_MSET:
        if (!v || v->type != RESP_SIMPLE || strcmp(v->str, "OK") != 0)
            rq->errors++;
        break;
    case REDIS_CMD_SUM:
        if (v && v->type == RESP_INTEGER)
            rq->sum += v->integer;
        else
            rq->errors++;
        break;
    default:
        break;
    }
    resp_value_free(v);
    if (--rq->pending == 0 && !rq->dispatching) {
        finish(rq);
        if (!s->in_read)
            flush(s);
    }
}

/* ---------------------------------------------------------------- the splitter */

static void start_frags(struct request *rq, size_t n, bool parts)
{
    rq->nfrag = rq->pending = n;
    rq->frags = xcalloc(n, sizeof(*rq->frags));
    if (parts)
        rq->parts = xcalloc(n, sizeof(*rq->parts));
    rq->dispatching = true;
    for (size_t i = 0; i < n; i++)
        rq->frags[i].rq = rq;
}

static void end_dispatch(struct request *rq)
{
    rq->dispatching = false;
    if (rq->pending == 0)
        finish(rq);
}

/* Sends fragment i (argv, argc; the key in argv[key]) to the server owning
 * the key, and to the route's mirrors. */
static void send_frag(struct session *s, struct request *rq, size_t i, const struct resp_value *argv, size_t argc,
                      size_t key, bool write)
{
    const struct redis_proxy_conf *conf = s->conf;
    struct redis_frag *f = &rq->frags[i];
    const char *k = argv[key].str;
    size_t kl = argv[key].len;

    const struct redis_route *rt = redis_route_match(&conf->router, k, kl);
    if (!rt) {
        HERALD_LOGF(HERALD_LOG_DEBUG, "redis_proxy", "[C%llu] no route for a key",
                    (unsigned long long)herald_conn_id(s->c));
        redis_frag_done(f, NULL, REDIS_NO_UPSTREAM_HOST);
        return;
    }
    if (rt->remove_prefix) {
        k += rt->prefix_len;
        kl -= rt->prefix_len;
    }
    uint64_t hash = redis_key_hash(k, kl, conf->hashtagging);
    const char *err = redis_pool_send(s->pool, rt->cluster, hash, argv, argc, key, k, kl, f, &f->up);
    if (err) {
        redis_frag_done(f, NULL, err);
        return;
    }
    for (size_t m = 0; m < rt->nmirrors; m++) {
        const struct redis_mirror *mp = &rt->mirrors[m];
        if (mp->exclude_read_commands && !write)
            continue;
        if (!fraction_on(&mp->fraction, true))
            continue;
        /* fire and forget: the reply is dropped */
        (void)redis_pool_send(s->pool, mp->cluster, hash, argv, argc, key, k, kl, NULL, NULL);
    }
}

static bool same_secret(const char *a, size_t al, const char *b, size_t bl)
{
    if (al != bl)
        return false;
    volatile unsigned char d = 0;   /* every byte compared: no early exit to time */
    for (size_t i = 0; i < al; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

static bool password_ok(const struct redis_proxy_conf *conf, const struct resp_value *p)
{
    bool ok = false;
    for (size_t i = 0; i < conf->npasswords; i++)
        ok |= same_secret(p->str, p->len, conf->passwords[i], conf->password_lens[i]);
    return ok;
}

/* AUTH is the proxy's own (downstream_auth_password(s) / _username), as in Envoy. */
static void do_auth(struct session *s, struct request *rq, const struct resp_value *argv, size_t argc)
{
    const struct redis_proxy_conf *conf = s->conf;

    if (argc < 2) {
        herald_stat_inc(conf->stats.invalid_request);
        reply_error(rq, REDIS_INVALID_REQUEST);
        return;
    }
    if (argc > 3) {
        reply_error(rq, "ERR wrong number of arguments for 'auth' command");
        return;
    }
    if (argc == 2) {
        if (conf->npasswords == 0) {
            reply_error(rq, "ERR Client sent AUTH, but no password is set");
        } else if (password_ok(conf, &argv[1])) {
            s->authed = true;
            reply_simple(rq, "OK");
        } else {
            s->authed = false;
            reply_error(rq, "ERR invalid password");
        }
        return;
    }
    const struct resp_value *user = &argv[1], *pass = &argv[2];
    if (!conf->username && conf->npasswords == 0) {
        reply_error(rq, "ERR Client sent AUTH, but no username-password pair is set");
    } else if (password_ok(conf, pass) &&
               (conf->username ? same_secret(user->str, user->len, conf->username, conf->username_len)
                               : (user->len == 7 && memcmp(user->str, "default", 7) == 0))) {
        /* without a configured username, "default" is Redis 6's name for the password-only user */
        s->authed = true;
        reply_simple(rq, "OK");
    } else {
        s->authed = false;
        reply_error(rq, "WRONGPASS invalid username-password pair");
    }
}

static void reply_time(struct request *rq)
{
    struct timeval tv;
    char sec[32], usec[32];

    gettimeofday(&tv, NULL);
    int a = snprintf(sec, sizeof(sec), "%lld", (long long)tv.tv_sec);
    int b = snprintf(usec, sizeof(usec), "%ld", (long)tv.tv_usec);
    resp_encode_array_header(2, buf_write, rq->out);
    resp_encode_bulk(sec, (size_t)a, buf_write, rq->out);
    resp_encode_bulk(usec, (size_t)b, buf_write, rq->out);
    rq->done = true;
}

static void wrong_args(struct request *rq, const struct resp_value *name)
{
    char msg[CMD_NAME_IN_ERRORS + 64];
    int n = name->len > CMD_NAME_IN_ERRORS ? CMD_NAME_IN_ERRORS : (int)name->len;
    snprintf(msg, sizeof(msg), "wrong number of arguments for '%.*s' command", n, name->str);
    reply_error(rq, msg);
}

static const struct redis_cmd *lookup(const struct redis_proxy_conf *conf, const struct resp_value *name,
                                      struct redis_cmd_stats **stats)
{
    size_t idx;
    const struct redis_cmd *cmd = redis_cmd_lookup(name->str, name->len, &idx);
    *stats = NULL;
    if (cmd) {
        if (redis_cmd_has_stats(cmd->kind))
            *stats = &conf->cmd_stats[idx];
        return cmd;
    }
    for (size_t i = 0; i < conf->ncustom; i++)
        if (strlen(conf->custom_commands[i]) == name->len &&
            strncasecmp(conf->custom_commands[i], name->str, name->len) == 0) {
            *stats = &conf->cmd_stats[redis_cmd_count() + i];
            return &custom_cmd;
        }
    return NULL;
}

static void dispatch(struct session *s, struct request *rq, const struct resp_value *v)
{
    const struct redis_proxy_conf *conf = s->conf;
    struct redis_cmd_stats *stats;
    static const struct resp_value get = {.type = RESP_BULK, .len = 3, .str = (char *)"get"};
    static const struct resp_value set = {.type = RESP_BULK, .len = 3, .str = (char *)"set"};

    bool flat = v->type == RESP_ARRAY && v->len > 0;
    for (size_t i = 0; flat && i < v->len; i++)
        flat = v->elems[i].type == RESP_BULK;
    if (!flat) {
        herald_stat_inc(conf->stats.invalid_request);
        reply_error(rq, REDIS_INVALID_REQUEST);
        return;
    }
    const struct resp_value *argv = v->elems;
    size_t argc = v->len;
    const struct redis_cmd *cmd = lookup(conf, &argv[0], &stats);

    if (cmd && cmd->kind == REDIS_CMD_AUTH) {
        do_auth(s, rq, argv, argc);
        return;
    }
    if (!s->authed) {
        reply_error(rq, REDIS_AUTH_REQUIRED);
        return;
    }
    if (!cmd) {
        char msg[CMD_NAME_IN_ERRORS + 32];
        int n = argv[0].len > CMD_NAME_IN_ERRORS ? CMD_NAME_IN_ERRORS : (int)argv[0].len;
        herald_stat_inc(conf->stats.unsupported_command);
        snprintf(msg, sizeof(msg), "unsupported command '%.*s'", n, argv[0].str);
        reply_error(rq, msg);
        return;
    }
    switch (cmd->kind) {
    case REDIS_CMD_PING:
        if (argc == 1)
            reply_simple(rq, "PONG");
        else if (argc == 2)
            reply_bulk(rq, argv[1].str, argv[1].len);
        else
            wrong_args(rq, &argv[0]);
        return;
    case REDIS_CMD_ECHO:
        if (argc != 2) {
            herald_stat_inc(conf->stats.invalid_request);
            reply_error(rq, REDIS_INVALID_REQUEST);
        } else {
            reply_bulk(rq, argv[1].str, argv[1].len);
        }
        return;
    case REDIS_CMD_TIME:
        reply_time(rq);
        return;
    case REDIS_CMD_QUIT:
        reply_simple(rq, "OK");
        s->closing = true;
        return;
    default:
        break;
    }
    if (argc < 2) {
        /* every command that is sent on has a key */
        herald_stat_inc(conf->stats.invalid_request);
        reply_error(rq, REDIS_INVALID_REQUEST);
        return;
    }
    rq->kind = cmd->kind;
    rq->stats = stats;
    rq->start_us = now_us();
    if (stats)
        herald_stat_inc(stats->total);
    switch (cmd->kind) {
    case REDIS_CMD_SIMPLE:
        start_frags(rq, 1, true);
        send_frag(s, rq, 0, argv, argc, 1, cmd->write);
        break;
    case REDIS_CMD_EVAL:
        if (argc < 4) {
            wrong_args(rq, &argv[0]);
            if (stats)
                herald_stat_inc(stats->error);
            return;
        }
        start_frags(rq, 1, true);
        send_frag(s, rq, 0, argv, argc, 3, cmd->write);
        break;
    case REDIS_CMD_MGET:
        start_frags(rq, argc - 1, true);
        for (size_t i = 1; i < argc; i++) {
            struct resp_value one[2] = {get, argv[i]};
            send_frag(s, rq, i - 1, one, 2, 1, false);
        }
        break;
    case REDIS_CMD_MSET:
        if ((argc - 1) % 2) {
            wrong_args(rq, &argv[0]);
            if (stats)
                herald_stat_inc(stats->error);
            return;
        }
        start_frags(rq, (argc - 1) / 2, false);
        for (size_t i = 1; i < argc; i += 2) {
            struct resp_value one[3] = {set, argv[i], argv[i + 1]};
            send_frag(s, rq, (i - 1) / 2, one, 3, 1, true);
        }
        break;
    case REDIS_CMD_SUM:
        start_frags(rq, argc - 1, false);
        for (size_t i = 1; i < argc; i++) {
            struct resp_value one[2] = {argv[0], argv[i]};
            send_frag(s, rq, i - 1, one, 2, 1, cmd->write);
        }
        break;
    default:
        return;
    }
    end_dispatch(rq);
}

/* ---------------------------------------------------------------- the client connection */

static void *session_new(void *cp, void *wstate, struct herald_conn *c)
{
    struct redis_proxy_conf *conf = cp;
    struct resp_limits lim;

    if (!wstate)
        return NULL;
    struct session *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    resp_limits_request(&lim);
    if (resp_decoder_init(&s->dec, &lim) < 0) {
        free(s);
        return NULL;
    }
    s->conf = conf;
    s->pool = wstate;
    s->c = c;
    s->authed = conf->npasswords == 0 && !conf->username;
    herald_stat_inc(conf->stats.downstream_cx_total);
    herald_gauge_add(conf->stats.downstream_cx_active, 1);
    return s;
}

static void session_destroy(void *p)
{
    struct session *s = p;

    cancel_all(s);
    set_gauge(s->conf->stats.downstream_cx_rx_bytes_buffered, &s->rx_buffered, 0);
    set_gauge(s->conf->stats.downstream_cx_tx_bytes_buffered, &s->tx_buffered, 0);
    herald_gauge_add(s->conf->stats.downstream_cx_active, -1);
    resp_decoder_fini(&s->dec);
    free(s);
}

static void protocol_error(struct session *s)
{
    HERALD_LOGF(HERALD_LOG_DEBUG, "redis_proxy", "[C%llu] %s: %s", (unsigned long long)herald_conn_id(s->c),
                REDIS_DOWNSTREAM_PROTOCOL_ERROR, s->dec.error ? s->dec.error : "?");
    herald_stat_inc(s->conf->stats.downstream_cx_protocol_error);
    /* the requests before it are still answered, then this error (not a request), then the close */
    reply_error(request_new(s), REDIS_DOWNSTREAM_PROTOCOL_ERROR);
    s->closing = true;
}

/* Whether to leave further requests unread for now: too many waiting for
 * replies, or the client is not reading its replies. Requests are decoded
 * (and sent on) only while this is false, so what a client can make the
 * proxy hold is bounded by the replies of MAX_INFLIGHT requests. */
static bool blocked(const struct session *s)
{
    return s->nreq >= MAX_INFLIGHT || herald_conn_output_len(s->c) > herald_conn_buffer_limit(s->c);
}

/* Decodes requests from p[0..n) until it is all taken or blocked() says
 * stop; returns the bytes taken. */
static size_t feed(struct session *s, const uint8_t *p, size_t n)
{
    size_t taken = 0;
    while (taken < n && !s->closing && !blocked(s)) {
        size_t used;
        struct resp_value *v;
        enum resp_result r = resp_decode(&s->dec, p + taken, n - taken, &used, &v);
        taken += used;
        if (r == RESP_ERR) {
            protocol_error(s);
            break;
        }
        if (r == RESP_DONE) {
            struct request *rq = request_new(s);
            herald_stat_inc(s->conf->stats.downstream_rq_total);
            dispatch(s, rq, v);
            resp_value_free(v);
        }
    }
    return taken;
}

static void resume_if_unblocked(struct session *s)
{
    if (s->paused_inflight && !s->closed && !blocked(s)) {
        s->paused_inflight = false;
        herald_conn_resume_reading(s->c, PAUSE_INFLIGHT);   /* what is left in the read buffer comes again */
    }
}

static enum herald_status on_read(void *p, struct herald_buf *data, bool end_stream)
{
    struct session *s = p;
    size_t len = herald_buf_len(data), off = 0;
    struct iovec vec[16];
    uint8_t chunk[16384];

    if (s->closed || s->closing) {
        herald_buf_drain(data, len);
        return HERALD_CONTINUE;
    }
    /* bytes are counted once, when taken: a blocked read leaves the rest for later */
    s->in_read = true;
    bool stop = false;
    int nvec = herald_buf_peek(data, len, vec, 16);
    for (int i = 0; i < nvec && i < 16 && !stop; i++) {
        size_t k = feed(s, vec[i].iov_base, vec[i].iov_len);
        off += k;
        stop = k < vec[i].iov_len;
    }
    while (off < len && !stop) {
        size_t n = herald_buf_copyout(data, off, chunk, sizeof(chunk));
        if (!n)
            break;
        size_t k = feed(s, chunk, n);
        off += k;
        stop = k < n;
    }
    s->in_read = false;
    if (s->closing)
        off = len;   /* QUIT or bad input: the rest is not read */
    herald_stat_add(s->conf->stats.downstream_cx_rx_bytes_total, off);
    herald_buf_drain(data, off);
    set_gauge(s->conf->stats.downstream_cx_rx_bytes_buffered, &s->rx_buffered,
              (int64_t)(resp_decoder_buffered(&s->dec) + herald_buf_len(data)));
    if (off < len && !s->paused_inflight) {
        s->paused_inflight = true;
        herald_conn_pause_reading(s->c, PAUSE_INFLIGHT);
    } else if (off == len && end_stream) {
        s->down_ended = true;
    }
    flush(s);
    return HERALD_CONTINUE;
}

static void on_event(void *p, enum herald_conn_event ev)
{
    struct session *s = p;

    switch (ev) {
    case HERALD_EV_REMOTE_CLOSE:
    case HERALD_EV_LOCAL_CLOSE:
        /* from here on nothing of ours may wait in the pool: the worker's
         * pool can go before this session is freed */
        s->closed = true;
        cancel_all(s);
        break;
    case HERALD_EV_ABOVE_WRITE_HIGH:
        if (!s->paused_peer && !s->closed) {
            s->paused_peer = true;
            herald_conn_pause_reading(s->c, HERALD_PAUSE_PEER);
        }
        break;
    case HERALD_EV_BELOW_WRITE_LOW:
        if (s->paused_peer && !s->closed) {
            s->paused_peer = false;
            herald_conn_resume_reading(s->c, HERALD_PAUSE_PEER);
        }
        if (!s->closed) {
            set_gauge(s->conf->stats.downstream_cx_tx_bytes_buffered, &s->tx_buffered,
                      (int64_t)herald_conn_output_len(s->c));
            resume_if_unblocked(s);
        }
        break;
    case HERALD_EV_DRAIN:
        s->draining = true;
        if (s->nreq == 0 && !s->closed && !s->in_read &&
            herald_runtime_feature_enabled("redis.drain_close_enabled", 100, 100)) {
            herald_stat_inc(s->conf->stats.downstream_cx_drain_close);
            close_conn(s);
        }
        break;
    default:
        break;
    }
}

static void *worker_init(void *conf, unsigned worker)
{
    return redis_pool_new(conf);
}

static void worker_destroy(void *conf, void *wstate)
{
    redis_pool_free(wstate);
}

const struct herald_network_filter_ops redis_proxy_ops = {
    .size = sizeof(struct herald_network_filter_ops),
    .config_create = redis_proxy_config_create,
    .config_destroy = redis_proxy_config_destroy,
    .worker_init = worker_init,
    .worker_destroy = worker_destroy,
    .session_new = session_new,
    .session_destroy = session_destroy,
    .on_read = on_read,
    .on_event = on_event,
};
