/* tcp_proxy: one session per downstream connection. It picks a cluster and a
 * host, connects (retrying on other hosts up to max_connect_attempts), then
 * moves buffers both ways without copying, forwards half-closes, stops
 * reading a side whose peer's output is over its high watermark, and writes
 * the access logs when the connection is gone. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tcp_proxy.h"

/* RESPONSE_FLAGS, in Envoy's bit order (that is the order it prints them in). */
#define RF_UH  0x01u /* no healthy upstream */
#define RF_UF  0x02u /* upstream connection failure */
#define RF_UO  0x04u /* upstream overflow (circuit breaker) */
#define RF_URX 0x08u /* max_connect_attempts reached */
#define RF_DT  0x10u /* max_downstream_connection_duration */
#define RF_NC  0x20u /* cluster not found (Envoy's tcp_proxy says NC, not NR, since 1.22) */

enum state { ST_CONNECTING = 0, ST_OPEN, ST_CLOSING };

struct session {
    struct tcp_proxy_conf *conf;
    struct herald_conn *c;
    struct herald_upstream *up;
    struct tcp_tunnel *tun;             /* tunneling_config: the host is behind an HTTP request instead */
    struct herald_cluster *cluster;     /* valid within the callback that set it */
    const struct tcp_proxy_cluster *tc; /* the picked cluster (config lifetime) */
    enum state state;
    uint32_t attempts;
    unsigned flags;                     /* RF_* */
    bool down_ended, up_ended;          /* end_stream seen from downstream / upstream */
    bool down_paused_peer, up_paused_peer;
    bool in_connect, connect_failed_sync;
    struct herald_buf *pending;         /* downstream bytes read before the upstream connected */
    bool pending_end;
    struct herald_timer *idle, *max_duration;
    uint64_t last_activity;             /* herald_now_ms() */
    uint64_t rx_bytes, tx_bytes;        /* BYTES_RECEIVED / BYTES_SENT */
    uint64_t up_tx_bytes;               /* handed to the upstream (UPSTREAM_WIRE_BYTES_SENT) */
    bool spliced;                       /* the core forwards both ways (herald_conn_splice) */
    uint64_t spliced_seen;              /* bytes seen at the last idle check while spliced */
    int64_t rx_buffered, tx_buffered;   /* our share of the *_bytes_buffered gauges */
    /* for the access log (the connection may be gone when it is written) */
    uint64_t conn_id, start_wall_ms, start_mono_ms;
    const char *failure_reason;
    const char *termination;
    struct log_strings *ls;             /* only with access logs or tunneling_config */
};

/* What the access log needs after the connection is gone: 512 bytes that
 * connections without access logs do not carry. */
struct log_strings {
    char upstream_host[64];
    char upstream_hostname[128];        /* the host's DNS name, "" when it has none */
    char upstream_local[64];
    uint64_t upstream_id;               /* 0: no upstream connection yet */
    char remote[64], local[64];
    char direct_remote[64], direct_local[64];  /* the socket's own, when a PROXY header said others */
    char sni[256];
};

static const struct herald_upstream_cbs upstream_cbs;
static const struct tcp_tunnel_cbs tunnel_cbs;
static const char *log_field(void *ctx, const char *op, const char *arg, char *scratch, size_t len);

/* ---------------------------------------------------------------- helpers */

static uint64_t next_random(void)
{
    /* per worker thread: no shared state on the data path */
    static __thread uint64_t s;
    if (!s) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&s;
        if (!s)
            s = 0x9e3779b97f4a7c15ull;
    }
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

static const struct tcp_proxy_cluster *pick_cluster(const struct tcp_proxy_conf *conf)
{
    if (conf->nclusters == 1)
        return &conf->clusters[0];
    uint64_t r = next_random() % conf->total_weight;
    for (size_t i = 0; i < conf->nclusters; i++) {
        if (r < conf->clusters[i].weight)
            return &conf->clusters[i];
        r -= conf->clusters[i].weight;
    }
    return &conf->clusters[conf->nclusters - 1];
}

