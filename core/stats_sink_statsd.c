/* Envoy's statsd and DogStatsD sinks. Lines are Envoy's:
 *   <prefix>.<name>:<delta>|c       counters (their growth since the last flush)
 *   <prefix>.<name>:<value>|g       gauges
 *   <prefix>.<name>:<value>|ms      histogram values, as timers
 * DogStatsD writes the tag-extracted name and appends "|#tag:value,...".
 * Envoy sends each histogram value as it is recorded, from the worker; herald
 * keeps histograms as buckets in per-thread slots, so the flush sends, per
 * bucket that gained values, its value once with a statsd sample rate of
 * 1/count ("|@0.25" for four values): the same count reaches the server and
 * the flush stays small however busy the workers are.
 *
 * UDP: a connected, non-blocking datagram socket; lines are batched
 * (newline-separated) into datagrams of up to STATSD_UDP_DATAGRAM bytes, or
 * DogStatsD's max_bytes_per_datagram (unset: one metric per datagram, as
 * Envoy). A datagram the kernel will not take now is dropped, never waited for.
 * TCP (tcp_cluster_name): a bufferevent on the main loop to one of the
 * cluster's hosts, connected when a flush has something to send and none is
 * up; a closed or failed connection is dropped and the next flush connects
 * again. More than STATSD_TCP_MAX_BUFFERED unsent bytes close it and count
 * statsd.cx_overflow, as Envoy does. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"
#include "log.h"
#include "net/address.h"
#include "stats.h"
#include "stats_sink_statsd.h"
#include "upstream/cluster.h"

/* Fits a 1500-byte MTU after IPv6 and UDP headers with room to spare (the
 * size statsd's own documentation recommends for the Internet). */
#define STATSD_UDP_DATAGRAM 1432
/* Envoy's MAX_BUFFERED_STATS_BYTES. */
#define STATSD_TCP_MAX_BUFFERED (16u * 1024 * 1024)

struct statsd_sink {
    bool dog;
    char *prefix;
    /* UDP */
    int fd;                            /* -1: TCP */
    size_t datagram_max;               /* 0: one metric per datagram */
    struct evbuffer *datagram;         /* the lines not sent yet */
    /* TCP */
    char *cluster_name;
    struct event_base *base;
    struct bufferevent *bev;           /* NULL: not connected */
    struct evbuffer *tcp_out;          /* this flush's lines */
    size_t next_host;                  /* round robin over the cluster's hosts */
    struct herald_stat *cx_overflow;
    struct evbuffer *line;             /* scratch */
};

static int open_udp(struct statsd_sink *s, const struct herald_cfg *sa, struct cfg_diag *d)
{
    const char *ip = herald_cfg_str(herald_cfg_get(sa, "address"), "");
    uint16_t port = (uint16_t)herald_cfg_int(herald_cfg_get(sa, "port_value"), 0);
    struct sockaddr_storage ss;
    socklen_t len;
    if (addr_from_ip(ip, port, &ss, &len) < 0) {
        diag_error(d, herald_cfg_get(sa, "address"), "'%s' is not an IP address (a statsd server is named "
                   "by its IP)", ip);
        return -1;
    }
    if (!s->base)
        return 0;
    s->fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    /* connected: the kernel keeps the address, and send() needs no lookup */
    if (s->fd < 0 || connect(s->fd, (struct sockaddr *)&ss, len) < 0) {
        diag_error(d, sa, "cannot open a UDP socket to %s:%u: %s", ip, port, strerror(errno));
        return -1;
    }
    return 0;
}

struct statsd_sink *statsd_sink_new(const struct herald_cfg *tc, bool dog, const struct bootstrap *b,
                                    struct event_base *base, struct cfg_diag *d)
{
    struct statsd_sink *s = xcalloc(1, sizeof(*s));
    s->dog = dog;
    s->fd = -1;
    s->base = base;
    const char *prefix = herald_cfg_str(herald_cfg_get(tc, "prefix"), "");
    s->prefix = xstrdup(*prefix ? prefix : "envoy");
    s->line = evbuffer_new();
    const struct herald_cfg *cluster = herald_cfg_get(tc, "tcp_cluster_name");
    if (cluster) {
        const char *name = herald_cfg_str(cluster, "");
        const struct cluster_cfg *c = bootstrap_find_cluster(b, name);
        if (!c) {
            diag_error(d, cluster, "no cluster named '%s' in static_resources.clusters", name);
            statsd_sink_free(s);
            return NULL;
        }
        ((struct cluster_cfg *)c)->referenced = true; /* only read by the "never referenced" warning */
        s->cluster_name = xstrdup(name);
        s->tcp_out = evbuffer_new();
        s->cx_overflow = herald_counter("statsd", "cx_overflow");
        return s;
    }
    s->datagram_max = dog ? (size_t)herald_cfg_int(herald_cfg_get(tc, "max_bytes_per_datagram"), 0)
                          : STATSD_UDP_DATAGRAM;
    s->datagram = evbuffer_new();
    const struct herald_cfg *sa = herald_cfg_get(herald_cfg_get(tc, "address"), "socket_address");
    if (open_udp(s, sa, d) < 0) {
        statsd_sink_free(s);
        return NULL;
    }
    return s;
}

