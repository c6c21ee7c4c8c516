/* mongo_proxy: the per-connection sniffer. Each direction's bytes are fed to
 * a decoder as they pass; the filter never changes them. Requests come from
 * the downstream (on_read), replies from the upstream (on_write). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "mongo_proxy.h"

struct session {
    struct mongo_proxy_conf *conf;
    struct herald_conn *c;
    struct mongo_decoder down, up;   /* requests, replies */
    struct mongo_pending pending;    /* requests whose reply feeds reply_* histograms */
    void *tag[MONGO_PENDING_TAGS];   /* the histograms the request being decoded wants */
    int64_t active;                  /* requests waiting for a reply */
    bool delay_wanted;               /* a request of this read drew a delay */
    bool delaying;
    bool draining;
    bool closed;
    size_t held;                     /* bytes of the read buffer decoded while it was held */
    struct herald_timer *delay_timer;
    uint64_t rnd;
};

static uint64_t next_random(struct session *s)
{
    s->rnd ^= s->rnd << 13;
    s->rnd ^= s->rnd >> 7;
    s->rnd ^= s->rnd << 17;
    return s->rnd;
}

static bool is_command_tracked(const struct mongo_proxy_conf *conf, const char *cmd)
{
    for (size_t i = 0; i < conf->ncommands; i++)
        if (!strcmp(conf->commands[i], cmd))
            return true;
    return false;
}

/* Stat name parts from wire data: keep them to a safe alphabet. */
static void stat_safe(char *dst, size_t size, const char *src)
{
    size_t i = 0;
    for (; src[i] && i + 1 < size; i++) {
        char ch = src[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                  ch == '_' || ch == '-' || ch == '.';
        dst[i] = ok ? ch : '_';
    }
    dst[i] = 0;
}

static void json_str(char *out, size_t size, const char *s)
{
    size_t o = 0;
    for (; *s && o + 7 < size; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            o += (size_t)snprintf(out + o, size - o, "\\u%04x", ch);
        } else {
            out[o++] = (char)ch;
        }
    }
    out[o] = 0;
}

static void access_log(struct session *s, const struct mongo_msg *m)
{
    char line[1024], db[140], coll[280], cmd[140], ts[64];
    struct timespec now;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    size_t k = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + k, sizeof(ts) - k, ".%03ldZ", now.tv_nsec / 1000000);
    json_str(db, sizeof(db), m->db);
    json_str(coll, sizeof(coll), m->collection);
    json_str(cmd, sizeof(cmd), m->command);
    int n = snprintf(line, sizeof(line),
                     "{\"time\": \"%s\", \"message\": {\"opcode\": \"%s\", \"id\": %d, \"response_to\": %d, "
                     "\"length\": %d, \"flags\": \"0x%x\", \"db\": \"%s\", \"collection\": \"%s\", "
                     "\"command\": \"%s\"%s}, \"downstream\": \"%s\", \"upstream_host\": \"\"}\n",
                     ts, mongo_opcode_name(m->opcode), m->request_id, m->response_to, m->length, m->flags, db,
                     coll, cmd, m->opcode == MONGO_OP_COMPRESSED ? ", \"compressed\": true" : "",
                     herald_conn_remote_str(s->c));
    if (n > 0 && (size_t)n < sizeof(line) && write(s->conf->log_fd, line, (size_t)n) < 0)
        HERALD_LOGF(HERALD_LOG_DEBUG, "mongo_proxy", "access log write failed");
}

static void add_metadata(struct session *s, const struct mongo_msg *m, const char *op)
{
    char key[200], val[256];

    if (!m->collection[0])
        return;
    snprintf(key, sizeof(key), "%s.%s", m->db, m->collection);
    const char *old = herald_conn_metadata_get(s->c, MONGO_METADATA_NS, key);
    if (old) {
        /* a comma-separated set of operations */
        size_t ol = strlen(old), opl = strlen(op);
        for (const char *p = old; (p = strstr(p, op)); p += opl)
            if ((p == old || p[-1] == ',') && (p[opl] == 0 || p[opl] == ','))
                return;
        if (ol + opl + 2 > sizeof(val))
            return;
        memcpy(val, old, ol);
        val[ol] = ',';
        memcpy(val + ol + 1, op, opl + 1);
        herald_conn_metadata_set(s->c, MONGO_METADATA_NS, key, val);
    } else {
        herald_conn_metadata_set(s->c, MONGO_METADATA_NS, key, op);
    }
    HERALD_LOGF(HERALD_LOG_DEBUG, "mongo_proxy", "[C%llu] metadata %s: %s = %s",
                (unsigned long long)herald_conn_id(s->c), MONGO_METADATA_NS, key,
                herald_conn_metadata_get(s->c, MONGO_METADATA_NS, key));
}