static uint64_t source_ip_hash(struct session *s)
{
    socklen_t len = 0;
    const struct sockaddr *sa = herald_conn_remote_addr(s->c, &len);
    const uint8_t *p = NULL;
    size_t n = 0;

    if (sa && sa->sa_family == AF_INET) {
        p = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
        n = 4;
    } else if (sa && sa->sa_family == AF_INET6) {
        p = (const uint8_t *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
        n = 16;
    }
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return n ? h : 0;
}

static void copy_str(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src ? src : "");
}

static void touch(struct session *s)
{
    s->last_activity = herald_now_ms();
}

static void set_rx_buffered(struct session *s, int64_t v)
{
    if (v != s->rx_buffered) {
        herald_gauge_add(s->conf->stats.downstream_cx_rx_bytes_buffered, v - s->rx_buffered);
        s->rx_buffered = v;
    }
}

static void update_tx_buffered(struct session *s)
{
    int64_t v = s->c && s->state != ST_CLOSING ? (int64_t)herald_conn_output_len(s->c) : 0;
    if (v != s->tx_buffered) {
        herald_gauge_add(s->conf->stats.downstream_cx_tx_bytes_buffered, v - s->tx_buffered);
        s->tx_buffered = v;
    }
}

static void close_upstream(struct session *s, enum herald_close_mode mode)
{
    struct herald_upstream *u = s->up;

    if (s->tun) {
        struct tcp_tunnel *t = s->tun;
        s->tun = NULL;
        if (mode == HERALD_CLOSE_FLUSH && !s->down_ended) {
            /* what the client sent still goes, then the end (the request's end) */
            struct herald_buf *none = herald_buf_new();
            tcp_tunnel_write(t, none, true);
            herald_buf_free(none);
        }
        tcp_tunnel_free(t);
    }

    if (!u)
        return;
    s->up = NULL;
    /* the core flushes the rest on its own: Envoy's "upstream flush" */
    if (mode == HERALD_CLOSE_FLUSH && herald_upstream_output_len(u) > 0)
        herald_stat_inc(s->conf->stats.upstream_flush_total);
    herald_upstream_close(u, mode);
}

static void upstream_write(struct session *s, struct herald_buf *data, bool end_stream)
{
    if (s->tun)
        tcp_tunnel_write(s->tun, data, end_stream);
    else
        herald_upstream_write(s->up, data, end_stream);
}

static void upstream_pause(struct session *s, bool pause)
{
    if (s->tun)
        tcp_tunnel_pause_reading(s->tun, pause);
    else if (pause)
        herald_upstream_pause_reading(s->up, HERALD_PAUSE_PEER);
    else
        herald_upstream_resume_reading(s->up, HERALD_PAUSE_PEER);
}

/* Closes both sides. The downstream close comes last: after it the session
 * may be gone. */
static void finish(struct session *s, enum herald_close_mode down_mode, enum herald_close_mode up_mode)
{
    if (s->state == ST_CLOSING)
        return;
    s->state = ST_CLOSING;
    close_upstream(s, up_mode);
    if (s->idle)
        herald_timer_cancel(s->idle);
    if (s->max_duration)
        herald_timer_cancel(s->max_duration);
    herald_conn_close(s->c, down_mode);
}

static void maybe_done(struct session *s)
{
    /* both directions ended: flush what is left and close the pair */
    if (s->down_ended && s->up_ended)
        finish(s, HERALD_CLOSE_FLUSH, HERALD_CLOSE_FLUSH);
}

/* ---------------------------------------------------------------- timers */

static void on_idle(struct herald_timer *t, void *arg)
{
    struct session *s = arg;
    uint64_t now = herald_now_ms(), idle = now - s->last_activity;

    if (s->state == ST_CLOSING)
        return;
    if (s->spliced) {
        /* the core moves the bytes: activity shows as a change in its counts */
        uint64_t rx, tx;
        herald_conn_bytes(s->c, &rx, &tx);
        if (rx + tx != s->spliced_seen) {
            s->spliced_seen = rx + tx;
            s->last_activity = now;
            idle = 0;
        }
    }
    if (idle < s->conf->idle_timeout_ms) {
        /* activity moved the deadline: re-arming on every read would cost more */
        herald_timer_arm(t, s->conf->idle_timeout_ms - idle);
        return;
    }
    herald_stat_inc(s->conf->stats.idle_timeout);
    s->termination = "idle_timeout";
    HERALD_LOGF(HERALD_LOG_DEBUG, "tcp_proxy", "[C%llu] idle timeout", (unsigned long long)s->conn_id);
    /* a FIN, as Envoy's NoFlush close: nothing is waiting to be written anyway */
    finish(s, HERALD_CLOSE_FLUSH, HERALD_CLOSE_FLUSH);
}