void statsd_sink_free(struct statsd_sink *s)
{
    if (!s)
        return;
    if (s->fd >= 0)
        close(s->fd);
    if (s->bev) {
        /* the last flush's lines: one try, the process is exiting */
        evbuffer_write(bufferevent_get_output(s->bev), bufferevent_getfd(s->bev));
        bufferevent_free(s->bev);
    }
    if (s->datagram)
        evbuffer_free(s->datagram);
    if (s->tcp_out)
        evbuffer_free(s->tcp_out);
    evbuffer_free(s->line);
    free(s->prefix);
    free(s->cluster_name);
    free(s);
}

/* ------------------------------------------------------------------ UDP */

static void udp_send(struct statsd_sink *s, struct evbuffer *b)
{
    size_t len = evbuffer_get_length(b);
    if (!len)
        return;
    /* best effort like any statsd client: a full socket buffer or an ICMP
     * error from an absent server loses this datagram, nothing more */
    if (send(s->fd, evbuffer_pullup(b, -1), len, MSG_DONTWAIT) < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
        errno != ECONNREFUSED)
        log_debug("stats", "statsd: send: %s", strerror(errno));
    evbuffer_drain(b, len);
}

/* Envoy's batching: a line that fills the datagram alone goes alone; one that
 * would overflow it sends what is there first. */
static void udp_add(struct statsd_sink *s, struct evbuffer *line)
{
    size_t len = evbuffer_get_length(line), have = evbuffer_get_length(s->datagram);
    if (len >= s->datagram_max) {
        udp_send(s, line);
        return;
    }
    if (have + len + 1 > s->datagram_max)
        udp_send(s, s->datagram);
    else if (have)
        evbuffer_add(s->datagram, "\n", 1);
    evbuffer_add_buffer(s->datagram, line);
}

/* ------------------------------------------------------------------ TCP */

static void tcp_drop(struct statsd_sink *s)
{
    bufferevent_free(s->bev);
    s->bev = NULL;
}

static void on_tcp_read(struct bufferevent *bev, void *arg)
{
    UNUSED(arg);
    /* a statsd server says nothing; reading only notices it closing */
    struct evbuffer *in = bufferevent_get_input(bev);
    evbuffer_drain(in, evbuffer_get_length(in));
}

static void on_tcp_event(struct bufferevent *bev, short what, void *arg)
{
    struct statsd_sink *s = arg;
    UNUSED(bev);
    if (what & BEV_EVENT_CONNECTED)
        return;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        log_debug("stats", "statsd: connection to cluster '%s' %s; the next flush reconnects", s->cluster_name,
                  what & BEV_EVENT_EOF ? "closed" : "failed");
        tcp_drop(s);
    }
}

/* A host of the cluster, healthy ones first, round robin; NULL: none. */
static struct herald_host *tcp_pick_host(struct statsd_sink *s)
{
    struct cluster *cl = cluster_manager_find(s->cluster_name);
    struct host_set *hs = cl ? cl->current : NULL;
    if (!hs || !hs->nhosts)
        return NULL;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < hs->nhosts; i++) {
            struct herald_host *h = hs->hosts[(s->next_host + i) % hs->nhosts];
            if (pass == 1 || host_healthy(h)) {
                s->next_host = (s->next_host + i + 1) % hs->nhosts;
                return h;
            }
        }
    return NULL;
}