/* Envoy's reply histograms under prefix, into tag[0..2]. */
static void reply_histograms(void **tag, const char *prefix)
{
    tag[0] = herald_histogram(prefix, "reply_num_docs");
    tag[1] = herald_histogram(prefix, "reply_size");
    tag[2] = herald_histogram(prefix, "reply_time_ms");
}

static void collection_stats(struct session *s, const struct mongo_msg *m)
{
    char name[160], prefix[512];

    if (!m->collection[0])
        return;
    stat_safe(name, sizeof(name), m->collection);
    if (!mongo_proxy_collection_allowed(s->conf, name))
        return; /* bounded: a client cannot make us create stats without end */
    snprintf(prefix, sizeof(prefix), "%s.collection.%s.query", s->conf->stat_prefix, name);
    herald_stat_inc(herald_counter(prefix, "total"));
    reply_histograms(s->tag + 3, prefix);
    if (m->query_type == MONGO_Q_SCATTER_GET)
        herald_stat_inc(herald_counter(prefix, "scatter_get"));
    else if (m->query_type == MONGO_Q_MULTI_GET)
        herald_stat_inc(herald_counter(prefix, "multi_get"));
}

static void command_stats(struct session *s, const char *cmd)
{
    char prefix[512];

    if (!*cmd || !is_command_tracked(s->conf, cmd))
        return;
    snprintf(prefix, sizeof(prefix), "%s.cmd.%s", s->conf->stat_prefix, cmd);
    herald_stat_inc(herald_counter(prefix, "total"));
    reply_histograms(s->tag, prefix);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Remembers a request that drew cmd or collection stats, so that its reply
 * can be charged to the same names. */
static void track_request(struct session *s, const struct mongo_msg *m)
{
    for (int i = 0; i < MONGO_PENDING_TAGS; i++)
        if (s->tag[i]) {
            if (mongo_pending_add(&s->pending, m->request_id, now_ms(), s->tag) < 0)
                HERALD_LOGF(HERALD_LOG_DEBUG, "mongo_proxy", "out of memory tracking a request");
            return;
        }
}

static void charge_reply(struct session *s, const struct mongo_msg *m)
{
    struct mongo_pending_entry e;

    if (!s->pending.n || mongo_pending_take(&s->pending, m->response_to, &e) != 1)
        return;
    if (m->opcode != MONGO_OP_REPLY && m->opcode != MONGO_OP_MSG)
        return; /* compressed: its documents are not visible */
    uint64_t ms = now_ms(), took = ms > e.start_ms ? ms - e.start_ms : 0;
    for (int i = 0; i < MONGO_PENDING_TAGS; i += 3) {
        if (!e.tag[i])
            continue;
        herald_histogram_record(e.tag[i], m->reply_docs > 0 ? (uint64_t)m->reply_docs : 0);
        herald_histogram_record(e.tag[i + 1], m->reply_bytes);
        herald_histogram_record(e.tag[i + 2], took);
    }
}

static void request_started(struct session *s)
{
    s->active++;
    herald_gauge_add(s->conf->stats.op_query_active, 1);
}

static void maybe_delay(struct session *s)
{
    if (s->conf->delay_ms && s->conf->delay_per_million &&
        next_random(s) % 1000000 < s->conf->delay_per_million)
        s->delay_wanted = true;
}

static const char *metadata_op(const char *cmd)
{
    if (!strcmp(cmd, "find") || !strcmp(cmd, "aggregate") || !strcmp(cmd, "count") ||
        !strcmp(cmd, "distinct"))
        return "query";
    if (!strcmp(cmd, "insert") || !strcmp(cmd, "update") || !strcmp(cmd, "delete") || !strcmp(cmd, "getMore"))
        return cmd;
    return NULL;
}

static void on_request(void *arg, const struct mongo_msg *m)
{
    struct session *s = arg;
    const struct mongo_proxy_stats *st = &s->conf->stats;
    const char *md = NULL;

    memset(s->tag, 0, sizeof(s->tag));
    switch (m->opcode) {
    case MONGO_OP_QUERY:
        herald_stat_inc(st->op_query);
        if (m->flags & MONGO_QF_TAILABLE) herald_stat_inc(st->op_query_tailable_cursor);
        if (m->flags & MONGO_QF_NO_CURSOR_TIMEOUT) herald_stat_inc(st->op_query_no_cursor_timeout);
        if (m->flags & MONGO_QF_AWAIT_DATA) herald_stat_inc(st->op_query_await_data);
        if (m->flags & MONGO_QF_EXHAUST) herald_stat_inc(st->op_query_exhaust);
        if (m->command[0]) {
            command_stats(s, m->command);
            md = metadata_op(m->command);
        } else {
            if (!m->max_time) herald_stat_inc(st->op_query_no_max_time);
            if (m->query_type == MONGO_Q_SCATTER_GET) herald_stat_inc(st->op_query_scatter_get);
            else if (m->query_type == MONGO_Q_MULTI_GET) herald_stat_inc(st->op_query_multi_get);
            collection_stats(s, m);
            md = "query";
        }
        request_started(s);
        track_request(s, m);
        maybe_delay(s);
        break;
    case MONGO_OP_MSG:
        herald_stat_inc(st->op_msg);
        command_stats(s, m->command);
        if (!strcmp(m->command, "find"))
            collection_stats(s, m);
        md = metadata_op(m->command);
        if (!(m->flags & MONGO_MF_MORE_TO_COME)) {
            request_started(s);
            track_request(s, m);
        }
        maybe_delay(s);
        break;
    case MONGO_OP_GET_MORE:
        herald_stat_inc(st->op_get_more);
        request_started(s);
        maybe_delay(s);
        md = "get_more";
        break;
    case MONGO_OP_INSERT:
        herald_stat_inc(st->op_insert);
        maybe_delay(s);
        md = "insert";
        break;
    case MONGO_OP_KILL_CURSORS:
        herald_stat_inc(st->op_kill_cursors);
        maybe_delay(s);
        break;
    case MONGO_OP_UPDATE:
        herald_stat_inc(st->op_update);
        md = "update";
        break;
    case MONGO_OP_DELETE:
        herald_stat_inc(st->op_delete);
        md = "delete";
        break;
    case MONGO_OP_COMPRESSED:
        /* the inner message stays compressed: counted, passed as it is */
        herald_stat_inc(st->op_compressed);
        if (m->orig_opcode == MONGO_OP_QUERY || m->orig_opcode == MONGO_OP_GET_MORE ||
            (m->orig_opcode == MONGO_OP_MSG))
            request_started(s);
        maybe_delay(s);
        break;
    default:
        break;
    }
    if (md && s->conf->emit_dynamic_metadata)
        add_metadata(s, m, md);
    if (s->conf->log_fd >= 0)
        access_log(s, m);
}

static void check_drain(struct session *s)
{
    if (s->draining && s->active == 0 && !s->closed) {
        s->closed = true;
        herald_stat_inc(s->conf->stats.cx_drain_close);
        herald_conn_close(s->c, HERALD_CLOSE_FLUSH);
    }
}

static void on_reply(void *arg, const struct mongo_msg *m)
{
    struct session *s = arg;
    const struct mongo_proxy_stats *st = &s->conf->stats;

    switch (m->opcode) {
    case MONGO_OP_REPLY:
        herald_stat_inc(st->op_reply);
        if (m->flags & MONGO_RF_CURSOR_NOT_FOUND) herald_stat_inc(st->op_reply_cursor_not_found);
        if (m->flags & MONGO_RF_QUERY_FAILURE) herald_stat_inc(st->op_reply_query_failure);
        if (m->cursor_id != 0) herald_stat_inc(st->op_reply_valid_cursor);
        break;
    case MONGO_OP_MSG:
        herald_stat_inc(st->op_msg_reply);
        if (m->ok == 0) {
            herald_stat_inc(st->op_reply_query_failure);
            if (m->error_code == 43) /* CursorNotFound */
                herald_stat_inc(st->op_reply_cursor_not_found);
        }
        if (m->cursor_id > 0)
            herald_stat_inc(st->op_reply_valid_cursor);
        break;
    case MONGO_OP_COMPRESSED:
        herald_stat_inc(st->op_compressed);
        break;
    default:
        break;
    }
    charge_reply(s, m);
    if (s->active > 0 && !(m->opcode == MONGO_OP_MSG && (m->flags & MONGO_MF_MORE_TO_COME))) {
        s->active--;
        herald_gauge_add(st->op_query_active, -1);
    }
    if (s->conf->log_fd >= 0)
        access_log(s, m);
    check_drain(s);
}

static void on_decode_error(void *arg, const char *why)
{
    struct session *s = arg;
    herald_stat_inc(s->conf->stats.decoding_error);
    HERALD_LOGF(HERALD_LOG_DEBUG, "mongo_proxy", "[C%llu] decoding error: %s",
                (unsigned long long)herald_conn_id(s->c), why);
}

static void feed(struct mongo_decoder *d, struct herald_buf *b, size_t offset)
{
    struct iovec vec[64];
    uint8_t chunk[4096];
    size_t len = herald_buf_len(b), done = 0, start = offset;

    if (d->dead || offset >= len)
        return;
    int need = herald_buf_peek(b, len, vec, 64);
    for (int i = 0; i < need && i < 64 && !d->dead; i++) {
        size_t l = vec[i].iov_len;
        done += l;
        if (offset >= l) {
            offset -= l;
            continue;
        }
        mongo_decoder_feed(d, (const uint8_t *)vec[i].iov_base + offset, l - offset);
        offset = 0;
    }
    /* more segments than peek returns: copy the rest out in pieces */
    if (done < start)
        done = start;
    while (done < len && !d->dead) {
        size_t k = herald_buf_copyout(b, done, chunk, sizeof(chunk));
        if (!k)
            break;
        mongo_decoder_feed(d, chunk, k);
        done += k;
    }
}

static void on_delay_done(struct herald_timer *t, void *arg)
{
    struct session *s = arg;

    s->delaying = false;
    s->held = 0;
    /* resume first: continuing while paused would leave the held bytes to a
     * later dispatch from the first filter, and we would decode them twice */
    herald_conn_resume_reading(s->c, HERALD_PAUSE_USER);
    herald_conn_continue_reading(s->c);
}

static enum herald_status on_read(void *arg, struct herald_buf *data, bool end_stream)
{
    struct session *s = arg;

    feed(&s->down, data, s->held);
    if (s->delaying) {
        s->held = herald_buf_len(data);
        return HERALD_STOP;
    }
    if (s->delay_wanted && !end_stream && !s->closed) {
        s->delay_wanted = false;
        if (!s->delay_timer && !(s->delay_timer = herald_timer_new(on_delay_done, s)))
            return HERALD_CONTINUE;
        herald_stat_inc(s->conf->stats.delays_injected);
        s->delaying = true;
        s->held = herald_buf_len(data);
        herald_conn_pause_reading(s->c, HERALD_PAUSE_USER);
        herald_timer_arm(s->delay_timer, s->conf->delay_ms);
        return HERALD_STOP;
    }
    s->delay_wanted = false;
    return HERALD_CONTINUE;
}

static enum herald_status on_write(void *arg, struct herald_buf *data, bool end_stream)
{
    struct session *s = arg;
    feed(&s->up, data, 0);
    return HERALD_CONTINUE;
}

static void on_event(void *arg, enum herald_conn_event ev)
{
    struct session *s = arg;

    switch (ev) {
    case HERALD_EV_REMOTE_CLOSE:
    case HERALD_EV_LOCAL_CLOSE:
        if (s->active > 0 && !s->closed)
            herald_stat_inc(ev == HERALD_EV_REMOTE_CLOSE ? s->conf->stats.cx_destroy_remote_with_active_rq
                                                         : s->conf->stats.cx_destroy_local_with_active_rq);
        s->closed = true;
        break;
    case HERALD_EV_DRAIN:
        s->draining = true;
        check_drain(s);
        break;
    default:
        break;
    }
}

static void *session_new(void *conf, void *wstate, struct herald_conn *c)
{
    struct session *s = calloc(1, sizeof(*s));
    struct timespec ts;

    if (!s)
        return NULL;
    s->conf = conf;
    s->c = c;
    mongo_decoder_init(&s->down, on_request, on_decode_error, s);
    mongo_decoder_init(&s->up, on_reply, on_decode_error, s);
    mongo_pending_init(&s->pending, MONGO_PENDING_MAX);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    s->rnd = (herald_conn_id(c) + 1) * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_nsec;
    if (!s->rnd)
        s->rnd = 1;
    return s;
}

static void session_destroy(void *arg)
{
    struct session *s = arg;

    if (s->active > 0)
        herald_gauge_add(s->conf->stats.op_query_active, -s->active);
    if (s->delay_timer)
        herald_timer_free(s->delay_timer);
    mongo_decoder_free(&s->down);
    mongo_decoder_free(&s->up);
    mongo_pending_free(&s->pending);
    free(s);
}

const struct herald_network_filter_ops mongo_proxy_ops = {
    .size = sizeof(struct herald_network_filter_ops),
    .config_create = mongo_proxy_config_create,
    .config_destroy = mongo_proxy_config_destroy,
    .session_new = session_new,
    .session_destroy = session_destroy,
    .on_read = on_read,
    .on_write = on_write,
    .on_event = on_event,
};