static void on_max_duration(struct herald_timer *t, void *arg)
{
    struct session *s = arg;

    if (s->state == ST_CLOSING)
        return;
    herald_stat_inc(s->conf->stats.max_downstream_connection_duration);
    s->flags |= RF_DT;
    s->termination = "max_downstream_connection_duration";
    finish(s, HERALD_CLOSE_RESET, HERALD_CLOSE_RESET);
}

/* ---------------------------------------------------------------- upstream */

/* 0: a connect is under way; -1: gave up (the caller closes the downstream). */
static int connect_next(struct session *s)
{
    while (s->attempts < s->conf->max_connect_attempts) {
        if (!s->tc)
            s->tc = pick_cluster(s->conf);
        s->cluster = herald_cluster_get(s->tc->name);
        if (!s->cluster) {
            herald_stat_inc(s->conf->stats.downstream_cx_no_route);
            s->flags |= RF_NC;
            return -1;
        }
        struct herald_host *h = herald_cluster_choose_host(s->cluster,
                                                           s->conf->hash_source_ip ? source_ip_hash(s) : 0);
        if (!h) {
            s->flags |= RF_UH; /* the core counted upstream_cx_none_healthy */
            return -1;
        }
        if (s->ls) {
            const char *hn = herald_host_hostname(h);
            copy_str(s->ls->upstream_host, sizeof(s->ls->upstream_host), herald_host_address(h));
            copy_str(s->ls->upstream_hostname, sizeof(s->ls->upstream_hostname), hn ? hn : "");
        }
        s->attempts++;

        if (s->conf->tunneling) {
            s->tun = tcp_tunnel_start(s->conf->tunneling, s->cluster, h, s->c, log_field, s, &tunnel_cbs, s);
            if (s->tun)
                return 0;
            s->flags |= RF_UF;
            s->failure_reason = "connection_failure";
            continue;
        }
        enum herald_upstream_error why = HERALD_UPSTREAM_OK;
        s->in_connect = true;
        s->connect_failed_sync = false;
        struct herald_upstream *u = herald_upstream_connect_from(s->cluster, h, &upstream_cbs, s, &why, s->c);
        s->in_connect = false;
        if (u && !s->connect_failed_sync) {
            s->up = u;
            return 0;
        }
        if (why == HERALD_UPSTREAM_OVERFLOW) {
            s->flags |= RF_UO;
            s->failure_reason = "overflow";
            return -1;
        }
        /* could not even start (or failed at once): counts as a failed attempt */
        s->flags |= RF_UF;
        s->failure_reason = "connection_failure";
    }
    s->flags |= RF_URX;
    return -1;
}

static void on_connected(struct session *s)
{
    s->state = ST_OPEN;
    if (s->ls && s->up) {
        copy_str(s->ls->upstream_local, sizeof(s->ls->upstream_local), herald_upstream_local_str(s->up));
        s->ls->upstream_id = herald_upstream_id(s->up);
    }
    touch(s);
    if (s->conf->idle_timeout_ms) {
        s->idle = herald_timer_new(on_idle, s);
        if (s->idle)
            herald_timer_arm(s->idle, s->conf->idle_timeout_ms);
    }
    /* Nothing to transform and nothing buffered: let the core forward in the
     * kernel (splice), which costs a fraction of the CPU of copying. */
    if (s->up && !s->pending && !s->conf->no_splice && herald_conn_splice(s->c, s->up) == 0) {
        s->up = NULL; /* the core's now */
        s->spliced = true;
        return;
    }
    if (s->pending) {
        s->up_tx_bytes += herald_buf_len(s->pending);
        upstream_write(s, s->pending, s->pending_end);
        set_rx_buffered(s, 0);
        if (s->pending_end)
            s->down_ended = true;
        herald_buf_free(s->pending);
        s->pending = NULL;
    }
    if (s->state == ST_OPEN && !s->down_ended)
        herald_conn_resume_reading(s->c, HERALD_PAUSE_FILTER);
}