static bool tcp_connect(struct statsd_sink *s)
{
    struct herald_host *h = tcp_pick_host(s);
    if (!h)
        return false;
    s->bev = bufferevent_socket_new(s->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!s->bev)
        return false;
    /* callbacks after connecting: an immediate failure must not free the
     * bufferevent under bufferevent_socket_connect() */
    if (bufferevent_socket_connect(s->bev, (struct sockaddr *)&h->addr, (int)h->addrlen) < 0) {
        tcp_drop(s);
        return false;
    }
    bufferevent_setcb(s->bev, on_tcp_read, NULL, on_tcp_event, s);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
    return true;
}

static void tcp_send(struct statsd_sink *s)
{
    struct evbuffer *out = s->tcp_out;
    if (s->bev && evbuffer_get_length(bufferevent_get_output(s->bev)) > STATSD_TCP_MAX_BUFFERED) {
        /* the server stopped reading: better lose stats than memory */
        log_warn("stats", "statsd: cluster '%s' is not reading; dropping the connection", s->cluster_name);
        tcp_drop(s);
        herald_stat_inc(s->cx_overflow);
        evbuffer_drain(out, evbuffer_get_length(out));
        return;
    }
    if (!s->bev && !tcp_connect(s)) {
        evbuffer_drain(out, evbuffer_get_length(out));
        return;
    }
    bufferevent_write_buffer(s->bev, out);
}

/* ------------------------------------------------------------------ lines */

void statsd_sink_begin(struct statsd_sink *s)
{
    UNUSED(s);
}

/* A name as /stats shows it, except the protocol's separators (a cluster
 * named "a:b" must not end the name early): ':' '|' and line ends become '_'. */
static void add_name(struct evbuffer *out, const char *name)
{
    while (*name) {
        size_t run = strcspn(name, ":|\r\n");
        evbuffer_add(out, name, run);
        name += run;
        if (*name) {
            evbuffer_add(out, "_", 1);
            name++;
        }
    }
}

/* "<prefix>.<name>:<value>|<type>[|@rate][|#tags]" into s->line. */
static void format_line(struct statsd_sink *s, const char *name, const char *value, const char *type,
                        const char *rate)
{
    char *tags = NULL, *bare = NULL;
    if (s->dog)
        bare = stats_tag_extract(name, &tags);
    evbuffer_add_printf(s->line, "%s.", s->prefix);
    add_name(s->line, bare ? bare : name);
    evbuffer_add_printf(s->line, ":%s|%s%s%s", value, type, *rate ? "|@" : "", rate);
    if (tags && *tags) {
        evbuffer_add(s->line, "|#", 2);
        evbuffer_add(s->line, tags, strlen(tags));
    }
    free(tags);
    free(bare);
}

static void emit(struct statsd_sink *s)
{
    if (s->fd >= 0) {
        udp_add(s, s->line);
    } else if (s->tcp_out) {
        evbuffer_add(s->line, "\n", 1);
        evbuffer_add_buffer(s->tcp_out, s->line);
    }
    evbuffer_drain(s->line, evbuffer_get_length(s->line));
}

void statsd_sink_counter(struct statsd_sink *s, const char *name, uint64_t delta)
{
    char v[24];
    snprintf(v, sizeof(v), "%" PRIu64, delta);
    format_line(s, name, v, "c", "");
    emit(s);
}

void statsd_sink_gauge(struct statsd_sink *s, const char *name, uint64_t value)
{
    char v[24];
    snprintf(v, sizeof(v), "%" PRIu64, value);
    format_line(s, name, v, "g", "");
    emit(s);
}

/* 1/times, rounded down at the 15th decimal so that a server dividing by it
 * gets at least `times` (statsd_exporter truncates the quotient). */
static void sample_rate(uint64_t times, char *out, size_t size)
{
    if (times <= 1) {
        *out = '\0';
        return;
    }
    uint64_t digits = 1000000000000000ull / times; /* 15 decimals */
    if (!digits)
        digits = 1;
    snprintf(out, size, "0.%015" PRIu64, digits);
    char *e = out + strlen(out) - 1;
    while (*e == '0')
        *e-- = '\0';
}

void statsd_sink_histogram(struct statsd_sink *s, const char *name, uint64_t value, uint64_t times)
{
    char v[24], rate[24];
    snprintf(v, sizeof(v), "%" PRIu64, value);
    sample_rate(times, rate, sizeof(rate));
    format_line(s, name, v, "ms", rate);
    emit(s);
}

void statsd_sink_end(struct statsd_sink *s)
{
    if (s->fd >= 0)
        udp_send(s, s->datagram);
    else if (s->tcp_out && s->base && evbuffer_get_length(s->tcp_out))
        tcp_send(s);
}