static void up_on_data(void *arg, struct herald_buf *data, bool end_stream)
{
    struct session *s = arg;
    size_t n = herald_buf_len(data);

    if (s->state == ST_CLOSING) {
        herald_buf_drain(data, n);
        return;
    }
    touch(s);
    s->tx_bytes += n;
    herald_stat_add(s->conf->stats.downstream_cx_tx_bytes_total, n);
    herald_conn_write(s->c, data, end_stream);
    update_tx_buffered(s);
    if (end_stream) {
        s->up_ended = true;
        maybe_done(s);
    }
}

static void up_on_event(void *arg, enum herald_conn_event ev)
{
    struct session *s = arg;

    switch (ev) {
    case HERALD_EV_CONNECTED:
        if (s->state == ST_CONNECTING && s->up)
            on_connected(s);
        break;
    case HERALD_EV_CONNECT_FAILED:
    case HERALD_EV_CONNECT_TIMEOUT:
        s->up = NULL; /* gone */
        s->flags |= RF_UF;
        s->failure_reason = ev == HERALD_EV_CONNECT_TIMEOUT ? "connection_timeout" : "connection_failure";
        if (s->in_connect) {
            s->connect_failed_sync = true;
            break;
        }
        if (s->state != ST_CONNECTING)
            break;
        if (connect_next(s) < 0)
            finish(s, HERALD_CLOSE_FLUSH, HERALD_CLOSE_RESET); /* a FIN to the client, as Envoy */
        break;
    case HERALD_EV_REMOTE_CLOSE:
    case HERALD_EV_LOCAL_CLOSE:
        s->up = NULL; /* gone */
        if (s->state == ST_CONNECTING) {
            s->flags |= RF_UF;
            finish(s, HERALD_CLOSE_FLUSH, HERALD_CLOSE_RESET);
        } else {
            /* as Envoy: what the upstream sent before it went still reaches the client */
            finish(s, HERALD_CLOSE_FLUSH, HERALD_CLOSE_FLUSH);
        }
        break;
    case HERALD_EV_ABOVE_WRITE_HIGH:
        if (!s->down_paused_peer && s->state != ST_CLOSING) {
            s->down_paused_peer = true;
            herald_conn_pause_reading(s->c, HERALD_PAUSE_PEER);
            herald_stat_inc(s->conf->stats.downstream_flow_control_paused_reading_total);
        }
        break;
    case HERALD_EV_BELOW_WRITE_LOW:
        if (s->down_paused_peer && s->state != ST_CLOSING) {
            s->down_paused_peer = false;
            herald_conn_resume_reading(s->c, HERALD_PAUSE_PEER);
            herald_stat_inc(s->conf->stats.downstream_flow_control_resumed_reading_total);
        }
        break;
    default: /* HERALD_EV_DRAIN: the connection finishes its work */
        break;
    }
}

static const struct herald_upstream_cbs upstream_cbs = {
    .size = sizeof(struct herald_upstream_cbs),
    .on_data = up_on_data,
    .on_event = up_on_event,
};

/* ---------------------------------------------------------------- tunneling_config */

static void tun_open(void *arg)
{
    struct session *s = arg;
    if (s->state == ST_CONNECTING)
        on_connected(s);
}

static void tun_failed(void *arg, bool before_open, enum herald_upstream_reset why, int status)
{
    struct session *s = arg;
    struct tcp_tunnel *t = s->tun;
    s->tun = NULL;
    if (t)
        tcp_tunnel_free(t);
    if (s->state == ST_CLOSING)
        return;
    if (!before_open) {
        /* the host's side went away mid-tunnel (Envoy: a reset) */
        finish(s, HERALD_CLOSE_FLUSH, HERALD_CLOSE_RESET);
        return;
    }
    HERALD_LOGF(HERALD_LOG_DEBUG, "tcp_proxy", "[C%llu] tunnel attempt failed (%s %d)",
                (unsigned long long)s->conn_id, status ? "status" : "reset", status ? status : (int)why);
    if (why == HERALD_UPSTREAM_RESET_OVERFLOW) {
        s->flags |= RF_UO;
        s->failure_reason = "overflow";
        finish(s, HERALD_CLOSE_FLUSH, HERALD_CLOSE_RESET);
        return;
    }
    s->flags |= RF_UF;
    s->failure_reason = "connection_failure";
    if (s->state == ST_CONNECTING && connect_next(s) < 0)
        finish(s, HERALD_CLOSE_FLUSH, HERALD_CLOSE_RESET);
}

static void tun_watermark(void *arg, bool above)
{
    struct session *s = arg;
    if (s->state == ST_CLOSING || s->down_paused_peer == above)
        return;
    s->down_paused_peer = above;
    if (above) {
        herald_conn_pause_reading(s->c, HERALD_PAUSE_PEER);
        herald_stat_inc(s->conf->stats.downstream_flow_control_paused_reading_total);
    } else {
        herald_conn_resume_reading(s->c, HERALD_PAUSE_PEER);
        herald_stat_inc(s->conf->stats.downstream_flow_control_resumed_reading_total);
    }
}

static const struct tcp_tunnel_cbs tunnel_cbs = {
    .on_open = tun_open,
    .on_data = up_on_data,
    .on_failed = tun_failed,
    .on_watermark = tun_watermark,
};

/* ---------------------------------------------------------------- downstream */

static void *session_new(void *conf, void *wstate, struct herald_conn *c)
{
    struct tcp_proxy_conf *tc = conf;
    struct session *s = calloc(1, sizeof(*s));

    if (!s)
        return NULL;
    s->conf = tc;
    s->c = c;
    s->conn_id = herald_conn_id(c);
    s->start_wall_ms = herald_conn_start_ms(c);
    s->start_mono_ms = herald_now_ms();
    if (tc->nlogs || tc->tunneling) {   /* tunneling: its hostname and headers may name them too */
        s->ls = calloc(1, sizeof(*s->ls));
        if (!s->ls) {
            free(s);
            return NULL;
        }
        copy_str(s->ls->remote, sizeof(s->ls->remote), herald_conn_remote_str(c));
        copy_str(s->ls->local, sizeof(s->ls->local), herald_conn_local_str(c));
        copy_str(s->ls->direct_remote, sizeof(s->ls->direct_remote), herald_conn_direct_remote_str(c));
        copy_str(s->ls->direct_local, sizeof(s->ls->direct_local), herald_conn_direct_local_str(c));
        copy_str(s->ls->sni, sizeof(s->ls->sni), herald_conn_server_name(c));
    }
    return s;
}

static enum herald_status on_new_connection(void *arg)
{
    struct session *s = arg;

    herald_stat_inc(s->conf->stats.downstream_cx_total);
    if (s->conf->max_duration_ms) {
        s->max_duration = herald_timer_new(on_max_duration, s);
        if (s->max_duration)
            herald_timer_arm(s->max_duration, s->conf->max_duration_ms);
    }
    /* nothing moves until the upstream is there */
    herald_conn_pause_reading(s->c, HERALD_PAUSE_FILTER);
    if (connect_next(s) < 0)
        finish(s, HERALD_CLOSE_FLUSH, HERALD_CLOSE_RESET); /* a FIN to the client, as Envoy */
    return HERALD_STOP;
}

static enum herald_status on_read(void *arg, struct herald_buf *data, bool end_stream)
{
    struct session *s = arg;
    size_t n = herald_buf_len(data);

    if (s->state == ST_CLOSING) {
        herald_buf_drain(data, n);
        return HERALD_STOP;
    }
    s->rx_bytes += n;
    herald_stat_add(s->conf->stats.downstream_cx_rx_bytes_total, n);
    if (s->state == ST_CONNECTING) {
        /* keep it (zero copy) until the upstream is connected */
        if (!s->pending && !(s->pending = herald_buf_new()))
            return HERALD_CLOSE;
        herald_buf_move(s->pending, data, SIZE_MAX);
        set_rx_buffered(s, (int64_t)herald_buf_len(s->pending));
        if (end_stream)
            s->pending_end = true;
        return HERALD_STOP;
    }
    /* CONTINUE from here on: we are the last filter, and the core then knows
     * the end of the stream was taken */
    if (s->down_ended || (!s->up && !s->tun)) {
        herald_buf_drain(data, n);
        return HERALD_CONTINUE;
    }
    touch(s);
    s->up_tx_bytes += n;
    upstream_write(s, data, end_stream);
    if (end_stream) {
        s->down_ended = true;
        maybe_done(s);
    }
    return HERALD_CONTINUE;
}

/* Spliced bytes never passed through the filter: take the core's counts. */
static void account_spliced(struct session *s)
{
    uint64_t rx, tx;
    herald_conn_bytes(s->c, &rx, &tx);
    if (rx > s->rx_bytes) {
        herald_stat_add(s->conf->stats.downstream_cx_rx_bytes_total, rx - s->rx_bytes);
        s->up_tx_bytes += rx - s->rx_bytes;   /* spliced: every byte read went upstream */
    }
    if (tx > s->tx_bytes)
        herald_stat_add(s->conf->stats.downstream_cx_tx_bytes_total, tx - s->tx_bytes);
    s->rx_bytes = rx;
    s->tx_bytes = tx;
    s->spliced = false;
}

static void on_event(void *arg, enum herald_conn_event ev)
{
    struct session *s = arg;

    if (s->spliced && (ev == HERALD_EV_REMOTE_CLOSE || ev == HERALD_EV_LOCAL_CLOSE))
        account_spliced(s);
    switch (ev) {
    case HERALD_EV_REMOTE_CLOSE:
        /* as Envoy: the client is gone, but what it sent still goes upstream */
        s->state = ST_CLOSING;
        close_upstream(s, HERALD_CLOSE_FLUSH);
        break;
    case HERALD_EV_LOCAL_CLOSE:
        s->state = ST_CLOSING;
        close_upstream(s, HERALD_CLOSE_RESET);
        break;
    case HERALD_EV_ABOVE_WRITE_HIGH:
        update_tx_buffered(s);
        if ((s->up || s->tun) && !s->up_paused_peer) {
            s->up_paused_peer = true;
            upstream_pause(s, true);
        }
        break;
    case HERALD_EV_BELOW_WRITE_LOW:
        update_tx_buffered(s);
        if ((s->up || s->tun) && s->up_paused_peer) {
            s->up_paused_peer = false;
            upstream_pause(s, false);
        }
        break;
    default:
        break;
    }
}

/* ---------------------------------------------------------------- access log */

static const char *without_port(const char *addr, char *out, size_t len)
{
    if (!*addr)
        return NULL;
    if (addr[0] == '[') {
        const char *e = strchr(addr, ']');
        if (!e)
            return addr;
        snprintf(out, len, "%.*s", (int)(e - addr - 1), addr + 1);
        return out;
    }
    const char *colon = strrchr(addr, ':');
    if (!colon || strchr(addr, ':') != colon) /* none, or a bare IPv6 address */
        return addr;
    snprintf(out, len, "%.*s", (int)(colon - addr), addr);
    return out;
}

static const char *port_of(const char *addr, char *out, size_t len)
{
    const char *colon = strrchr(addr, ':');
    if (!*addr || !colon || (addr[0] != '[' && strchr(addr, ':') != colon))
        return NULL;
    snprintf(out, len, "%s", colon + 1);
    return out;
}

static const char *response_flags(unsigned f, char *out, size_t len)
{
    static const struct { unsigned bit; const char *code; } codes[] = {
        {RF_UH, "UH"}, {RF_UF, "UF"}, {RF_UO, "UO"}, {RF_URX, "URX"}, {RF_DT, "DT"}, {RF_NC, "NC"},
    };
    size_t o = 0;

    if (!f)
        return NULL;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if ((f & codes[i].bit) && o + 5 < len)
            o += (size_t)snprintf(out + o, len - o, "%s%s", o ? "," : "", codes[i].code);
    return out;
}

static const char *empty_null(const char *s)
{
    return s && *s ? s : NULL;
}

static const char *u64(char *scratch, size_t len, uint64_t v)
{
    snprintf(scratch, len, "%llu", (unsigned long long)v);
    return scratch;
}

static const char *log_field(void *ctx, const char *op, const char *arg, char *scratch, size_t len)
{
    struct session *s = ctx;

    switch (op[0]) {
    case 'A':
        if (!strcmp(op, "ACCESS_LOG_TYPE"))
            return "TcpConnectionEnd";   /* the one tcp_proxy log herald writes */
        break;
    case 'B':
        if (!strcmp(op, "BYTES_RECEIVED"))
            return u64(scratch, len, s->rx_bytes);
        if (!strcmp(op, "BYTES_SENT"))
            return u64(scratch, len, s->tx_bytes);
        break;
    case 'C':
        if (!strcmp(op, "CONNECTION_ID"))
            return u64(scratch, len, s->conn_id);
        if (!strcmp(op, "CONNECTION_TERMINATION_DETAILS"))
            return s->termination;
        if (!strcmp(op, "CLUSTER_METADATA"))
            return s->tc ? herald_cluster_metadata(s->tc->name, arg, scratch, len) : NULL;
        break;
    case 'D':
        if (!strcmp(op, "DURATION"))
            return u64(scratch, len, herald_now_ms() - s->start_mono_ms);
        if (!strncmp(op, "DOWNSTREAM_", 11) && (!strncmp(op + 11, "REMOTE_", 7) || !strncmp(op + 11, "LOCAL_", 6) ||
                                                 !strncmp(op + 11, "DIRECT_", 7))) {
            /* DOWNSTREAM_[DIRECT_]{REMOTE,LOCAL}_{ADDRESS,ADDRESS_WITHOUT_PORT,PORT}; DIRECT_: the
             * socket's own, the others a PROXY protocol header's when there was one */
            bool direct = !strncmp(op + 11, "DIRECT_", 7);
            const char *rest = op + 11 + (direct ? 7 : 0);
            bool remote = !strncmp(rest, "REMOTE_", 7);
            if (!remote && strncmp(rest, "LOCAL_", 6) != 0)
                return NULL;
            const char *a = remote ? (direct ? s->ls->direct_remote : s->ls->remote)
                                   : (direct ? s->ls->direct_local : s->ls->local);
            rest += remote ? 7 : 6;
            if (!strcmp(rest, "ADDRESS"))
                return empty_null(a);
            if (!strcmp(rest, "ADDRESS_WITHOUT_PORT"))
                return without_port(a, scratch, len);
            if (!strcmp(rest, "PORT"))
                return port_of(a, scratch, len);
        }
        if (!strcmp(op, "DYNAMIC_METADATA") && arg && s->c) {
            char ns[128];
            const char *colon = strchr(arg, ':');
            if (!colon || (size_t)(colon - arg) >= sizeof(ns))
                return NULL;
            snprintf(ns, sizeof(ns), "%.*s", (int)(colon - arg), arg);
            return herald_conn_metadata_get(s->c, ns, colon + 1);
        }
        /* no framing on a TCP stream: its wire bytes are the bytes */
        if (!strcmp(op, "DOWNSTREAM_WIRE_BYTES_RECEIVED"))
            return u64(scratch, len, s->rx_bytes);
        if (!strcmp(op, "DOWNSTREAM_WIRE_BYTES_SENT"))
            return u64(scratch, len, s->tx_bytes);
        return herald_conn_tls_log_field(s->c, op, arg, scratch, len);   /* TLS and certificates */
    case 'F':
        if (!strcmp(op, "FILTER_CHAIN_NAME"))
            return s->c ? herald_conn_filter_chain_name(s->c) : NULL;
        break;
    case 'H':
        if (!strcmp(op, "HOSTNAME")) {
            if (gethostname(scratch, len) == 0) {
                scratch[len - 1] = '\0';
                return scratch;
            }
            return NULL;
        }
        break;
    case 'R':
        if (!strcmp(op, "RESPONSE_CODE"))
            return "0"; /* what Envoy logs for TCP */
        if (!strcmp(op, "RESPONSE_FLAGS"))
            return response_flags(s->flags, scratch, len);
        if (!strcmp(op, "REQUESTED_SERVER_NAME"))
            return empty_null(s->ls->sni);
        break;
    case 'S':
        if (!strcmp(op, "START_TIME"))
            return herald_access_log_format_time(s->start_wall_ms, arg, scratch, len);
        break;
    case 'U':
        if (!strcmp(op, "UPSTREAM_HOST") || !strcmp(op, "UPSTREAM_REMOTE_ADDRESS"))
            return empty_null(s->ls->upstream_host);
        if (!strcmp(op, "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT"))
            return without_port(s->ls->upstream_host, scratch, len);
        if (!strcmp(op, "UPSTREAM_REMOTE_PORT"))
            return port_of(s->ls->upstream_host, scratch, len);
        if (!strcmp(op, "UPSTREAM_CLUSTER") || !strcmp(op, "UPSTREAM_CLUSTER_RAW"))
            return s->tc ? s->tc->name : NULL;
        if (!strcmp(op, "UPSTREAM_LOCAL_ADDRESS"))
            return empty_null(s->ls->upstream_local);
        if (!strcmp(op, "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT"))
            return without_port(s->ls->upstream_local, scratch, len);
        if (!strcmp(op, "UPSTREAM_LOCAL_PORT"))
            return port_of(s->ls->upstream_local, scratch, len);
        if (!strcmp(op, "UPSTREAM_TRANSPORT_FAILURE_REASON"))
            return s->failure_reason;
        if (!strcmp(op, "UPSTREAM_CONNECTION_ID"))
            return s->ls->upstream_id ? u64(scratch, len, s->ls->upstream_id) : NULL;
        if (!strcmp(op, "UPSTREAM_HOST_NAME"))
            return s->ls->upstream_hostname[0] ? s->ls->upstream_hostname : empty_null(s->ls->upstream_host);
        if (!strcmp(op, "UPSTREAM_HOST_NAME_WITHOUT_PORT"))
            return s->ls->upstream_hostname[0] ? s->ls->upstream_hostname
                                               : without_port(s->ls->upstream_host, scratch, len);
        if (!strcmp(op, "UPSTREAM_WIRE_BYTES_SENT"))
            return u64(scratch, len, s->up_tx_bytes);
        if (!strcmp(op, "UPSTREAM_WIRE_BYTES_RECEIVED"))
            return u64(scratch, len, s->tx_bytes);   /* all of it went downstream */
        if (!strcmp(op, "UPSTREAM_REQUEST_ATTEMPT_COUNT"))
            return u64(scratch, len, s->attempts);
        if (!strcmp(op, "UPSTREAM_METADATA"))
            return s->tc ? herald_upstream_metadata(s->tc->name, empty_null(s->ls->upstream_host), arg, scratch, len)
                         : NULL;
        break;
    }
    /* PROTOCOL, REQ(...), RESP(...) and the other HTTP operators: "-" */
    return NULL;
}

static void session_destroy(void *arg)
{
    struct session *s = arg;

    close_upstream(s, HERALD_CLOSE_RESET);
    for (size_t i = 0; i < s->conf->nlogs; i++)
        herald_access_log_write(s->conf->logs[i], log_field, s);
    set_rx_buffered(s, 0);
    if (s->tx_buffered) {
        herald_gauge_add(s->conf->stats.downstream_cx_tx_bytes_buffered, -s->tx_buffered);
        s->tx_buffered = 0;
    }
    if (s->idle)
        herald_timer_free(s->idle);
    if (s->max_duration)
        herald_timer_free(s->max_duration);
    if (s->pending)
        herald_buf_free(s->pending);
    free(s->ls);
    free(s);
}

const struct herald_network_filter_ops tcp_proxy_ops = {
    .size = sizeof(struct herald_network_filter_ops),
    .config_create = tcp_proxy_config_create,
    .config_destroy = tcp_proxy_config_destroy,
    .session_new = session_new,
    .session_destroy = session_destroy,
    .on_new_connection = on_new_connection,
    .on_read = on_read,
    .on_event = on_event,
};
