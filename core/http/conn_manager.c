/* The HTTP connection manager; see conn_manager.h for what it does and
 * where each header mutation happens.
 *
 * Re-entrancy. Filters call back into the stream from inside their own
 * callbacks (a local reply from decode_headers, the router answering
 * synchronously, a reset while encoding), and the connection may close
 * under any write. So:
 * - every entry (codec callback, SDK call, timer, connection event) counts
 *   itself in cm_conn.depth; a stream that is over is only marked `over`,
 *   and is torn down (on_complete, access log, session_destroy, free) once
 *   the outermost entry unwinds: at once when that entry was the core's own
 *   (on_read, on_event, a timer), from a zero-delay timer when it was a
 *   filter's call (the router's upstream callback is still on the stack
 *   then, with its session);
 * - each filter walk remembers the direction's generation and stops when it
 *   changed (a local reply replaced the response, the stream was reset).
 *
 * Filter iteration (per direction, positions 0..n-1: decoders in config
 * order, encoders in reverse). `pos` is how far the headers got. Data flows
 * through the positions that saw the headers; a filter returning
 * STOP_AND_BUFFER keeps the chunk in the direction's one buffer (`held`)
 * until it returns CONTINUE on a later chunk or calls continue_*; STOP on
 * data means the filter took what it wanted and nothing goes further (its
 * end_stream is remembered). STOP_AND_BUFFER on headers also holds the data
 * back from the filter itself (Envoy's StopAllIterationAndBuffer). Trailers
 * follow the data. One hold point per direction: a second filter stopping
 * data in front of a hold is treated as CONTINUE (logged at debug). */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <event2/buffer.h>
#include <nghttp2/nghttp2.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "access_log_filter.h"
#include "buffer.h"
#include "common.h"
#include "config/schema.h"
#include "config/tree.h"
#include "filters.h"
#include "http/conn_manager.h"
#include "http/h1.h"
#include "http/h2_server.h"
#include "http/h2_keepalive.h"
#include "http/header_option.h"
#include "http/headers.h"
#include "http/grpc_reply.h"
#include "http/local_reply.h"
#include "http/route.h"
#include "metadata.h"
#include "log.h"
#include "plugin.h"
#include "mem_cache.h"
#include "net/tls_log.h"
#include "overload.h"
#include "timer.h"
#include "upstream/cluster.h"
#include "access_log.h"
#include "herald/stats.h"
#include "herald/timer.h"

#define NONE SIZE_MAX

/* our own reasons to stop reading the downstream connection */
#define PAUSE_WRITE  (HERALD_PAUSE_USER << 0)  /* our output is over its high watermark */
#define PAUSE_DECODE (HERALD_PAUSE_USER << 1)  /* herald_http_stream_pause_decoding */
#define PAUSE_KICK   (HERALD_PAUSE_USER << 2)  /* never set: resuming it re-dispatches buffered input */

/* RESPONSE_FLAGS and RESPONSE_FLAGS_LONG: the short and long names in
 * Envoy's print order (its ResponseFlag enum: a per-try timeout whose
 * retries ran out prints "UT,URX"). */
static const char *const flag_names[][2] = {
    {"LH", "FailedLocalHealthCheck"}, {"UH", "NoHealthyUpstream"}, {"UT", "UpstreamRequestTimeout"},
    {"LR", "LocalReset"}, {"UR", "UpstreamRemoteReset"}, {"UF", "UpstreamConnectionFailure"},
    {"UC", "UpstreamConnectionTermination"}, {"UO", "UpstreamOverflow"}, {"NR", "NoRouteFound"},
    {"DI", "DelayInjected"}, {"FI", "FaultInjected"}, {"RL", "RateLimited"}, {"UAEX", "UnauthorizedExternalService"},
    {"RLSE", "RateLimitServiceError"}, {"DC", "DownstreamConnectionTermination"},
    {"URX", "UpstreamRetryLimitExceeded"}, {"SI", "StreamIdleTimeout"}, {"IH", "InvalidEnvoyRequestHeaders"},
    {"DPE", "DownstreamProtocolError"}, {"UMSDR", "UpstreamMaxStreamDurationReached"},
    {"RFCF", "ResponseFromCacheFilter"}, {"NFCF", "NoFilterConfigFound"}, {"DT", "DurationTimeout"},
    {"UPE", "UpstreamProtocolError"}, {"NC", "NoClusterFound"}, {"OM", "OverloadManagerTerminated"},
    {"DF", "DnsResolutionFailed"}, {"DO", "DropOverload"},
};
#define MAX_FLAGS 30

enum server_transform { SERVER_OVERWRITE = 0, SERVER_APPEND_IF_ABSENT, SERVER_PASS_THROUGH };
enum underscores { US_ALLOW = 0, US_REJECT, US_DROP };
enum escaped_slashes { ESC_KEEP = 0, ESC_REJECT, ESC_UNESCAPE_FORWARD, ESC_UNESCAPE_REDIRECT };

struct cm_stats {
    struct herald_stat *cx_total, *cx_active, *cx_destroy, *cx_destroy_remote, *cx_destroy_local,
        *cx_destroy_active_rq, *cx_destroy_remote_active_rq, *cx_destroy_local_active_rq, *cx_http1_total,
        *cx_http1_active, *cx_protocol_error, *cx_idle_timeout, *cx_drain_close, *cx_rx_bytes_total, *cx_tx_bytes_total,
        *cx_length_ms, *cx_upgrades_total, *cx_upgrades_active, *cx_max_duration_reached,
        *cx_max_requests_reached, *flow_paused, *flow_resumed, *rq_total, *rq_http1_total, *rq_active,
        *rq_xx[6], *rq_completed, *rq_time, *rq_too_large, *rq_idle_timeout, *rq_timeout, *rq_header_timeout,
        *rq_max_duration_reached, *rq_rx_reset, *rq_tx_reset, *rq_non_relative_path, *rq_ws_on_non_ws_route,
        *rq_response_before_rq_complete, *rq_failed_path_normalization, *rq_redirected_normalized,
        *rq_overload_close, *cx_overload_disable_keepalive,
        *dropped_underscores,
        *rejected_underscores, *cx_http2_total, *cx_http2_active, *rq_http2_total, *h2_dropped_underscores,
        *h2_rejected_underscores;
    /* kept under http.<prefix>. for the router (herald_http_stream_counter) */
    struct herald_stat *no_route, *no_cluster, *rq_redirect, *rq_direct_response, *rq_total_router,
        *rq_reset_after_downstream_response_started;
};

struct http_filter {
    const struct plugin *plugin;
    const struct herald_http_filter_ops *ops;
    void *conf;
    char *name;                        /* http_filters[].name: what typed_per_filter_config keys name */
    bool default_off;                  /* http_filters[].disabled: only where a route turns it on */
};

/* The ops a plugin built against an older SDK lacks read as NULL. */
#define HTTP_OPS_HAS(ops, member) \
    ((ops)->size >= offsetof(struct herald_http_filter_ops, member) + sizeof((ops)->member))

enum codec { CODEC_AUTO = 0, CODEC_HTTP1, CODEC_HTTP2 };

struct herald_http_cm {
    char *stat_prefix;                    /* "http.<stat_prefix>" */
    struct cm_stats st;
    enum codec codec;
    struct h2_settings h2set;
    bool h2_allow_connect;             /* http2_protocol_options.allow_connect */
    uint64_t drain_timeout_ms;         /* h2: between the two GOAWAYs of a drain (default 5 s) */
    struct h2_keepalive_cfg h2_keepalive; /* http2_protocol_options.connection_keepalive */
    struct h2_stats h2st;
    struct route_table *routes;
    struct http_filter *filters; size_t nfilters;
    struct herald_access_log **logs; size_t nlogs;
    struct local_reply *local_reply;   /* local_reply_config; NULL: replies as made */
    bool log_upstream_tls;      /* a log asks for UPSTREAM_TLS_* / UPSTREAM_PEER_* */
    bool log_upstream_hostname; /* ... for UPSTREAM_HOST_NAME* */
    bool log_dn_wire, log_up_wire; /* ... for DOWNSTREAM_ / UPSTREAM_ *_WIRE_BYTES_* or *_HEADER_BYTES_*:
                                    * the bytes are counted only then */
    char *server_name;
    enum server_transform server_transform;
    char *via;
    const char *scheme_overwrite;       /* scheme_header_transformation.scheme_to_overwrite, NULL: none */
    bool use_remote_address, skip_xff_append, generate_request_id, preserve_external_request_id,
        always_set_request_id, keep_xfcc;
    uint32_t xff_num_trusted_hops;
    uint64_t idle_timeout_ms, max_connection_duration_ms, max_stream_duration_ms, stream_idle_timeout_ms,
        request_timeout_ms, request_headers_timeout_ms;
    uint64_t delayed_close_ms;          /* delayed_close_timeout: the linger after a half-close; 0: none */
    uint32_t max_requests_per_connection;
    enum underscores underscores;
    struct h1_limits limits;
    bool allow_absolute_url, accept_http_10, enable_trailers;
    char *default_host_for_http_10;
    char **upgrades; size_t nupgrades, capupgrades; /* upgrade_configs types */
    bool *upgrade_enabled;                /* [nupgrades] */
    bool normalize_path, merge_slashes;
    enum escaped_slashes escaped_slashes;
    bool strip_matching_host_port, strip_any_host_port, strip_trailing_host_dot;
    bool route_toggles;         /* a filter is off by default or some route turns one off: make_filters asks the route */
};

struct cm_conn;

struct wire_bytes {
    uint64_t hdr_rx, wire_rx, hdr_tx, wire_tx;
};

static void wire_add(struct wire_bytes *w, bool sent, uint64_t bytes, bool headers)
{
    *(sent ? &w->wire_tx : &w->wire_rx) += bytes;
    if (headers)
        *(sent ? &w->hdr_tx : &w->hdr_rx) += bytes;
}

/* One direction of a stream's filter walk. */
struct fdir {
    size_t pos;                 /* the headers passed positions [0, pos) */
    size_t n;                   /* positions in this direction */
    bool headers_in;            /* headers entered the chain */
    bool headers_out;           /* ... and left it (terminal / codec) */
    bool headers_end;           /* the headers end the stream (nothing follows) */
    bool stop_all;              /* headers stopped with STOP_AND_BUFFER at pos-1 */
    size_t hold_pos;            /* first position the held data has not reached, or NONE */
    struct herald_buf *held;
    bool held_end;              /* the held data ends the body */
    struct herald_headers *trailers; /* held trailers */
    size_t trailers_pos;        /* first position the trailers have not reached */
    struct herald_buf *added;   /* add_*_data from a trailers callback: goes on in front of them */
    bool end_in;                /* the end of the body (or trailers) entered the chain */
    bool end_out;               /* ... and left it */
    unsigned gen;               /* bumped to abandon a walk in progress */
    int in_cb;                  /* filter callbacks of this direction on the stack */
    bool continue_asked;        /* continue_* called from inside a callback */
};

struct herald_http_stream {
    struct herald_headers *lr_extra;      /* headers for the next local reply */
    const struct herald_header_options *lr_options; /* ... and a filter's HeaderValueOptions for it */
    struct cm_conn *cc;
    uint64_t id;
    void **sessions;            /* [nfilters]; NULL until the headers came */
    bool filters_made;
    struct herald_headers *req; /* the request headers (owned) */
    struct herald_headers *resp; /* the response headers as encoded (owned), for the log */
    struct herald_headers *resp_trailers;
    enum herald_http_protocol proto;
    bool head;                  /* HEAD request */
    struct fdir dec, enc;
    size_t dec_cur;             /* decoder position being called, or NONE */
    const struct herald_route *route;
    const char *vcluster;       /* the virtual cluster the router counted it in (route table's) */
    bool route_valid;
    char client_addr[64];       /* decided by XFF rules */
    bool client_from_xff;
    int status;
    const char *details;        /* static or owned (details_owned) */
    char *details_owned;
    char flags[MAX_FLAGS][6]; size_t nflags;
    char *upstream_cluster, *upstream_host, *upstream_failure;
    /* where the first two usually live: set on every request, a malloc each otherwise */
    char upstream_cluster_inline[48], upstream_host_inline[64];
    /* the connection of the last upstream attempt (herald_http_upstream_set_stream);
     * upstream_local "" until it has one */
    char upstream_local[64];
    char *upstream_hostname;        /* the last attempt's host's DNS name (only when logged) */
    char *local_reply_body;         /* the body of the local reply, for %LOCAL_REPLY_BODY% */
    uint64_t upstream_ready_ms;     /* from the attempt's start until it had a connection */
    uint64_t upstream_conn_id;
    const char *upstream_protocol;  /* static: "HTTP/1.1" or "HTTP/2" */
    /* that connection's TLS session (a reference), for the UPSTREAM_TLS_* and
     * UPSTREAM_PEER_* operators; only taken when a log format has one */
    struct ssl_session_st *upstream_tls;
    uint32_t upstream_attempts;
    struct metadata meta;
    char *joined;                      /* REQ_ALL's last answer (log_field): all values of a header */
    /* progress */
    bool request_complete;      /* the codec delivered the whole request */
    bool response_started;      /* response headers went to the codec */
    bool response_complete;
    bool local_reply;           /* a local reply is (being) sent */
    bool health_check;          /* herald_http_stream_mark_health_check */
    bool local_reply_encoding;  /* ... and its walk is on the stack */
    bool reset, over;
    bool upgrade_requested;     /* allowed upgrade: Upgrade kept in the request */
    char *upgrade_type;
    bool upgraded;              /* 101 (or CONNECT 2xx) sent: raw bytes both ways */
    bool expect_continue;
    struct h1_encoder h1enc;
    /* timing (herald_now_ms) and counts for the log */
    uint64_t start_wall_ms, start_mono, last_rx_mono, first_tx_mono, last_tx_mono, last_activity,
        upstream_tx_end_mono;
    uint64_t rx_body, tx_body;
    /* bytes on the wire, headers and all, for %DOWNSTREAM_/UPSTREAM_WIRE_BYTES_*% and
     * %..._HEADER_BYTES_*%: the client connection's (HTTP/1: the messages as read
     * and written; HTTP/2: this stream's frames, 9-byte frame headers included)
     * and the last upstream attempt's */
    struct wire_bytes dn, up;
    struct herald_timer *timer;
    uint64_t deadline_headers, deadline_request, deadline_max; /* 0: none */
    /* HTTP/2: many streams per connection */
    int32_t h2id;               /* 0 once the codec's stream is gone */
    struct herald_http_stream *prev, *next; /* cm_conn.h2streams */
    bool dec_paused;            /* reading its request body is paused (HTTP/2: per stream) */
    bool dec_asked;             /* ... because pause_decoding asked (the router, the core's holds) */
    uint16_t dec_holds;         /* ... or because filters hold too much of it (decode_watermark) */
    bool h2_unblock;            /* HTTP/2: its queue drained under half the limit (WM_DOWNSTREAM goes
                                   from the kick timer) */
    uint8_t wm_above;           /* why the response side is over its limit: WM_* bits */
    uint16_t wm_filters;        /* filters holding response data over their limit (encode_watermark) */
    uint32_t hold_limit[2];     /* [enc]: what a buffering filter may hold (0: the connection's
                                   buffer limit); set_decode/encode_buffer_limit */
};

enum proto { PROTO_NONE = 0, PROTO_H1, PROTO_H2 };

struct cm_conn {
    struct herald_http_cm *cm;
    struct herald_conn *c;
    enum proto proto;           /* NONE until AUTO saw the first bytes (or the ALPN) */
    struct h1_codec *codec;
    struct h2_server *h2;
    struct herald_http_stream *h2streams;
    size_t nh2streams;
    struct herald_timer *kick_timer; /* h2: deliver held request data, unblock streams */
    struct h2_keepalive *keepalive;  /* h2: PINGs (connection_keepalive), NULL: none */
    struct evbuffer *wbuf;
    struct herald_buf *in;      /* the connection's read buffer (from on_read) */
    struct herald_http_stream *stream;
    struct herald_timer *idle_timer, *duration_timer, *finish_timer, *linger_timer;
    struct herald_timer *drain_timer; /* h2: from the drain's first GOAWAY to its last */
    uint32_t nrequests;
    uint64_t rx_seen, tx_seen;
    uint64_t start_mono;
    uint64_t idle_since;        /* when it last went idle (its idle timer counts from there) */
    int depth;
    bool codec_dead;            /* on_error came: no more parsing */
    bool pipeline_paused;       /* the codec paused itself after a request */
    bool decode_paused;         /* pause_decoding */
    bool read_eof;
    bool eof_handled;
    bool above_high;
    bool close_after;           /* close once the current response is out */
    bool client_done;           /* HTTP/1: the last request came whole and asked to close after it */
    bool draining;              /* no more requests: max_connection_duration, max_requests, a drain */
    bool h2_announced;          /* h2: the drain's first GOAWAY is out, its last is not (drain_timer) */
    bool closing;               /* herald_conn_close called */
    bool gone;                  /* the close event came: no more writes */
    bool remote_closed;
};

static uint64_t next_stream_id;   /* per process is fine: only for logs */

static void stream_over(struct herald_http_stream *s);
static void encode_headers_in(struct herald_http_stream *s, struct herald_headers *h, bool end_stream);
static void leave(struct cm_conn *cc);
static void reset_stream(struct herald_http_stream *s, bool remote, const char *details);
static void close_conn(struct cm_conn *cc, enum herald_close_mode mode);
static void h2_drain(struct cm_conn *cc);

/* ---------------------------------------------------------------- small helpers */

static uint64_t rnd64(void)
{
    static __thread uint64_t st;
    if (!st) {
        if (getrandom(&st, sizeof(st), 0) != sizeof(st) || !st)
            st = (uint64_t)mono_ms() * 0x9e3779b97f4a7c15ull + (uint64_t)(uintptr_t)&st;
        st |= 1;
    }
    st ^= st << 13;
    st ^= st >> 7;
    st ^= st << 17;
    return st * 0x2545f4914f6cdd1dull;
}

static void uuid4(char out[37])
{
    uint64_t a = rnd64(), b = rnd64();
    a = (a & ~0xf000ull) | 0x4000ull;                              /* version 4 */
    b = (b & ~(0xc000ull << 48)) | (0x8000ull << 48);               /* variant 10 */
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    for (int i = 60; i >= 0; i -= 4) {   /* 8-4-4 from a, then 4-12 from b */
        *o++ = hex[(a >> i) & 0xf];
        if (i == 32 || i == 16)
            *o++ = '-';
    }
    *o++ = '-';
    for (int i = 60; i >= 0; i -= 4) {
        *o++ = hex[(b >> i) & 0xf];
        if (i == 48)
            *o++ = '-';
    }
    *o = '\0';
}

static void copy_n(char *out, size_t len, const char *s, size_t n)
{
    if (n >= len)
        n = len - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

/* "ip:port" / "[v6]:port" -> "ip" (once per request: no printf) */
static void strip_port(const char *addr, char *out, size_t len)
{
    if (addr[0] == '[') {
        const char *e = strchr(addr, ']');
        copy_n(out, len, addr + 1, e ? (size_t)(e - addr - 1) : strlen(addr) - 1);
        return;
    }
    const char *colon = strrchr(addr, ':');
    if (colon && strchr(addr, ':') == colon)
        copy_n(out, len, addr, (size_t)(colon - addr));
    else
        copy_n(out, len, addr, strlen(addr));
}

/* RFC 1918, loopback, link-local and unique-local: what Envoy has long called internal. */
static bool internal_ip(const char *ip)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, ip, &a4) == 1) {
        uint32_t a = ntohl(a4.s_addr);
        return (a >> 24) == 10 || (a >> 20) == (172u << 4 | 1) || (a >> 16) == (192u << 8 | 168) ||
               (a >> 24) == 127;
    }
    if (inet_pton(AF_INET6, ip, &a6) == 1) {
        static const uint8_t loop[16] = {[15] = 1};
        return !memcmp(a6.s6_addr, loop, 16) || (a6.s6_addr[0] & 0xfe) == 0xfc;
    }
    return false;
}

static void trim(const char **b, const char **e)
{
    while (*b < *e && (**b == ' ' || **b == '\t'))
        (*b)++;
    while (*e > *b && ((*e)[-1] == ' ' || (*e)[-1] == '\t'))
        (*e)--;
}

/* ---------------------------------------------------------------- path normalisation */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* RFC 3986 6.2.2 on the path part: percent-decodes unreserved characters,
 * upper-cases the other escapes, removes dot segments. */
static int normalize_path(char **pathp)
{
    char *in = *pathp;
    size_t plen = strcspn(in, "?");
    char *out = xmalloc(strlen(in) + 2);
    size_t o = 0;
    /* pass 1: escapes */
    char *dec = xmalloc(plen + 1);
    size_t d = 0;
    for (size_t i = 0; i < plen; i++) {
        if (in[i] == '%' && i + 2 < plen && hexval(in[i + 1]) >= 0 && hexval(in[i + 2]) >= 0) {
            int v = hexval(in[i + 1]) * 16 + hexval(in[i + 2]);
            if (isalnum(v) || v == '-' || v == '.' || v == '_' || v == '~') {
                dec[d++] = (char)v;
            } else {
                dec[d++] = '%';
                dec[d++] = (char)toupper((unsigned char)in[i + 1]);
                dec[d++] = (char)toupper((unsigned char)in[i + 2]);
            }
            i += 2;
        } else {
            dec[d++] = in[i];
        }
    }
    dec[d] = '\0';
    /* pass 2: dot segments (RFC 3986 5.2.4) */
    const char *p = dec;
    while (*p) {
        if (!strncmp(p, "/./", 3)) {
            p += 2;
        } else if (!strcmp(p, "/.")) {
            out[o++] = '/';
            p += 2;
        } else if (!strncmp(p, "/../", 4) || !strcmp(p, "/..")) {
            /* above the root stays at the root, as browsers and Envoy resolve it */
            while (o > 0 && out[--o] != '/')
                ;
            if (p[3] == '\0') {
                out[o++] = '/';
                p += 3;
            } else {
                p += 3;
            }
        } else {
            do
                out[o++] = *p++;
            while (*p && *p != '/');
        }
    }
    if (o == 0)
        out[o++] = '/';
    strcpy(out + o, in + plen);
    free(dec);
    free(*pathp);
    *pathp = out;
    return 0;
}

static void merge_slashes(char *path)
{
    size_t plen = strcspn(path, "?"), o = 0;
    for (size_t i = 0; i < plen; i++)
        if (!(path[i] == '/' && o > 0 && path[o - 1] == '/'))
            path[o++] = path[i];
    memmove(path + o, path + plen, strlen(path + plen) + 1);
}

static bool has_escaped_slash(const char *path)
{
    size_t plen = strcspn(path, "?");
    for (size_t i = 0; i + 2 < plen; i++)
        if (path[i] == '%' && (path[i + 1] == '2' && (path[i + 2] == 'f' || path[i + 2] == 'F')))
            return true;
        else if (path[i] == '%' && path[i + 1] == '5' && (path[i + 2] == 'c' || path[i + 2] == 'C'))
            return true;
    return false;
}

static void unescape_slashes(char *path)
{
    size_t plen = strcspn(path, "?"), o = 0;
    for (size_t i = 0; i < plen; i++) {
        if (path[i] == '%' && i + 2 < plen && path[i + 1] == '2' &&
            tolower((unsigned char)path[i + 2]) == 'f') {
            path[o++] = '/';
            i += 2;
        } else if (path[i] == '%' && i + 2 < plen && path[i + 1] == '5' &&
                   tolower((unsigned char)path[i + 2]) == 'c') {
            path[o++] = '\\';
            i += 2;
        } else {
            path[o++] = path[i];
        }
    }
    memmove(path + o, path + plen, strlen(path + plen) + 1);
}

/* ---------------------------------------------------------------- entries and exits */

static void enter(struct cm_conn *cc) { cc->depth++; }

static struct fdir *dir_of(struct herald_http_stream *s, bool enc) { return enc ? &s->enc : &s->dec; }

static size_t filter_index(struct herald_http_stream *s, bool enc, size_t p)
{
    return enc ? s->enc.n - 1 - p : p;
}

/* Counts the bytes the connection moved since the last look into the cx stats. */
static void account_bytes(struct cm_conn *cc)
{
    uint64_t rx, tx;
    herald_conn_bytes(cc->c, &rx, &tx);
    if (rx > cc->rx_seen)
        herald_stat_add(cc->cm->st.cx_rx_bytes_total, rx - cc->rx_seen);
    if (tx > cc->tx_seen)
        herald_stat_add(cc->cm->st.cx_tx_bytes_total, tx - cc->tx_seen);
    cc->rx_seen = rx;
    cc->tx_seen = tx;
}

static void write_out(struct cm_conn *cc)
{
    if (evbuffer_get_length(cc->wbuf) == 0)
        return;
    if (cc->gone || cc->closing) {
        evbuffer_drain(cc->wbuf, evbuffer_get_length(cc->wbuf));
        return;
    }
    herald_conn_write(cc->c, ev_buf(cc->wbuf), false);
    evbuffer_drain(cc->wbuf, evbuffer_get_length(cc->wbuf));
    account_bytes(cc);
}

#define DRAIN_IDLE_GRACE_MS 250
static void on_idle_timer(struct herald_timer *t, void *arg);

/* A keep-alive connection goes idle after every request: the idle timer is
 * armed and cancelled each time (list operations on the timer wheel). */
static void idle_arm(struct cm_conn *cc, uint64_t ms)
{
    if (cc->idle_timer)
        herald_timer_arm(cc->idle_timer, ms);
}

/* The idle_timeout, counted from when the connection went idle (fresh: now),
 * and shorter while the overload manager's reduce_timeouts scales it. */
static void idle_arm_configured(struct cm_conn *cc, bool fresh)
{
    uint64_t now = herald_now_ms();
    if (fresh)
        cc->idle_since = now;
    uint64_t due = cc->idle_since + overload_scaled_ms(OVERLOAD_TIMER_HTTP_CONN_IDLE, cc->cm->idle_timeout_ms);
    idle_arm(cc, due > now ? due - now : 0);
}

static void on_linger_timer(struct herald_timer *t, void *arg)
{
    struct cm_conn *cc = arg;
    if (!cc->gone)
        herald_conn_close(cc->c, HERALD_CLOSE_FLUSH);
}

/* Whether the client may still be sending when we close. A client that
 * sent a whole request with "Connection: close" (or HTTP/1.0 without
 * keep-alive; client_done, set by the HTTP/1 codec only) sends nothing more
 * but its FIN and close_notify, so lingering for it only costs system calls
 * (nginx's lingering_close "on"). Bytes already behind that request say
 * otherwise. */
static bool client_may_send(const struct cm_conn *cc)
{
    return !cc->client_done || (cc->in && herald_buf_len(cc->in) > 0);
}

/* FLUSH: a half-close once the output is out, then whatever the client
 * still sends is read and dropped until it closes or delayed_close_timeout
 * (1 s) passes, as Envoy: closing with unread input would send an RST that
 * can destroy the response before the client reads it. 0 closes at once,
 * and so does a client that said it sends no more (client_may_send). */
static void close_conn(struct cm_conn *cc, enum herald_close_mode mode)
{
    if (cc->closing || cc->gone)
        return;
    if (cc->h2 && mode == HERALD_CLOSE_FLUSH) {
        /* the last frames: GOAWAY, so that the client knows what was processed */
        if (!h2_server_failed(cc->h2))
            h2_server_goaway(cc->h2, NGHTTP2_NO_ERROR);
        h2_server_flush(cc->h2, cc->wbuf);
        write_out(cc);
        if (cc->closing || cc->gone)
            return;
    }
    cc->closing = true;
    herald_timer_cancel(cc->idle_timer);
    if (mode == HERALD_CLOSE_FLUSH && !cc->read_eof && cc->linger_timer && cc->cm->delayed_close_ms &&
        client_may_send(cc)) {
        struct evbuffer *empty = evbuffer_new();
        herald_conn_write(cc->c, ev_buf(empty), true);
        evbuffer_free(empty);
        if (!cc->gone)
            herald_timer_arm(cc->linger_timer, cc->cm->delayed_close_ms);
        return;
    }
    herald_conn_close(cc->c, mode);
}

static void touch(struct herald_http_stream *s) { s->last_activity = herald_now_ms(); }

static bool decode_paused(const struct herald_http_stream *s)
{
    return s->cc->h2 ? s->dec_paused : s->cc->decode_paused;
}

/* A filter's hold, counted: true when this call is the first hold or the
 * last release (the moment the stream's state changes). */
static bool count_hold(uint16_t *holds, bool above)
{
    if (above)
        return (*holds)++ == 0;
    return *holds && --*holds == 0;
}

/* The reasons a stream's upstream should stop sending: the downstream is
 * not taking the response (its connection, or its HTTP/2 window), or a
 * filter holds more of it than its limit (a pacing filter). The filters
 * hear of the first reason coming and of the last one going. */
enum { WM_DOWNSTREAM = 1, WM_FILTER = 2 };

static void notify_watermark(struct herald_http_stream *s, bool above);

static void stream_watermark(struct herald_http_stream *s, unsigned why, bool above)
{
    unsigned was = s->wm_above;
    s->wm_above = (uint8_t)(above ? was | why : was & ~why);
    if (!was != !s->wm_above)
        notify_watermark(s, above);
}

static void notify_watermark(struct herald_http_stream *s, bool above)
{
    struct herald_http_cm *cm = s->cc->cm;
    if (s->sessions)
        for (size_t i = 0; i < cm->nfilters && !s->over; i++)
            if (s->sessions[i] && cm->filters[i].ops->on_watermark)
                cm->filters[i].ops->on_watermark(s->sessions[i], above);
}

/* HTTP/2: the connection is done with (the codec, or the keepalive, says
 * so): its streams in flight are reset with details, then it closes. */
static void h2_abort(struct cm_conn *cc, const char *details, enum herald_close_mode mode)
{
    cc->codec_dead = true;
    for (struct herald_http_stream *s = cc->h2streams; s; s = s->next)
        if (!s->over)
            reset_stream(s, false, details);
    close_conn(cc, mode);
}

/* HTTP/2: hands nghttp2's frames to the connection (not while the
 * connection's output is over its high watermark: the frames wait in
 * nghttp2, where the flood limits count them), and closes a connection the
 * codec is done with. Only from the outermost entry. */
static void h2_out(struct cm_conn *cc)
{
    if (!cc->h2 || cc->gone || cc->closing)
        return;
    bool failed = h2_server_failed(cc->h2);
    if (!cc->above_high || failed) {
        if (h2_server_flush(cc->h2, cc->wbuf) < 0)
            failed = true;
        write_out(cc);
    }
    if (cc->gone || cc->closing)
        return;
    if (failed || h2_server_finished(cc->h2))
        h2_abort(cc, "http2.codec_error", HERALD_CLOSE_FLUSH);
}

/* ---------------------------------------------------------------- the filter walk */

enum op { OP_HEADERS = 0, OP_DATA, OP_TRAILERS };

static enum herald_http_status call_filter(struct herald_http_stream *s, bool enc, enum op op, size_t p,
                                           struct herald_headers *h, struct herald_buf *b, bool end)
{
    struct fdir *d = dir_of(s, enc);
    size_t i = filter_index(s, enc, p);
    const struct herald_http_filter_ops *ops = s->cc->cm->filters[i].ops;
    void *sess = s->sessions ? s->sessions[i] : NULL;
    enum herald_http_status st = HERALD_HTTP_CONTINUE;

    if (!sess)
        return st;
    d->in_cb++;
    d->continue_asked = false;
    size_t saved_cur = s->dec_cur;
    if (!enc)
        s->dec_cur = p;
    switch (op) {
    case OP_HEADERS:
        if (enc ? ops->encode_headers : ops->decode_headers)
            st = (enc ? ops->encode_headers : ops->decode_headers)(sess, h, end);
        break;
    case OP_DATA:
        if (enc ? ops->encode_data : ops->decode_data)
            st = (enc ? ops->encode_data : ops->decode_data)(sess, b, end);
        break;
    case OP_TRAILERS:
        if (enc ? ops->encode_trailers : ops->decode_trailers)
            st = (enc ? ops->encode_trailers : ops->decode_trailers)(sess, h);
        break;
    }
    if (!enc)
        s->dec_cur = saved_cur;
    d->in_cb--;
    /* continue_* from inside its own callback: as if it had returned CONTINUE */
    if (d->continue_asked)
        st = HERALD_HTTP_CONTINUE;
    d->continue_asked = false;
    if (st != HERALD_HTTP_CONTINUE && st != HERALD_HTTP_STOP && st != HERALD_HTTP_STOP_AND_BUFFER)
        st = HERALD_HTTP_CONTINUE;
    return st;
}

static void sink_headers(struct herald_http_stream *s);
static void sink_data(struct herald_http_stream *s, struct herald_buf *chunk, bool end);
static void sink_trailers(struct herald_http_stream *s, struct herald_headers *t);
static const char *log_field(void *ctx, const char *op, const char *arg, char *scratch, size_t len);
static void send_local_reply(struct herald_http_stream *s, int status, const char *body, const char *details,
                             const char *flags);

static bool walk_dead(struct herald_http_stream *s, struct fdir *d, unsigned gen)
{
    return d->gen != gen || s->over || s->reset;
}

static void run_headers(struct herald_http_stream *s, bool enc, size_t p)
{
    struct fdir *d = dir_of(s, enc);
    unsigned gen = d->gen;
    struct herald_headers *h = enc ? s->resp : s->req;
    bool end = d->headers_end;

    for (; p < d->n; p++) {
        enum herald_http_status st = call_filter(s, enc, OP_HEADERS, p, h, NULL, end);
        if (walk_dead(s, d, gen))
            return;
        d->pos = p + 1;
        if (st != HERALD_HTTP_CONTINUE) {
            d->stop_all = st == HERALD_HTTP_STOP_AND_BUFFER;
            return;
        }
    }
    d->pos = d->n;
    d->stop_all = false;
    if (!d->headers_out) {
        d->headers_out = true;
        if (enc)
            sink_headers(s);
        else if (end)
            d->end_out = true;
    }
}

static uint32_t body_limit(struct herald_http_stream *s)
{
    uint32_t l = herald_conn_buffer_limit(s->cc->c);
    return l ? l : 1024 * 1024;
}

/* What the filters may hold of one direction's body before Envoy's 413 / 500. */
static uint32_t hold_limit(struct herald_http_stream *s, bool enc)
{
    return s->hold_limit[enc] ? s->hold_limit[enc] : body_limit(s);
}

HERALD_EXPORT void herald_http_stream_set_decode_buffer_limit(struct herald_http_stream *s, uint32_t bytes)
{
    s->hold_limit[0] = bytes;
}

HERALD_EXPORT void herald_http_stream_set_encode_buffer_limit(struct herald_http_stream *s, uint32_t bytes)
{
    s->hold_limit[1] = bytes;
}

/* Keeps chunk (moved, no copy) for position p. */
static void hold_at(struct herald_http_stream *s, bool enc, size_t p, struct herald_buf *chunk, bool end,
                    bool asked)
{
    struct fdir *d = dir_of(s, enc);
    if (!d->held)
        d->held = herald_buf_new();
    if (d->hold_pos == NONE)
        d->hold_pos = p;
    herald_buf_move(d->held, chunk, SIZE_MAX);
    d->held_end = d->held_end || end;
    if (herald_buf_len(d->held) <= hold_limit(s, enc))
        return;
    /* a buffering filter past the limit: Envoy's 413 / 500 */
    if (!enc) {
        if (asked || d->stop_all) {
            herald_stat_inc(s->cc->cm->st.rq_too_large);
            send_local_reply(s, 413, "Payload Too Large", "request_payload_too_large", NULL);
        } else if (!decode_paused(s)) {
            /* a filter holding the headers: backpressure instead */
            herald_http_stream_pause_decoding(s, true);
        }
    } else {
        send_local_reply(s, 500, "Internal Server Error", "response_payload_too_large", NULL);
    }
}

/* Takes the held data out (into a fresh buffer the caller frees). */
static struct herald_buf *take_held(struct fdir *d, bool *end)
{
    struct herald_buf *b = d->held ? d->held : herald_buf_new();
    d->held = NULL;
    *end = d->held_end;
    d->held_end = false;
    d->hold_pos = NONE;
    return b;
}

static void run_data(struct herald_http_stream *s, bool enc, size_t p, struct herald_buf *chunk, bool end)
{
    struct fdir *d = dir_of(s, enc);
    unsigned gen = d->gen;

    for (; p < d->n; p++) {
        if (p >= d->pos || (d->stop_all && p == d->pos - 1) || (d->hold_pos != NONE && p == d->hold_pos)) {
            hold_at(s, enc, p, chunk, end, false);
            return;
        }
        enum herald_http_status st = call_filter(s, enc, OP_DATA, p, NULL, chunk, end);
        if (walk_dead(s, d, gen))
            return;
        if (!enc && p == d->n - 1) {
            /* the terminal decoder consumes whatever it is given */
            herald_buf_drain(chunk, herald_buf_len(chunk));
            if (end)
                d->end_out = true;
            return;
        }
        if (st == HERALD_HTTP_STOP_AND_BUFFER && (d->hold_pos == NONE || d->hold_pos == p + 1)) {
            hold_at(s, enc, p + 1, chunk, end, true);
            return;
        }
        if (st == HERALD_HTTP_STOP && (d->hold_pos == NONE || d->hold_pos == p + 1)) {
            herald_buf_drain(chunk, herald_buf_len(chunk)); /* the filter took what it wanted */
            if (d->hold_pos == NONE)
                d->hold_pos = p + 1;
            d->held_end = d->held_end || end;
            return;
        }
        if (st != HERALD_HTTP_CONTINUE)
            log_debug("http", "stream %llu: a second filter stopped the data in front of a held body; "
                      "going on", (unsigned long long)s->id);
        if (d->hold_pos == p + 1) {
            /* the holder lets go: what it held goes first */
            bool hend;
            struct herald_buf *held = take_held(d, &hend);
            herald_buf_move(held, chunk, SIZE_MAX);
            herald_buf_move(chunk, held, SIZE_MAX);
            herald_buf_free(held);
            if (!enc && decode_paused(s) && !s->upgraded)
                herald_http_stream_pause_decoding(s, false);
        }
        if (p + 1 == d->pos && !d->headers_out) {
            /* the filter that stopped the headers continues by returning CONTINUE on data */
            run_headers(s, enc, p + 1);
            if (walk_dead(s, d, gen))
                return;
        }
    }
    if (end)
        d->end_out = true;
    if (enc)
        sink_data(s, chunk, end);
    else
        herald_buf_drain(chunk, herald_buf_len(chunk));
}

static void run_trailers(struct herald_http_stream *s, bool enc, size_t p)
{
    struct fdir *d = dir_of(s, enc);
    unsigned gen = d->gen;

    for (; p < d->n; p++) {
        if (p >= d->pos || (d->stop_all && p == d->pos - 1) || (d->hold_pos != NONE && p >= d->hold_pos)) {
            d->trailers_pos = p;
            return;
        }
        enum herald_http_status st = call_filter(s, enc, OP_TRAILERS, p, d->trailers, NULL, true);
        if (walk_dead(s, d, gen))
            return;
        if (d->added) {
            /* the filter's last bytes (a compressor's end) go on before the trailers */
            struct herald_buf *added = d->added;
            d->added = NULL;
            run_data(s, enc, p + 1, added, false);
            herald_buf_free(added);
            if (walk_dead(s, d, gen))
                return;
        }
        if (!enc && p == d->n - 1)
            break;
        if (st != HERALD_HTTP_CONTINUE) {
            d->trailers_pos = p + 1;
            return;
        }
        /* headers, then the body held behind them, then the trailers (as continue_dir) */
        if (p + 1 == d->pos && !d->headers_out) {
            run_headers(s, enc, p + 1);
            if (walk_dead(s, d, gen))
                return;
        }
        if (d->hold_pos == p + 1) {
            bool hend;
            struct herald_buf *held = take_held(d, &hend);
            run_data(s, enc, p + 1, held, false);
            herald_buf_free(held);
            if (walk_dead(s, d, gen))
                return;
        }
    }
    struct herald_headers *t = d->trailers;
    d->trailers = NULL;
    d->end_out = true;
    if (enc) {
        sink_trailers(s, t);
    } else {
        /* kept for %TRAILER%? Envoy's TRAILER() is the response's; drop */
        herald_headers_free(t);
    }
}

/* continue_decoding / continue_encoding: headers, then held data, then trailers. */
static void continue_dir(struct herald_http_stream *s, bool enc)
{
    struct fdir *d = dir_of(s, enc);
    unsigned gen = d->gen;

    if (d->in_cb) {
        d->continue_asked = true;
        return;
    }
    if (!d->headers_in)
        return;
    if (!d->headers_out && d->pos < d->n) {
        d->stop_all = false;
        run_headers(s, enc, d->pos);
        if (walk_dead(s, d, gen))
            return;
    }
    if (d->hold_pos != NONE) {
        size_t from = d->hold_pos;
        bool end;
        struct herald_buf *held = take_held(d, &end);
        run_data(s, enc, from, held, end);
        herald_buf_free(held);
        if (walk_dead(s, d, gen))
            return;
        if (!enc && decode_paused(s) && d->hold_pos == NONE && !s->upgraded)
            herald_http_stream_pause_decoding(s, false);
    }
    if (d->trailers && d->hold_pos == NONE)
        run_trailers(s, enc, d->trailers_pos);
}

/* ---------------------------------------------------------------- the response side */

static void maybe_over(struct herald_http_stream *s)
{
    if (s->over || !s->response_complete)
        return;
    struct cm_conn *cc = s->cc;
    if (!s->request_complete && !s->upgraded) {
        /* HTTP/1 cannot find the next request behind an unread body */
        herald_stat_inc(cc->cm->st.rq_response_before_rq_complete);
        if (!cc->h2)
            cc->close_after = true; /* h2: the codec stops the upload with RST_STREAM(NO_ERROR) */
    }
    if (s->upgraded && !cc->h2)
        cc->close_after = true; /* HTTP/1: the connection was the tunnel */
    herald_stat_inc(cc->cm->st.rq_completed);
    stream_over(s);
}

static bool closing_after_response(struct herald_http_stream *s)
{
    struct cm_conn *cc = s->cc;
    struct herald_http_cm *cm = cc->cm;
    if (cc->close_after || cc->codec_dead || cc->draining || cc->read_eof || !s->request_complete)
        return true;
    if (!h1_codec_keep_alive(cc->codec))
        return true;
    if (cm->max_requests_per_connection && cc->nrequests >= cm->max_requests_per_connection) {
        herald_stat_inc(cm->st.cx_max_requests_reached);
        return true;
    }
    if (overload_action_on(OVERLOAD_DISABLE_HTTP_KEEPALIVE)) {
        herald_stat_inc(cm->st.cx_overload_disable_keepalive);
        return true;
    }
    return false;
}

/* Server, Via and x-request-id on a response, for both protocols. */
static void response_common(struct herald_http_stream *s, struct herald_headers *h)
{
    struct herald_http_cm *cm = s->cc->cm;
    switch (cm->server_transform) {
    case SERVER_OVERWRITE:
        herald_headers_set(h, "server", cm->server_name);
        break;
    case SERVER_APPEND_IF_ABSENT:
        if (!HEADERS_GET(h, "server"))
            herald_headers_set(h, "server", cm->server_name);
        break;
    case SERVER_PASS_THROUGH:
        break;
    }
    if (cm->via) {
        const char *v = HEADERS_GET(h, "via");
        if (v) {
            char *nv = xasprintf("%s, %s", v, cm->via);
            herald_headers_set(h, "via", nv);
            free(nv);
        } else {
            herald_headers_set(h, "via", cm->via);
        }
    }
    const char *rid = cm->always_set_request_id && s->req ? HEADERS_GET(s->req, "x-request-id") : NULL;
    if (rid && !HEADERS_GET(h, "x-request-id"))
        herald_headers_set(h, "x-request-id", rid);
}

/* The upstream took the upgrade (101, CONNECT 2xx): bytes both ways from now on. */
static void stream_upgraded(struct herald_http_stream *s)
{
    struct herald_http_cm *cm = s->cc->cm;
    s->upgraded = true;
    s->cc->client_done = false; /* the tunnel's bytes may still be coming */
    s->deadline_request = 0; /* a tunnel is not a slow request */
    herald_stat_inc(cm->st.cx_upgrades_total);
    herald_gauge_add(cm->st.cx_upgrades_active, 1);
}

static void h2_sink_headers(struct herald_http_stream *s)
{
    struct cm_conn *cc = s->cc;
    struct herald_headers *h = s->resp;
    int status = status_code(HEADERS_GET(h, ":status"));

    /* connection-specific headers are not HTTP/2's (the codec leaves them out too) */
    headers_remove_hop_by_hop(h, HOP_CONNECTION | HOP_KEEP_ALIVE | HOP_PROXY_CONNECTION | HOP_TRANSFER_ENCODING |
                                     HOP_UPGRADE);
    response_common(s, h);
    if (s->upgrade_requested && status == 101) {
        /* an RFC 8441 extended CONNECT (HTTP/2 has no other 101): the
         * upgrade's success is a 200 on the stream (Envoy's
         * transformUpgradeResponseFromH1toH2); no Sec-WebSocket-Accept in
         * HTTP/2 (RFC 8441 5) */
        herald_headers_set(h, ":status", "200");
        status = 200;
        herald_headers_remove(h, "sec-websocket-accept");
    }
    bool tunnel = s->upgrade_requested && status >= 200 && status < 300 && !s->enc.headers_end;
    if (tunnel)
        herald_headers_remove(h, "content-length"); /* RFC 9110 9.3.6 */
    if (status < 200 || status > 999 || !s->h2id ||
        h2_server_submit_headers(cc->h2, s->h2id, h, s->enc.headers_end) < 0) {
        reset_stream(s, false, "invalid_response_headers");
        return;
    }
    s->response_started = true;
    s->status = status;
    s->first_tx_mono = herald_now_ms();
    if (status < 600)
        herald_stat_inc(cc->cm->st.rq_xx[status / 100]);
    if (tunnel)
        stream_upgraded(s);
    if (s->enc.headers_end) {
        s->response_complete = true;
        s->last_tx_mono = herald_now_ms();
        maybe_over(s);
    }
}

/* HTTP/1 output for DOWNSTREAM_*_BYTES_SENT, when a log asks: what is queued
 * before an encoder call, then what the call added. */
static size_t h1_queued(const struct cm_conn *cc)
{
    return cc->cm->log_dn_wire ? evbuffer_get_length(cc->wbuf) : 0;
}

static void h1_count_tx(struct herald_http_stream *s, size_t queued, bool headers)
{
    struct cm_conn *cc = s->cc;
    if (cc->cm->log_dn_wire)
        wire_add(&s->dn, true, evbuffer_get_length(cc->wbuf) - queued, headers);
}

static void sink_headers(struct herald_http_stream *s)
{
    struct cm_conn *cc = s->cc;
    struct herald_http_cm *cm = cc->cm;
    struct herald_headers *h = s->resp;
    if (cc->h2) {
        h2_sink_headers(s);
        return;
    }
    int status = status_code(HEADERS_GET(h, ":status"));
    bool upgrade_ok = s->upgrade_requested &&
                      (status == 101 || (s->upgrade_type && !strcasecmp(s->upgrade_type, "CONNECT") &&
                                         status >= 200 && status < 300));

    headers_remove_hop_by_hop(h, HOP_CONNECTION | HOP_KEEP_ALIVE | HOP_PROXY_CONNECTION | HOP_TRANSFER_ENCODING |
                                     (upgrade_ok ? 0 : HOP_UPGRADE));
    response_common(s, h);

    if (upgrade_ok && status == 101) {
        herald_headers_set(h, "connection", "upgrade");
    } else if (upgrade_ok) {
        /* CONNECT 2xx: a tunnel, no framing (RFC 9110 9.3.6: no length either) */
        herald_headers_remove(h, "content-length");
    } else {
        if (s->upgrade_requested) {
            /* the upstream refused the upgrade: HTTP again, but this connection is done */
            h1_codec_cancel_upgrade(cc->codec);
            s->upgrade_requested = false;
            s->request_complete = s->request_complete || h1_codec_idle(cc->codec);
            cc->close_after = true;
        }
        if (closing_after_response(s)) {
            cc->close_after = true;
            herald_headers_set(h, "connection", "close");
        } else if (s->proto == HERALD_HTTP10) {
            herald_headers_set(h, "connection", "keep-alive");
        }
    }

    unsigned flags = (s->proto == HERALD_HTTP10 ? H1_ENC_HTTP10 : 0) | (s->head ? H1_ENC_HEAD : 0) |
                     (upgrade_ok && status != 101 ? H1_ENC_UPGRADE : 0);
    h1_encoder_init(&s->h1enc, flags);
    size_t queued = h1_queued(cc);
    if (h1_encode_response_headers(&s->h1enc, cc->wbuf, h, s->enc.headers_end && !upgrade_ok) < 0) {
        evbuffer_drain(cc->wbuf, evbuffer_get_length(cc->wbuf));
        reset_stream(s, false, "invalid_response_headers");
        return;
    }
    h1_count_tx(s, queued, true);
    s->response_started = true;
    s->status = status;
    s->first_tx_mono = herald_now_ms();
    if (status >= 100 && status < 600)
        herald_stat_inc(cm->st.rq_xx[status / 100]);
    if (h1_encoder_close_delimited(&s->h1enc))
        cc->close_after = true;
    if (upgrade_ok) {
        stream_upgraded(s);
        /* the client may already have sent bytes of the new protocol */
        if (!cc->gone && !cc->closing)
            herald_conn_resume_reading(cc->c, PAUSE_KICK);
    }
    write_out(cc);
    if (s->enc.headers_end && !upgrade_ok) {
        s->response_complete = true;
        s->last_tx_mono = herald_now_ms();
        maybe_over(s);
    }
}

static void sink_data(struct herald_http_stream *s, struct herald_buf *chunk, bool end)
{
    struct cm_conn *cc = s->cc;
    size_t len = herald_buf_len(chunk);

    if (cc->h2) {
        if (!s->h2id || h2_server_submit_data(cc->h2, s->h2id, buf_ev(chunk), end) < 0) {
            herald_buf_drain(chunk, herald_buf_len(chunk));
            reset_stream(s, false, "http2.stream_gone");
            return;
        }
        s->tx_body += len;
        if (!(s->wm_above & WM_DOWNSTREAM) && !end && h2_server_queued(cc->h2, s->h2id) > body_limit(s)) {
            /* this stream's client window is shut: stop its upstream, not the others */
            s->h2_unblock = false;
            stream_watermark(s, WM_DOWNSTREAM, true);
        }
        if (end && !s->over) {
            s->response_complete = true;
            s->last_tx_mono = herald_now_ms();
            maybe_over(s);
        }
        return;
    }
    size_t queued = h1_queued(cc);
    if (s->upgraded) {
        evbuffer_add_buffer(cc->wbuf, buf_ev(chunk));
    } else if (h1_encode_data(&s->h1enc, cc->wbuf, buf_ev(chunk), end) < 0) {
        herald_buf_drain(chunk, herald_buf_len(chunk));
        write_out(cc);
        reset_stream(s, false, "response_body_over_content_length");
        return;
    }
    h1_count_tx(s, queued, false);
    s->tx_body += len;
    write_out(cc);
    if (end && !s->over) {
        s->response_complete = true;
        s->last_tx_mono = herald_now_ms();
        maybe_over(s);
    }
}

static void sink_trailers(struct herald_http_stream *s, struct herald_headers *t)
{
    struct cm_conn *cc = s->cc;

    herald_headers_free(s->resp_trailers);
    s->resp_trailers = t;
    if (cc->h2) {
        /* HTTP/2 carries trailers whatever enable_trailers says (gRPC needs them) */
        if (!s->h2id || h2_server_submit_trailers(cc->h2, s->h2id, t) < 0) {
            reset_stream(s, false, "http2.stream_gone");
            return;
        }
    } else if (s->upgraded) {
        /* nothing to frame them in */
    } else {
        size_t queued = h1_queued(cc);
        if (cc->cm->enable_trailers && t && herald_headers_count(t)) {
            h1_encode_trailers(&s->h1enc, cc->wbuf, t);
        } else {
            struct evbuffer *empty = evbuffer_new();
            h1_encode_data(&s->h1enc, cc->wbuf, empty, true);
            evbuffer_free(empty);
        }
        h1_count_tx(s, queued, false);
    }
    write_out(cc);
    if (!s->over) {
        s->response_complete = true;
        s->last_tx_mono = herald_now_ms();
        maybe_over(s);
    }
}

static const struct herald_route *stream_route(struct herald_http_stream *s)
{
    if (!s->route_valid) {
        s->route = s->req ? route_table_match(s->cc->cm->routes, s->req, rnd64()) : NULL;
        s->route_valid = true;
    }
    return s->route;
}

static void encode_headers_in(struct herald_http_stream *s, struct herald_headers *h, bool end_stream)
{
    struct cm_conn *cc = s->cc;
    const char *st = HEADERS_GET(h, ":status");
    int status = status_code(st);

    if (s->over || s->reset || s->enc.headers_in || cc->gone) {
        herald_headers_free(h);
        return;
    }
    if (status >= 100 && status < 200 && status != 101) {
        /* informational (100 Continue from upstream): straight to the client; the final answer follows */
        if (status == 100 && !s->expect_continue) {
            herald_headers_free(h);
            return;
        }
        if (cc->h2) {
            if (s->h2id)
                h2_server_submit_headers(cc->h2, s->h2id, h, false);
            herald_headers_free(h);
            return;
        }
        struct h1_encoder e;
        h1_encoder_init(&e, s->proto == HERALD_HTTP10 ? H1_ENC_HTTP10 : 0);
        if (h1_encode_response_headers(&e, cc->wbuf, h, false) == 0)
            write_out(cc);
        evbuffer_drain(cc->wbuf, evbuffer_get_length(cc->wbuf));
        herald_headers_free(h);
        return;
    }
    /* the route's response headers, on responses of streams that were routed
     * (not on the HCM's own early rejections) */
    const struct herald_route *r = s->route_valid ? s->route : NULL;
    if (r)
        route_apply_response(r, h, log_field, s);
    s->resp = h;
    struct fdir *d = &s->enc;
    if (!s->local_reply)
        d->n = s->filters_made ? s->dec.pos : 0;
    d->headers_in = true;
    d->headers_end = end_stream;
    d->end_in = end_stream;
    touch(s);
    run_headers(s, true, 0);
}

static void encode_data_in(struct herald_http_stream *s, struct herald_buf *b, bool end)
{
    struct fdir *d = &s->enc;
    if (s->over || s->reset || !d->headers_in || d->end_in || d->trailers) {
        herald_buf_drain(b, herald_buf_len(b));
        return;
    }
    d->end_in = end;
    touch(s);
    run_data(s, true, 0, b, end);
}

static void encode_trailers_in(struct herald_http_stream *s, struct herald_headers *t)
{
    struct fdir *d = &s->enc;
    if (s->over || s->reset || !d->headers_in || d->end_in || d->trailers) {
        herald_headers_free(t);
        return;
    }
    d->end_in = true;
    d->trailers = t ? t : herald_headers_new();
    d->trailers_pos = 0;
    touch(s);
    run_trailers(s, true, 0);
}

static void add_flag(struct herald_http_stream *s, const char *flag)
{
    if (!flag || !*flag)
        return;
    for (size_t i = 0; i < s->nflags; i++)
        if (!strcmp(s->flags[i], flag))
            return;
    if (s->nflags < MAX_FLAGS)
        snprintf(s->flags[s->nflags++], sizeof(s->flags[0]), "%s", flag);
}

static void set_details(struct herald_http_stream *s, const char *details)
{
    if (!details)
        return;
    free(s->details_owned);
    s->details_owned = xstrdup(details);
    s->details = s->details_owned;
}

static void drop_encoding(struct herald_http_stream *s)
{
    struct fdir *d = &s->enc;
    d->gen++;
    if (d->held)
        herald_buf_free(d->held);
    if (d->added)
        herald_buf_free(d->added);
    herald_headers_free(d->trailers);
    herald_headers_free(s->resp);
    s->resp = NULL;
    unsigned gen = d->gen;
    int in_cb = d->in_cb;
    memset(d, 0, sizeof(*d));
    d->gen = gen;
    d->in_cb = in_cb;
    d->hold_pos = NONE;
}

/* grpc_status: what a gRPC request gets, -1: the mapping of status */
static void send_local_reply_grpc(struct herald_http_stream *s, int status, int grpc_status, const char *body,
                                  const char *details, const char *flags)
{
    struct cm_conn *cc = s->cc;

    if (s->over || s->reset)
        return;
    set_details(s, details);
    if (flags) {
        /* "UH" or "UF,URX" */
        char tmp[64];
        snprintf(tmp, sizeof(tmp), "%s", flags);
        for (char *sv = NULL, *f = strtok_r(tmp, ",", &sv); f; f = strtok_r(NULL, ",", &sv))
            add_flag(s, f);
    }
    if (s->response_started || cc->gone) {
        reset_stream(s, false, details);
        return;
    }
    bool nested = s->local_reply_encoding;
    s->local_reply = true;
    s->dec.gen++;               /* no more request processing by the filters */
    size_t seen = s->dec_cur != NONE ? s->dec_cur + 1 : s->dec.pos;
    drop_encoding(s);
    s->enc.n = s->filters_made && !nested ? seen : 0;
    if (!s->request_complete)
        cc->close_after = true;

    struct herald_headers *h = herald_headers_new();
    char num[24];
    size_t blen = body ? strlen(body) : 0;
    free(s->local_reply_body);
    s->local_reply_body = blen ? xstrdup(body) : NULL;
    const char *content_type = "text/plain";
    char *formatted = NULL;
    const struct lr_mapper *mapper = NULL;
    int original_status = status;
    if (cc->cm->local_reply) {
        /* Envoy's LocalReply::rewrite: the filters see this reply's code */
        s->status = status;
        mapper = local_reply_match(cc->cm->local_reply, log_field, s);
        if (mapper && lr_mapper_body(mapper)) {
            free(s->local_reply_body);
            s->local_reply_body = *lr_mapper_body(mapper) ? xstrdup(lr_mapper_body(mapper)) : NULL;
        }
        if (mapper && lr_mapper_status(mapper))
            status = s->status = lr_mapper_status(mapper);
        formatted = local_reply_format(cc->cm->local_reply, mapper, log_field, s, &blen, &content_type);
        body = formatted;
    }
    if (s->req && headers_is_grpc(s->req)) {
        /* a gRPC client gets a gRPC answer: the reason in grpc-message, no body */
        grpc_reply_headers(h, grpc_status >= 0 ? grpc_status : grpc_status_for_http(status), body, blen);
        blen = 0;
        if (!cc->h2)
            herald_headers_add(h, "content-length", "0");
    } else {
        snprintf(num, sizeof(num), "%d", status);
        herald_headers_add(h, ":status", num);
        if (blen)
            herald_headers_add(h, "content-type", content_type);
        snprintf(num, sizeof(num), "%zu", blen);
        herald_headers_add(h, "content-length", num);
    }
    if (s->lr_extra) {
        const char *n, *v;
        for (size_t i = 0; herald_headers_at(s->lr_extra, i, &n, &v); i++)
            herald_headers_add(h, n, v);
        herald_headers_free(s->lr_extra);
        s->lr_extra = NULL;
    }
    if (s->lr_options) {
        header_options_apply_with(s->lr_options, h, log_field, s);
        s->lr_options = NULL;
    }
    if (mapper) {
        /* Envoy evaluates headers_to_add before the status rewrite: %RESPONSE_CODE% is the original */
        int final_status = s->status;
        s->status = original_status;
        lr_mapper_add_headers(mapper, h, log_field, s);
        s->status = final_status;
    }
    s->local_reply_encoding = true;
    encode_headers_in(s, h, blen == 0);
    if (blen && !s->over && !s->reset && s->local_reply) {
        struct herald_buf *b = herald_buf_new();
        herald_buf_add(b, body, blen);
        encode_data_in(s, b, true);
        herald_buf_free(b);
    }
    free(formatted);
    s->local_reply_encoding = nested;
}

static void send_local_reply(struct herald_http_stream *s, int status, const char *body, const char *details,
                             const char *flags)
{
    send_local_reply_grpc(s, status, -1, body, details, flags);
}

static void stream_over(struct herald_http_stream *s)
{
    if (s->over)
        return;
    s->over = true;
    s->dec.gen++;
    s->enc.gen++;
    if (s->timer)
        herald_timer_cancel(s->timer);
}

static void reset_stream(struct herald_http_stream *s, bool remote, const char *details)
{
    struct cm_conn *cc = s->cc;
    if (s->over)
        return;
    s->reset = true;
    if (remote) {
        herald_stat_inc(cc->cm->st.rq_rx_reset);
        add_flag(s, "DC");
        if (!s->details)
            set_details(s, details ? details : "downstream_remote_disconnect");
    } else {
        herald_stat_inc(cc->cm->st.rq_tx_reset);
        if (details)
            set_details(s, details);
    }
    if (cc->h2) {
        /* RST_STREAM: the connection and its other streams go on */
        if (s->h2id && !remote && !cc->gone)
            h2_server_reset(cc->h2, s->h2id, NGHTTP2_INTERNAL_ERROR);
        if (remote)
            s->h2id = 0;
    } else {
        /* an HTTP/1 stream cannot be reset without its connection */
        cc->close_after = true;
    }
    stream_over(s);
}

/* ---------------------------------------------------------------- access log */

static const char *num(char *scratch, size_t len, uint64_t v)
{
    snprintf(scratch, len, "%llu", (unsigned long long)v);
    return scratch;
}

static size_t flag_index(const char *flag)   /* ARRAY_SIZE(flag_names): not Envoy's */
{
    size_t k = 0;
    while (k < ARRAY_SIZE(flag_names) && strcmp(flag_names[k][0], flag))
        k++;
    return k;
}

/* RESPONSE_FLAGS(_LONG): Envoy's order, then flags herald does not know
 * (short names only) in the order they came. */
static const char *flags_field(const struct herald_http_stream *s, bool long_names, char *scratch, size_t len)
{
    size_t o = 0, at[MAX_FLAGS];
    for (size_t i = 0; i < s->nflags; i++)
        at[i] = flag_index(s->flags[i]);
    scratch[0] = '\0';
    for (size_t k = 0; k <= ARRAY_SIZE(flag_names); k++)
        for (size_t i = 0; i < s->nflags; i++)
            if (at[i] == k && o + 40 < len)
                o += (size_t)snprintf(scratch + o, len - o, "%s%s", o ? "," : "",
                                      k < ARRAY_SIZE(flag_names) ? flag_names[k][long_names] : s->flags[i]);
    return o ? scratch : NULL;
}

/* *_WIRE_BYTES_* / *_HEADER_BYTES_* (SENT or RECEIVED) of one side */
static const char *wire_field(const struct wire_bytes *w, const char *op, char *scratch, size_t len)
{
    bool hdr = strstr(op, "_HEADER_BYTES_") != NULL, sent = strstr(op, "_SENT") != NULL;
    return num(scratch, len, sent ? (hdr ? w->hdr_tx : w->wire_tx) : (hdr ? w->hdr_rx : w->wire_rx));
}

/* REQUEST_HEADERS_BYTES and the like: Envoy's byteSize(), names plus values. */
static const char *headers_bytes(const struct herald_headers *h, char *scratch, size_t len)
{
    size_t n;
    const struct header_field *f = headers_fields(h, &n);
    uint64_t b = 0;
    for (size_t i = 0; i < n; i++)
        b += f[i].nlen + f[i].vlen;
    return num(scratch, len, b);
}

/* v up to its query, in scratch */
static const char *without_query(const char *v, char *scratch, size_t len)
{
    const char *q = v ? strchr(v, '?') : NULL;
    if (!q)
        return v;
    snprintf(scratch, len, "%.*s", (int)(q - v), v);
    return scratch;
}

/* PATH(WQ|NQ:ORIG|PATH|ORIG_OR_PATH), the options checked when the format was parsed */
static const char *path_field(const struct herald_http_stream *s, const char *arg, char *scratch, size_t len)
{
    const char *colon = arg ? strchr(arg, ':') : NULL;
    const char *source = colon && colon[1] ? colon + 1 : "ORIG_OR_PATH";
    const char *v = NULL;
    if (!s->req)
        return NULL;
    if (strcmp(source, "PATH"))
        v = HEADERS_GET(s->req, "x-envoy-original-path");
    if (!v && strcmp(source, "ORIG"))
        v = HEADERS_GET(s->req, ":path");
    return arg && !strncmp(arg, "NQ", 2) ? without_query(v, scratch, len) : v;
}

/* QUERY_PARAM(name): the value of the first name=value in :path's query, as sent */
static const char *query_param(const struct herald_http_stream *s, const char *name, char *scratch, size_t len)
{
    const char *path = s->req ? HEADERS_GET(s->req, ":path") : NULL;
    const char *p = path ? strchr(path, '?') : NULL;
    size_t nlen = name ? strlen(name) : 0;
    if (!p || !nlen)
        return NULL;
    for (p++; *p && *p != '#';) {
        size_t n = strcspn(p, "&#");
        if (n > nlen && !memcmp(p, name, nlen) && p[nlen] == '=') {
            snprintf(scratch, len, "%.*s", (int)(n - nlen - 1), p + nlen + 1);
            return scratch;
        }
        p += n;
        if (*p == '&')
            p++;
    }
    return NULL;
}

/* GRPC_STATUS(fmt) for gRPC requests: grpc-status from the trailers, else the
 * headers (a trailers-only response), else inferred from the HTTP status as
 * Envoy does. */
static const char *const grpc_camel[] = {
    "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
    "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented",
    "Internal", "Unavailable", "DataLoss", "Unauthenticated",
};
static const char *const grpc_snake[] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
    "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
};

static const char *grpc_status_field(const struct herald_http_stream *s, const char *fmt, char *scratch, size_t len)
{
    if (!headers_is_grpc(s->req))
        return NULL;
    const char *v = s->resp_trailers ? HEADERS_GET(s->resp_trailers, "grpc-status") : NULL;
    if (!v || !*v)
        v = s->resp ? HEADERS_GET(s->resp, "grpc-status") : NULL;
    uint64_t code;
    if (v && *v) {
        char *end = NULL;
        if (*v < '0' || *v > '9')
            return NULL;
        code = strtoull(v, &end, 10);
        if (*end)
            return NULL;
    } else if (s->status) {
        switch (s->status) {
        case 400: code = 13; break;
        case 401: code = 16; break;
        case 403: code = 7; break;
        case 404: code = 12; break;
        case 429: case 502: case 503: case 504: code = 14; break;
        default: code = 2; break;
        }
    } else {
        return NULL;
    }
    if (fmt && !strcmp(fmt, "NUMBER"))
        return num(scratch, len, code);
    if (code < ARRAY_SIZE(grpc_camel))
        return fmt && !strcmp(fmt, "SNAKE_STRING") ? grpc_snake[code] : grpc_camel[code];
    return num(scratch, len, code);
}

/* REQ(A?B:N) style lookups: the first of the alternatives that is present. */
static const char *header_alt(const struct herald_headers *h, const char *arg)
{
    if (!h || !arg)
        return NULL;
    char name[256];
    const char *q = strchr(arg, '?');
    size_t n = q ? (size_t)(q - arg) : strlen(arg);
    snprintf(name, sizeof(name), "%.*s", (int)n, arg);
    const char *v = herald_headers_get(h, name);
    if (!v && q)
        v = herald_headers_get(h, q + 1);
    return v;
}

static const char *port_part(const char *addr, char *out, size_t len)
{
    const char *colon = strrchr(addr, ':');
    if (!colon || (addr[0] != '[' && strchr(addr, ':') != colon))
        return NULL;
    snprintf(out, len, "%s", colon + 1);
    return out;
}

static const char *without_port(const char *addr, char *out, size_t len)
{
    if (!addr)
        return NULL;
    strip_port(addr, out, len);
    return out;
}

static const char *log_field(void *ctx, const char *op, const char *arg, char *scratch, size_t len)
{
    struct herald_http_stream *s = ctx;
    struct herald_conn *c = s->cc->c;
    uint64_t end = s->last_tx_mono ? s->last_tx_mono : herald_now_ms();

    switch (op[0]) {
    case 'A':
        if (!strcmp(op, "ACCESS_LOG_TYPE"))
            return "DownstreamEnd";   /* herald writes HTTP logs when the stream ends */
        break;
    case 'B':
        if (!strcmp(op, "BYTES_RECEIVED"))
            return num(scratch, len, s->rx_body);
        if (!strcmp(op, "BYTES_SENT"))
            return num(scratch, len, s->tx_body);
        break;
    case 'C':
        if (!strcmp(op, "CONNECTION_ID"))
            return num(scratch, len, herald_conn_id(c));
        if (!strcmp(op, "CLUSTER_METADATA"))
            return herald_cluster_metadata(s->upstream_cluster, arg, scratch, len);
        break;
    case 'D':
        if (!strcmp(op, "DURATION"))
            return num(scratch, len, herald_now_ms() - s->start_mono);
        if (!strcmp(op, "DYNAMIC_METADATA") && arg) {
            char ns[128];
            const char *colon = strchr(arg, ':');
            if (!colon)
                return NULL;
            snprintf(ns, sizeof(ns), "%.*s", (int)(colon - arg), arg);
            return herald_http_stream_metadata_get(s, ns, colon + 1);
        }
        if (!strcmp(op, "DOWNSTREAM_REMOTE_ADDRESS")) {
            snprintf(scratch, len,
                     s->client_from_xff ? (strchr(s->client_addr, ':') ? "[%s]:0" : "%s:0") : "%s",
                     s->client_from_xff ? s->client_addr : herald_conn_remote_str(c));
            return scratch;
        }
        if (!strcmp(op, "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT"))
            return s->client_addr;
        if (!strcmp(op, "DOWNSTREAM_REMOTE_PORT"))
            return s->client_from_xff ? "0" : port_part(herald_conn_remote_str(c), scratch, len);
        if (!strncmp(op, "DOWNSTREAM_DIRECT_", 18)) {
            /* the socket's own addresses (DOWNSTREAM_REMOTE_* show a PROXY header's) */
            const char *rest = op + 18, *a;
            if (!strncmp(rest, "REMOTE_", 7)) {
                a = herald_conn_direct_remote_str(c);
                rest += 7;
            } else if (!strncmp(rest, "LOCAL_", 6)) {
                a = herald_conn_direct_local_str(c);
                rest += 6;
            } else {
                return NULL;
            }
            if (!strcmp(rest, "ADDRESS"))
                return a;
            if (!strcmp(rest, "ADDRESS_WITHOUT_PORT")) {
                strip_port(a, scratch, len);
                return scratch;
            }
            return !strcmp(rest, "PORT") ? port_part(a, scratch, len) : NULL;
        }
        if (!strcmp(op, "DOWNSTREAM_LOCAL_ADDRESS"))
            return herald_conn_local_str(c);
        if (!strcmp(op, "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT")) {
            strip_port(herald_conn_local_str(c), scratch, len);
            return scratch;
        }
        if (!strcmp(op, "DOWNSTREAM_LOCAL_PORT"))
            return port_part(herald_conn_local_str(c), scratch, len);
        if (!strncmp(op, "DOWNSTREAM_", 11) && (strstr(op, "_WIRE_BYTES_") || strstr(op, "_HEADER_BYTES_")))
            return wire_field(&s->dn, op, scratch, len);
        return herald_conn_tls_log_field(c, op, arg, scratch, len);   /* TLS and certificates */
    case 'F':
        if (!strcmp(op, "FILTER_CHAIN_NAME"))
            return herald_conn_filter_chain_name(c);
        break;
    case 'G':
        if (!strcmp(op, "GRPC_STATUS"))
            return grpc_status_field(s, arg, scratch, len);
        if (!strcmp(op, "GRPC_STATUS_NUMBER"))
            return grpc_status_field(s, "NUMBER", scratch, len);
        break;
    case 'H':
        if (!strcmp(op, LOG_FILTER_HEALTH_CHECK_QUERY))
            return s->health_check ? "1" : NULL;
        break;
    case 'L':
        if (!strcmp(op, "LOCAL_REPLY_BODY"))
            return s->local_reply_body;
        break;
    case 'Q':
        if (!strcmp(op, "QUERY_PARAM"))
            return query_param(s, arg, scratch, len);
        break;
    case 'P':
        if (!strcmp(op, "PATH"))
            return path_field(s, arg, scratch, len);
        if (!strcmp(op, "PROTOCOL"))
            return s->req ? (s->proto == HERALD_HTTP2    ? "HTTP/2"
                             : s->proto == HERALD_HTTP10 ? "HTTP/1.0"
                                                         : "HTTP/1.1")
                          : NULL;
        break;
    case 'R':
        if (!strcmp(op, "REQ"))
            return header_alt(s->req, arg);
        if (!strcmp(op, "REQ_ALL")) {   /* not a log operator: the header_filter's question */
            free(s->joined);
            return s->joined = herald_headers_get_all(s->req, arg);
        }
        if (!strcmp(op, "RESP"))
            return header_alt(s->resp, arg);
        if (!strcmp(op, "RESPONSE_CODE"))
            return num(scratch, len, (uint64_t)s->status);
        if (!strcmp(op, "RESPONSE_CODE_DETAILS"))
            return s->details ? s->details : (s->status ? "via_upstream" : NULL);
        if (!strcmp(op, "RESPONSE_FLAGS"))
            return flags_field(s, false, scratch, len);
        if (!strcmp(op, "RESPONSE_FLAGS_LONG"))
            return flags_field(s, true, scratch, len);
        if (!strcmp(op, "REQ_WITHOUT_QUERY"))
            return without_query(header_alt(s->req, arg), scratch, len);
        if (!strcmp(op, "REQUEST_HEADERS_BYTES"))
            return headers_bytes(s->req, scratch, len);
        if (!strcmp(op, "RESPONSE_HEADERS_BYTES"))
            return headers_bytes(s->resp, scratch, len);
        if (!strcmp(op, "RESPONSE_TRAILERS_BYTES"))
            return headers_bytes(s->resp_trailers, scratch, len);
        if (!strcmp(op, "REQUEST_TX_DURATION"))
            return s->upstream_tx_end_mono ? num(scratch, len, s->upstream_tx_end_mono - s->start_mono) : NULL;
        if (!strcmp(op, "REQUEST_DURATION"))
            return s->request_complete && s->last_rx_mono ? num(scratch, len, s->last_rx_mono - s->start_mono)
                                                          : NULL;
        if (!strcmp(op, "RESPONSE_DURATION"))
            return s->first_tx_mono ? num(scratch, len, s->first_tx_mono - s->start_mono) : NULL;
        if (!strcmp(op, "RESPONSE_TX_DURATION"))
            return s->first_tx_mono && s->response_complete ? num(scratch, len, end - s->first_tx_mono)
                                                            : NULL;
        if (!strcmp(op, "REQUESTED_SERVER_NAME"))
            return herald_conn_server_name(c);
        if (!strcmp(op, "ROUTE_NAME")) {
            const struct herald_route *r = s->route_valid ? s->route : NULL;
            const char *n = r ? herald_route_name(r) : NULL;
            return n && *n ? n : NULL;
        }
        break;
    case 'S':
        if (!strcmp(op, "START_TIME"))
            return herald_access_log_format_time(s->start_wall_ms, arg, scratch, len);
        if (!strcmp(op, "STREAM_ID"))
            return s->req ? HEADERS_GET(s->req, "x-request-id") : NULL;
        break;
    case 'T':
        if (!strcmp(op, "TRAILER"))
            return header_alt(s->resp_trailers, arg);
        break;
    case 'V':
        if (!strcmp(op, "VIRTUAL_CLUSTER_NAME"))
            return s->vcluster;
        break;
    case 'U':
        if (!strcmp(op, "UPSTREAM_HOST") || !strcmp(op, "UPSTREAM_REMOTE_ADDRESS"))
            return s->upstream_host;
        if (!strcmp(op, "UPSTREAM_CLUSTER") || !strcmp(op, "UPSTREAM_CLUSTER_RAW"))
            return s->upstream_cluster;
        if (!strcmp(op, "UPSTREAM_TRANSPORT_FAILURE_REASON"))
            return s->upstream_failure;
        if (!strcmp(op, "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT"))
            return without_port(s->upstream_host, scratch, len);
        if (!strcmp(op, "UPSTREAM_REMOTE_PORT"))
            return s->upstream_host ? port_part(s->upstream_host, scratch, len) : NULL;
        if (!strcmp(op, "UPSTREAM_REQUEST_ATTEMPT_COUNT"))
            return s->upstream_attempts ? num(scratch, len, s->upstream_attempts) : NULL;
        if (!strcmp(op, "UNIQUE_ID"))
            return s->req ? HEADERS_GET(s->req, "x-request-id") : NULL;
        if (strstr(op, "_WIRE_BYTES_") || strstr(op, "_HEADER_BYTES_"))
            return wire_field(&s->up, op, scratch, len);
        if (!strcmp(op, "UPSTREAM_METADATA"))
            return herald_upstream_metadata(s->upstream_cluster, s->upstream_host, arg, scratch, len);
        if (!strcmp(op, "UPSTREAM_HOST_NAME"))   /* the DNS name, else the address */
            return s->upstream_hostname ? s->upstream_hostname : s->upstream_host;
        if (!strcmp(op, "UPSTREAM_HOST_NAME_WITHOUT_PORT"))
            return s->upstream_hostname ? without_port(s->upstream_hostname, scratch, len)
                                        : without_port(s->upstream_host, scratch, len);
        if (!s->upstream_local[0])
            break;   /* the rest describe the connection the last attempt got: none */
        if (!strcmp(op, "UPSTREAM_LOCAL_ADDRESS"))
            return s->upstream_local;
        if (!strcmp(op, "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT"))
            return without_port(s->upstream_local, scratch, len);
        if (!strcmp(op, "UPSTREAM_LOCAL_PORT"))
            return port_part(s->upstream_local, scratch, len);
        if (!strcmp(op, "UPSTREAM_CONNECTION_POOL_READY_DURATION"))
            return num(scratch, len, s->upstream_ready_ms);
        if (!strcmp(op, "UPSTREAM_CONNECTION_ID"))
            return num(scratch, len, s->upstream_conn_id);
        if (!strcmp(op, "UPSTREAM_PROTOCOL"))
            return s->upstream_protocol;
        return tls_log_upstream_field(s->upstream_tls, op, arg, scratch, len);   /* TLS and certificates */
    }
    return NULL;
}

/* ---------------------------------------------------------------- stream life */

static void stream_timer_arm(struct herald_http_stream *s);
static void on_stream_timer(struct herald_timer *t, void *arg);

static struct herald_http_stream *stream_new(struct cm_conn *cc)
{
    struct herald_http_cm *cm = cc->cm;
    struct herald_http_stream *s = mem_cache_alloc_zeroed(sizeof(*s));
    uint64_t now = herald_now_ms();

    s->cc = cc;
    s->id = __atomic_add_fetch(&next_stream_id, 1, __ATOMIC_RELAXED);
    s->dec.hold_pos = s->enc.hold_pos = NONE;
    if (!cc->h2 && cc->above_high)
        s->wm_above = WM_DOWNSTREAM;   /* the client is not taking output: encode_blocked says so */
    s->dec.n = cm->nfilters;
    s->dec_cur = NONE;
    s->proto = HERALD_HTTP11;
    s->start_wall_ms = wall_ms();
    s->start_mono = s->last_activity = now;
    strip_port(herald_conn_remote_str(cc->c), s->client_addr, sizeof(s->client_addr));
    if (cm->request_headers_timeout_ms)
        s->deadline_headers = now + cm->request_headers_timeout_ms;
    if (cm->request_timeout_ms)
        s->deadline_request = now + cm->request_timeout_ms;
    if (cm->max_stream_duration_ms)
        s->deadline_max = now + cm->max_stream_duration_ms;
    s->timer = herald_timer_new(on_stream_timer, s);
    stream_timer_arm(s);
    cc->nrequests++;
    herald_stat_inc(cm->st.rq_total);
    if (cc->h2) {
        s->proto = HERALD_HTTP2;
        s->next = cc->h2streams;
        if (s->next)
            s->next->prev = s;
        cc->h2streams = s;
        cc->nh2streams++;
        herald_stat_inc(cm->st.rq_http2_total);
        if (cm->max_requests_per_connection && cc->nrequests == cm->max_requests_per_connection) {
            /* this one is served; GOAWAY tells the client to open another connection */
            herald_stat_inc(cm->st.cx_max_requests_reached);
            h2_drain(cc);
        } else if (!cc->draining && overload_action_on(OVERLOAD_DISABLE_HTTP_KEEPALIVE)) {
            /* HTTP/2's "Connection: close", as Envoy: the streams in flight finish, the
             * client takes its next requests elsewhere */
            herald_stat_inc(cm->st.cx_overload_disable_keepalive);
            h2_drain(cc);
        }
    } else {
        cc->stream = s;
        herald_stat_inc(cm->st.rq_http1_total);
    }
    herald_gauge_add(cm->st.rq_active, 1);
    if (cc->idle_timer)
        herald_timer_cancel(cc->idle_timer);
    return s;
}

/* the stream's array of filter sessions (one per request: from mem_cache) */
static size_t sessions_size(const struct herald_http_cm *cm)
{
    return (cm->nfilters ? cm->nfilters : 1) * sizeof(void *);
}

/* on_complete, the access log, the filters' session_destroy, free. Only
 * with no filter callback of this stream on the stack. */
static void stream_finish(struct herald_http_stream *s)
{
    struct cm_conn *cc = s->cc;
    struct herald_http_cm *cm = cc->cm;

    if (s->timer)
        herald_timer_free(s->timer);
    s->timer = NULL;
    if (s->sessions) {
        for (size_t i = 0; i < cm->nfilters; i++)
            if (s->sessions[i] && cm->filters[i].ops->on_complete)
                cm->filters[i].ops->on_complete(s->sessions[i]);
    }
    if (!s->response_started && !s->status)
        s->status = 0;
    for (size_t i = 0; i < cm->nlogs; i++)
        herald_access_log_write(cm->logs[i], log_field, s);
    if (s->sessions) {
        for (size_t i = cm->nfilters; i-- > 0;)
            if (s->sessions[i] && cm->filters[i].ops->session_destroy)
                cm->filters[i].ops->session_destroy(s->sessions[i]);
        mem_cache_free(s->sessions, sessions_size(cm));
    }
    herald_gauge_add(cm->st.rq_active, -1);
    herald_histogram_record(cm->st.rq_time, herald_now_ms() - s->start_mono);
    if (s->upgraded)
        herald_gauge_add(cm->st.cx_upgrades_active, -1);
    if (cc->h2) {
        if (s->h2id && cc->h2)
            h2_server_detach(cc->h2, s->h2id);
        if (s->prev)
            s->prev->next = s->next;
        else if (cc->h2streams == s)
            cc->h2streams = s->next;
        if (s->next)
            s->next->prev = s->prev;
        cc->nh2streams--;
    } else if (cc->decode_paused) {
        cc->decode_paused = false;
        if (!cc->gone && !cc->closing)
            herald_conn_resume_reading(cc->c, PAUSE_DECODE);
    }
    for (int k = 0; k < 2; k++) {
        struct fdir *d = k ? &s->enc : &s->dec;
        if (d->held)
            herald_buf_free(d->held);
        if (d->added)
            herald_buf_free(d->added);
        herald_headers_free(d->trailers);
    }
    herald_headers_free(s->req);
    herald_headers_free(s->lr_extra);
    herald_headers_free(s->resp);
    herald_headers_free(s->resp_trailers);
    metadata_free(&s->meta);
    free(s->joined);
    free(s->details_owned);
    if (s->upstream_cluster != s->upstream_cluster_inline)
        free(s->upstream_cluster);
    if (s->upstream_host != s->upstream_host_inline)
        free(s->upstream_host);
    free(s->upstream_failure);
    if (s->upstream_hostname)   /* both rare: spare every stream two calls */
        free(s->upstream_hostname);
    if (s->local_reply_body)
        free(s->local_reply_body);
    SSL_SESSION_free(s->upstream_tls);
    free(s->upgrade_type);
    if (cc->stream == s)
        cc->stream = NULL;
    mem_cache_free(s, sizeof(*s));
}

/* The outermost entry is unwinding: tear down a finished stream, then
 * close the connection or go on with the next request. */
static void settle_h2(struct cm_conn *cc)
{
    bool finished = false;
    for (struct herald_http_stream *s = cc->h2streams, *nx; s; s = nx) {
        nx = s->next;
        if (s->over) {
            stream_finish(s);
            finished = true;
        }
    }
    if (cc->gone || cc->closing || cc->h2streams)
        return;
    /* HTTP/2 closes for the connection's reasons only (close_after is HTTP/1's);
     * a drain that is only announced waits for the streams still on their way */
    if ((cc->draining && !cc->h2_announced) || cc->read_eof) {
        close_conn(cc, HERALD_CLOSE_FLUSH);
        return;
    }
    if (finished && cc->cm->idle_timeout_ms)
        idle_arm_configured(cc, true);
}

static bool any_over(struct cm_conn *cc)
{
    if (cc->stream && cc->stream->over)
        return true;
    for (struct herald_http_stream *s = cc->h2streams; s; s = s->next)
        if (s->over)
            return true;
    return false;
}

static void settle(struct cm_conn *cc)
{
    struct herald_http_stream *s = cc->stream;

    if (cc->h2) {
        settle_h2(cc);
        return;
    }
    if (!s || !s->over)
        return;
    stream_finish(s);
    if (cc->gone || cc->closing)
        return;
    if (cc->close_after || cc->codec_dead) {
        close_conn(cc, HERALD_CLOSE_FLUSH);
        return;
    }
    if (cc->pipeline_paused) {
        cc->pipeline_paused = false;
        if (!cc->decode_paused)
            h1_codec_resume(cc->codec);
    }
    if (cc->cm->idle_timeout_ms)
        idle_arm_configured(cc, true);
    if (cc->in && evbuffer_get_length(buf_ev(cc->in)) > 0)
        herald_conn_resume_reading(cc->c, PAUSE_KICK);
    else if (cc->read_eof)
        close_conn(cc, HERALD_CLOSE_FLUSH);
}

static void leave(struct cm_conn *cc)
{
    if (--cc->depth != 0)
        return;
    if (any_over(cc)) {
        if (cc->h2 && cc->cm->log_dn_wire)
            h2_out(cc);   /* the finished streams' frames out first: their logs count them */
        settle(cc);
    }
    h2_out(cc);
}

/* An SDK call by a filter from its own event (an upstream callback): the
 * filter's frame is still live above us, so the teardown waits a turn. On
 * HTTP/2 the frames wait that turn too: the responses of every stream that
 * got one in this loop iteration go through nghttp2's send loop together. */
static void leave_sdk(struct cm_conn *cc)
{
    if (--cc->depth != 0)
        return;
    if ((cc->h2 || any_over(cc)) && cc->finish_timer)
        herald_timer_arm(cc->finish_timer, 0);
    else
        h2_out(cc);
}

static void on_finish_timer(struct herald_timer *t, void *arg)
{
    struct cm_conn *cc = arg;
    enter(cc);
    leave(cc);
}

/* ---------------------------------------------------------------- the request side */

/* Envoy's internal-only request headers, removed from edge requests. */
static const char *const internal_only[] = {
    "x-envoy-decorator-operation", "x-envoy-downstream-service-cluster", "x-envoy-downstream-service-node",
    "x-envoy-expected-rq-timeout-ms", "x-envoy-external-address", "x-envoy-force-trace", "x-envoy-ip-tags",
    "x-envoy-retriable-header-names", "x-envoy-retriable-status-codes", "x-envoy-retry-grpc-on",
    "x-envoy-retry-on", "x-envoy-upstream-alt-stat-name", "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response", "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-hedge-on-per-try-timeout", "x-envoy-max-retries", "x-envoy-upstream-stream-duration-ms",
    "x-envoy-original-path", NULL,
};

/* Envoy: the HCM must list the type; the route's entry for it, if any,
 * overrides the HCM's `enabled`. */
static bool upgrade_allowed(struct herald_http_stream *s, const char *type)
{
    struct herald_http_cm *cm = s->cc->cm;
    for (size_t i = 0; i < cm->nupgrades; i++) {
        if (strcasecmp(type, cm->upgrades[i]))
            continue;
        const struct herald_route *r = stream_route(s);
        int o = r ? route_upgrade_override(r, type) : -1;
        return o < 0 ? cm->upgrade_enabled[i] : o == 1;
    }
    return false;
}

/* x-forwarded-for, x-forwarded-proto, x-envoy-internal, x-request-id as
 * Envoy's ConnectionManagerUtility::mutateRequestHeaders does them. */
static void mutate_forwarding(struct herald_http_stream *s)
{
    struct herald_http_cm *cm = s->cc->cm;
    struct herald_headers *h = s->req;
    char peer[64];
    bool internal;

    strip_port(herald_conn_remote_str(s->cc->c), peer, sizeof(peer));
    const char *xff = HEADERS_GET(h, "x-forwarded-for");
    if (cm->use_remote_address) {
        copy_n(s->client_addr, sizeof(s->client_addr), peer, strlen(peer));
        internal = internal_ip(peer);
        if (!cm->skip_xff_append) {
            if (xff && *xff) {
                char *v = xasprintf("%s,%s", xff, peer);
                herald_headers_set(h, "x-forwarded-for", v);
                free(v);
            } else {
                herald_headers_set(h, "x-forwarded-for", peer);
            }
        }
    } else {
        /* the client is the (hops+1)th address from the right */
        const char *ents[64];
        size_t lens[64], n = 0;
        for (const char *p = xff; p && *p && n < 64;) {
            const char *e = strchr(p, ',');
            const char *b = p, *ee = e ? e : p + strlen(p);
            trim(&b, &ee);
            ents[n] = b;
            lens[n++] = (size_t)(ee - b);
            p = e ? e + 1 : NULL;
        }
        copy_n(s->client_addr, sizeof(s->client_addr), peer, strlen(peer));
        if (n > cm->xff_num_trusted_hops) {
            size_t k = n - 1 - cm->xff_num_trusted_hops;
            char ip[64];
            struct in6_addr tmp;
            snprintf(ip, sizeof(ip), "%.*s", (int)(lens[k] < 63 ? lens[k] : 63), ents[k]);
            if (inet_pton(AF_INET, ip, &tmp) == 1 || inet_pton(AF_INET6, ip, &tmp) == 1) {
                snprintf(s->client_addr, sizeof(s->client_addr), "%s", ip);
                s->client_from_xff = true;
            }
        }
        internal = false;
        if (n == 1 && s->client_from_xff)
            internal = internal_ip(s->client_addr);
    }
    bool edge = cm->use_remote_address && !internal;
    if (internal) {
        herald_headers_set(h, "x-envoy-internal", "true");
    } else {
        herald_headers_remove(h, "x-envoy-internal");
        if (edge)
            for (size_t i = 0; internal_only[i]; i++)
                herald_headers_remove(h, internal_only[i]);
    }
    if (edge)
        herald_headers_set(h, "x-envoy-external-address", s->client_addr);
    if (cm->use_remote_address || !HEADERS_GET(h, "x-forwarded-proto"))
        herald_headers_set(h, "x-forwarded-proto", herald_conn_is_tls(s->cc->c) ? "https" : "http");
    if (!cm->keep_xfcc)
        herald_headers_remove(h, "x-forwarded-client-cert");
    if (cm->generate_request_id &&
        (!HEADERS_GET(h, "x-request-id") || (edge && !cm->preserve_external_request_id))) {
        char id[37];
        uuid4(id);
        herald_headers_set(h, "x-request-id", id);
    }
    if (cm->via) {
        const char *v = HEADERS_GET(h, "via");
        if (v) {
            char *nv = xasprintf("%s, %s", v, cm->via);
            herald_headers_set(h, "via", nv);
            free(nv);
        } else {
            herald_headers_set(h, "via", cm->via);
        }
    }
}

static void fix_host(struct herald_http_stream *s)
{
    struct herald_http_cm *cm = s->cc->cm;
    const char *a = HEADERS_GET(s->req, ":authority");
    if (!a)
        return;
    /* host[:port] or [v6][:port]; most requests need no change, so the
     * new value is only built when one is due */
    size_t n = strlen(a);
    const char *colon = a[0] == '[' ? (strchr(a, ']') ? strchr(a, ']') + 1 : NULL) : strrchr(a, ':');
    if (colon && *colon != ':')
        colon = NULL;
    if (colon && a[0] != '[' && strchr(a, ':') != colon)
        colon = NULL; /* a bare IPv6 address */
    size_t host_end = colon ? (size_t)(colon - a) : n;   /* where the port (or the end) starts */
    bool drop_port = false;
    if (colon && (cm->strip_any_host_port || cm->strip_matching_host_port)) {
        char lp[16] = "";
        port_part(herald_conn_local_str(s->cc->c), lp, sizeof(lp));
        drop_port = cm->strip_any_host_port || !strcmp(colon + 1, lp);
    }
    bool drop_dot = cm->strip_trailing_host_dot && host_end > 0 && a[host_end - 1] == '.';
    if (!drop_port && !drop_dot)
        return;
    char small[256], *h = n < sizeof(small) ? small : xmalloc(n + 1);
    size_t k = host_end - (drop_dot ? 1 : 0);
    memcpy(h, a, k);
    if (!drop_port) {
        memcpy(h + k, a + host_end, n - host_end);
        k += n - host_end;
    }
    h[k] = '\0';
    herald_headers_set(s->req, ":authority", h);
    if (h != small)
        free(h);
}

/* RFC 8441: an HTTP/2 CONNECT with :protocol (nghttp2 lets it in only when
 * allow_connect advertised SETTINGS_ENABLE_CONNECT_PROTOCOL) is an HTTP/1.1
 * Upgrade in another form; made into one here, as Envoy's
 * transformUpgradeRequestFromH2toH1, so that filters, routes and upstreams
 * see the upgrade they know. A WebSocket upgrade gets the Sec-WebSocket-Key
 * an HTTP/1.1 server asks for (RFC 8441 has none). */
static void ext_connect_to_upgrade(struct herald_headers *h)
{
    char *proto = xstrdup(HEADERS_GET(h, ":protocol"));
    herald_headers_set(h, ":method", "GET");
    herald_headers_remove(h, ":protocol");
    herald_headers_set(h, "upgrade", proto);
    herald_headers_set(h, "connection", "upgrade");
    if (!strcasecmp(proto, "websocket") && !HEADERS_GET(h, "sec-websocket-key")) {
        uint64_t r[2] = {rnd64(), rnd64()};
        unsigned char key[25];                           /* 16 bytes in base64, and the NUL */
        EVP_EncodeBlock(key, (const unsigned char *)r, sizeof(r));
        herald_headers_set(h, "sec-websocket-key", (const char *)key);
    }
    free(proto);
}

/* Validates and rewrites the request before the filters see it. false: a
 * local reply was sent. *end_stream may turn false (an upgrade stays open). */
static bool prepare_request(struct herald_http_stream *s, bool *end_stream)
{
    struct cm_conn *cc = s->cc;
    struct herald_http_cm *cm = cc->cm;
    struct herald_headers *h = s->req;
    bool ext_connect = cc->h2 && HEADERS_GET(h, ":protocol");
    if (ext_connect)
        ext_connect_to_upgrade(h);
    const char *method = HEADERS_GET(h, ":method");
    bool connect = method && !strcmp(method, "CONNECT");

    s->head = method && !strcmp(method, "HEAD");
    if (overload_action_on(OVERLOAD_STOP_ACCEPTING_REQUESTS)) {
        /* the overload manager's stop_accepting_requests: Envoy's answer */
        herald_stat_inc(cm->st.rq_overload_close);
        send_local_reply(s, 503, "envoy overloaded", "overload", "OM");
        return false;
    }
    if (cc->h2 && connect && !cm->h2_allow_connect) {
        /* Envoy's HTTP/2 codec refuses CONNECT unless allow_connect */
        herald_stat_inc(cm->st.rq_ws_on_non_ws_route);
        send_local_reply(s, 403, "", "upgrade_failed", NULL);
        return false;
    }
    if (s->proto == HERALD_HTTP10 && !cm->accept_http_10) {
        cc->close_after = true;
        send_local_reply(s, 426, "Upgrade Required", "low_version", NULL);
        return false;
    }
    if (!HEADERS_GET(h, ":authority")) {
        if (s->proto == HERALD_HTTP10 && cm->default_host_for_http_10) {
            herald_headers_set(h, ":authority", cm->default_host_for_http_10);
        } else {
            cc->close_after = true;
            send_local_reply(s, 400, "Bad Request", "missing_host_header", NULL);
            return false;
        }
    }
    if (!connect) {
        const char *path = HEADERS_GET(h, ":path");
        if (!path || !*path) {
            cc->close_after = true;
            send_local_reply(s, 400, "Bad Request", "missing_path_rejected", NULL);
            return false;
        }
        if (!strncasecmp(path, "http://", 7) || !strncasecmp(path, "https://", 8)) {
            if (!cm->allow_absolute_url) {
                cc->close_after = true;
                send_local_reply(s, 400, "Bad Request", "http1.invalid_url", NULL);
                return false;
            }
            /* absolute-form: the authority came from the URL; route on the path */
            const char *rest = strstr(path, "://") + 3;
            const char *slash = rest + strcspn(rest, "/?");
            char *np = xasprintf("%s%s", *slash == '/' ? "" : "/", slash);
            herald_headers_set(h, ":path", np);
            free(np);
            path = HEADERS_GET(h, ":path");
        }
        if (path[0] != '/' && !(method && !strcmp(method, "OPTIONS") && !strcmp(path, "*"))) {
            herald_stat_inc(cm->st.rq_non_relative_path);
            send_local_reply(s, 404, "", "absolute_path_rejected", NULL);
            return false;
        }
        if (path[0] == '/') {
            bool redirect = false;
            if (cm->escaped_slashes != ESC_KEEP && has_escaped_slash(path)) {
                /* Envoy rejects the gRPC requests it would redirect: a gRPC
                 * client does not follow redirects */
                if (cm->escaped_slashes == ESC_REJECT ||
                    (cm->escaped_slashes == ESC_UNESCAPE_REDIRECT && headers_is_grpc(h))) {
                    herald_stat_inc(cm->st.rq_failed_path_normalization);
                    send_local_reply(s, 400, "Bad Request", "path_normalization_failed", NULL);
                    return false;
                }
                char *np = xstrdup(path);
                unescape_slashes(np);
                herald_headers_set(h, ":path", np);
                free(np);
                redirect = cm->escaped_slashes == ESC_UNESCAPE_REDIRECT;
            }
            if (cm->normalize_path || cm->merge_slashes) {
                char *np = xstrdup(HEADERS_GET(h, ":path"));
                if (cm->normalize_path && normalize_path(&np) < 0) {
                    free(np);
                    herald_stat_inc(cm->st.rq_failed_path_normalization);
                    send_local_reply(s, 400, "Bad Request", "path_normalization_failed", NULL);
                    return false;
                }
                if (cm->merge_slashes)
                    merge_slashes(np);
                herald_headers_set(h, ":path", np);
                free(np);
            }
            if (redirect) {
                /* UNESCAPE_AND_REDIRECT: the client asks again for the path
                 * every party now agrees on (Envoy's 307, after normalization) */
                herald_stat_inc(cm->st.rq_redirected_normalized);
                herald_http_stream_add_local_reply_header(s, "location", HEADERS_GET(h, ":path"));
                send_local_reply(s, 307, "", "path_normalization_failed", NULL);
                return false;
            }
        }
    }
    fix_host(s);
    if (cm->underscores != US_ALLOW) {
        for (size_t i = 0; i < herald_headers_count(h);) {
            const char *name;
            herald_headers_at(h, i, &name, NULL);
            if (name[0] != ':' && strchr(name, '_')) {
                if (cm->underscores == US_REJECT) {
                    herald_stat_inc(cc->h2 ? cm->st.h2_rejected_underscores : cm->st.rejected_underscores);
                    cc->close_after = true;
                    send_local_reply(s, 400, "Bad Request", "http1.invalid_characters", NULL);
                    return false;
                }
                herald_stat_inc(cc->h2 ? cm->st.h2_dropped_underscores : cm->st.dropped_underscores);
                headers_remove_at(h, i);
                continue;
            }
            i++;
        }
    }

    /* hop-by-hop */
    const char *up = HEADERS_GET(h, "upgrade");
    bool codec_upgrade = !cc->h2 && h1_codec_is_upgrade(cc->codec);
    headers_remove_hop_by_hop(h, HOP_KEEP_ALIVE | HOP_PROXY_CONNECTION | HOP_TRANSFER_ENCODING);
    const char *te = HEADERS_GET(h, "te");
    if (te) {
        if (headers_has_token(h, "te", "trailers"))
            herald_headers_set(h, "te", "trailers");
        else
            herald_headers_remove(h, "te");
    }
    mutate_forwarding(s);

    if (cc->h2 && (connect || ext_connect)) {
        /* HTTP/2's upgrades: CONNECT, and RFC 8441's made an HTTP/1.1 Upgrade
         * above; the stream is the tunnel, its DATA both ways, END_STREAM each
         * side's end */
        const char *type = connect ? "CONNECT" : up;
        if (connect)
            headers_remove_hop_by_hop(h, HOP_CONNECTION | HOP_UPGRADE);
        if (!upgrade_allowed(s, type)) {
            herald_stat_inc(cm->st.rq_ws_on_non_ws_route);
            send_local_reply(s, 403, "", "upgrade_failed", NULL);
            return false;
        }
        s->upgrade_requested = true;
        s->upgrade_type = xstrdup(type);
    } else if (codec_upgrade && (connect || up)) {
        char type[64];
        snprintf(type, sizeof(type), "%s", connect ? "CONNECT" : up);
        type[strcspn(type, " ,\t")] = '\0';
        if (!connect && !strcasecmp(type, "h2c")) {
            /* Envoy drops an h2c upgrade and answers over HTTP/1.1 */
            h1_codec_cancel_upgrade(cc->codec);
            herald_headers_remove(h, "upgrade");
            herald_headers_remove(h, "http2-settings");
            herald_headers_remove(h, "connection");
            return true;
        }
        if (!upgrade_allowed(s, type)) {
            herald_stat_inc(cm->st.rq_ws_on_non_ws_route);
            h1_codec_cancel_upgrade(cc->codec);
            cc->close_after = true;
            send_local_reply(s, 403, "", "upgrade_failed", NULL);
            return false;
        }
        s->upgrade_requested = true;
        s->upgrade_type = xstrdup(type);
        if (!connect) {
            herald_headers_set(h, "upgrade", up);
            herald_headers_set(h, "connection", "upgrade");
        }
        *end_stream = false;
    } else {
        headers_remove_hop_by_hop(h, HOP_CONNECTION | HOP_UPGRADE);
        if (codec_upgrade)
            h1_codec_cancel_upgrade(cc->codec);
    }
    if (cc->h2) {
        if (cc->cm->scheme_overwrite)
            herald_headers_set(h, ":scheme", cc->cm->scheme_overwrite);
        else if (!HEADERS_GET(h, ":scheme"))
            herald_headers_set(h, ":scheme", herald_conn_is_tls(cc->c) ? "https" : "http");
        const char *ex = HEADERS_GET(h, "expect");
        if (ex && !strcasecmp(ex, "100-continue")) {
            herald_headers_remove(h, "expect");
            s->expect_continue = true;
            if (!*end_stream && s->h2id) {
                struct herald_headers *c100 = herald_headers_new();
                herald_headers_add(c100, ":status", "100");
                h2_server_submit_headers(cc->h2, s->h2id, c100, false);
                herald_headers_free(c100);
            }
        }
        return true;
    }
    /* HTTP/1 carries no scheme: Envoy's is the sanitized x-forwarded-proto
     * (mutate_forwarding ran), else the connection's */
    if (cc->cm->scheme_overwrite) {
        herald_headers_set(h, ":scheme", cc->cm->scheme_overwrite);
    } else if (!HEADERS_GET(h, ":scheme")) {
        const char *xfp = HEADERS_GET(h, "x-forwarded-proto");
        bool https = xfp ? !strcasecmp(xfp, "https") : herald_conn_is_tls(cc->c);
        herald_headers_set(h, ":scheme", https ? "https" : "http");
    }
    if (h1_codec_expect_continue(cc->codec)) {
        /* proxy_100_continue is false: answer it here and do not pass it on */
        herald_headers_remove(h, "expect");
        s->expect_continue = true;
        if (!*end_stream) {
            size_t queued = h1_queued(cc);
            h1_encode_100_continue(cc->wbuf);
            h1_count_tx(s, queued, true);
            write_out(cc);
        }
    }
    return true;
}

/* Whether filter i runs for a stream on route r: the most specific
 * typed_per_filter_config entry for it decides, else http_filters[].disabled. */
static bool filter_on(const struct herald_http_cm *cm, const struct herald_route *r, size_t i)
{
    const struct route_filter_config *fc;
    if (r && route_filter_config_chain(r, i, &fc, 1))
        return !fc->disabled;
    return !cm->filters[i].default_off;
}

static void make_filters(struct herald_http_stream *s)
{
    struct herald_http_cm *cm = s->cc->cm;
    s->sessions = mem_cache_alloc_zeroed(sessions_size(cm));
    s->filters_made = true;
    const struct herald_route *r = cm->route_toggles ? stream_route(s) : NULL;
    for (size_t i = 0; i < cm->nfilters; i++) {
        if (!cm->filters[i].ops->session_new)
            continue;
        if (cm->route_toggles && !filter_on(cm, r, i))
            continue;      /* no session: the walk passes it by */
        s->sessions[i] = cm->filters[i].ops->session_new(cm->filters[i].conf, s);
        if (!s->sessions[i]) {
            s->dec.pos = i; /* those before it see the reply */
            send_local_reply(s, 500, "Internal Server Error", "filter_chain_not_created", NULL);
            return;
        }
    }
}

/* ---------------------------------------------------------------- codec callbacks */

static void c_message_begin(void *arg)
{
    struct cm_conn *cc = arg;
    if (!cc->stream)
        stream_new(cc);
}

static void req_complete(struct herald_http_stream *s)
{
    s->request_complete = true;
    s->deadline_request = 0;
    if (!s->last_rx_mono)
        s->last_rx_mono = herald_now_ms();
    maybe_over(s);
}

static void req_headers(struct herald_http_stream *s, struct herald_headers *h, bool end_stream)
{
    struct cm_conn *cc = s->cc;

    if (s->req || s->over) {
        herald_headers_free(h);
        return;
    }
    s->req = h;
    s->proto = cc->h2 ? HERALD_HTTP2 : h1_codec_protocol(cc->codec);
    s->deadline_headers = 0;
    touch(s);
    if (end_stream)
        s->last_rx_mono = herald_now_ms();
    /* known before on_complete: the response may be written from decode_headers */
    s->request_complete = end_stream;
    if (!prepare_request(s, &end_stream))
        return;
    make_filters(s);
    if (s->local_reply || s->over)
        return;
    struct fdir *d = &s->dec;
    d->headers_in = true;
    d->headers_end = end_stream;
    d->end_in = end_stream;
    run_headers(s, false, 0);
}

/* what the HTTP/1 codec has read of the stream's request so far */
static void h1_rx_bytes(struct cm_conn *cc, struct herald_http_stream *s)
{
    if (!cc->cm->log_dn_wire)
        return;
    s->dn.hdr_rx = h1_codec_head_bytes(cc->codec);
    s->dn.wire_rx = h1_codec_wire_bytes(cc->codec);
}

static void c_headers(void *arg, struct herald_headers *h, bool end_stream)
{
    struct cm_conn *cc = arg;
    struct herald_http_stream *s = cc->stream ? cc->stream : stream_new(cc);
    h1_rx_bytes(cc, s);
    req_headers(s, h, end_stream);
}

static void req_data(struct herald_http_stream *s, struct evbuffer *chunk, bool end_stream)
{
    s->rx_body += evbuffer_get_length(chunk);
    s->last_rx_mono = herald_now_ms();
    touch(s);
    if (s->local_reply || s->over || s->reset || !s->dec.headers_in || s->dec.end_in)
        return;
    if (end_stream)
        s->request_complete = true;
    s->dec.end_in = end_stream;
    run_data(s, false, 0, ev_buf(chunk), end_stream);
}

static void c_data(void *arg, struct evbuffer *chunk, bool end_stream)
{
    struct cm_conn *cc = arg;
    if (!cc->stream)
        return;
    h1_rx_bytes(cc, cc->stream);
    req_data(cc->stream, chunk, end_stream);
}

static void req_trailers(struct herald_http_stream *s, struct herald_headers *t)
{
    if (!s || s->local_reply || s->over || s->reset || !s->dec.headers_in || s->dec.end_in) {
        herald_headers_free(t);
        return;
    }
    touch(s);
    s->last_rx_mono = herald_now_ms();
    s->request_complete = true;
    s->dec.end_in = true;
    s->dec.trailers = t;
    s->dec.trailers_pos = 0;
    run_trailers(s, false, 0);
}

static void c_trailers(void *arg, struct herald_headers *t)
{
    struct cm_conn *cc = arg;
    if (cc->stream)
        h1_rx_bytes(cc, cc->stream);
    req_trailers(cc->stream, t);
}

static void c_complete(void *arg)
{
    struct cm_conn *cc = arg;
    struct herald_http_stream *s = cc->stream;

    /* the codec paused itself: the next request waits for this one */
    cc->pipeline_paused = true;
    cc->client_done = !h1_codec_keep_alive(cc->codec);
    if (!s)
        return;
    h1_rx_bytes(cc, s);
    req_complete(s);
}

static void c_error(void *arg, int status, const char *details)
{
    struct cm_conn *cc = arg;
    struct herald_http_stream *s = cc->stream ? cc->stream : stream_new(cc);

    cc->codec_dead = true;
    cc->close_after = true;
    herald_stat_inc(cc->cm->st.cx_protocol_error);
    if (status == 413)
        herald_stat_inc(cc->cm->st.rq_too_large);
    if (s->over)
        return;
    if (s->response_started) {
        reset_stream(s, false, details);
        return;
    }
    add_flag(s, "DPE");
    send_local_reply(s, status ? status : 400, h1_reason_phrase(status ? status : 400), details, NULL);
}

static const struct h1_callbacks h1_cbs = {
    .on_message_begin = c_message_begin,
    .on_headers = c_headers,
    .on_data = c_data,
    .on_trailers = c_trailers,
    .on_complete = c_complete,
    .on_error = c_error,
};

/* ---------------------------------------------------------------- HTTP/2 codec callbacks */

static void *h2_begin(void *arg, int32_t id)
{
    struct cm_conn *cc = arg;
    struct herald_http_stream *s = stream_new(cc);
    s->h2id = id;
    return s;
}

static void h2_headers(void *arg, void *stream, struct herald_headers *h, bool end_stream)
{
    struct herald_http_stream *s = stream;
    req_headers(s, h, end_stream);
    if (end_stream && !s->over)
        req_complete(s);
}

static void h2_headers_error(void *arg, void *stream, int status, const char *details)
{
    struct herald_http_stream *s = stream;
    add_flag(s, "DPE");
    send_local_reply(s, status, h1_reason_phrase(status), details, NULL);
}

static void h2_data(void *arg, void *stream, struct evbuffer *chunk, bool end_stream)
{
    struct herald_http_stream *s = stream;
    if (end_stream && !s->local_reply && !s->over && !s->reset && s->dec.headers_in && !s->dec.end_in) {
        req_data(s, chunk, true);
        if (!s->over)
            req_complete(s);
        return;
    }
    req_data(s, chunk, end_stream);
}

static void h2_trailers(void *arg, void *stream, struct herald_headers *t)
{
    struct herald_http_stream *s = stream;
    bool live = !s->local_reply && !s->over && !s->reset && s->dec.headers_in && !s->dec.end_in;
    req_trailers(s, t);
    if (live && !s->over)
        req_complete(s);
}

static void h2_reset(void *arg, void *stream, bool remote)
{
    struct herald_http_stream *s = stream;
    s->h2id = 0; /* the codec's stream is gone */
    if (!s->over)
        reset_stream(s, remote, remote ? "http2.remote_reset" : "http2.codec_error");
}

static void h2_drained(void *arg, void *stream, size_t queued)
{
    struct herald_http_stream *s = stream;
    struct cm_conn *cc = s->cc;
    if ((s->wm_above & WM_DOWNSTREAM) && queued <= body_limit(s) / 2 && !s->h2_unblock) {
        s->h2_unblock = true;
        if (cc->kick_timer)
            herald_timer_arm(cc->kick_timer, 0);
    }
}

static void h2_frame_bytes(void *arg, void *stream, size_t bytes, bool headers, bool sent)
{
    struct herald_http_stream *s = stream;
    (void)arg;
    wire_add(&s->dn, sent, bytes, headers);
}

static const struct h2_callbacks h2_cbs = {
    .on_frame_bytes = h2_frame_bytes,
    .on_begin = h2_begin,
    .on_headers = h2_headers,
    .on_headers_error = h2_headers_error,
    .on_data = h2_data,
    .on_trailers = h2_trailers,
    .on_reset = h2_reset,
    .on_drained = h2_drained,
};

/* Backpressure lifted: held request data goes on, blocked streams hear that they may send again. */
static void on_kick_timer(struct herald_timer *t, void *arg)
{
    struct cm_conn *cc = arg;
    if (!cc->h2 || cc->gone)
        return;
    enter(cc);
    for (struct herald_http_stream *s = cc->h2streams; s; s = s->next)
        if (s->h2_unblock && !s->over) {
            s->h2_unblock = false;
            stream_watermark(s, WM_DOWNSTREAM, false);
        }
    h2_server_deliver(cc->h2);
    leave(cc);
}

/* ---------------------------------------------------------------- timers */

static uint64_t idle_ms(struct herald_http_stream *s)
{
    const struct herald_route *r = s->route_valid ? s->route : NULL;
    uint64_t ri = r ? herald_route_idle_timeout_ms(r) : 0;
    return overload_scaled_ms(OVERLOAD_TIMER_HTTP_STREAM_IDLE, ri ? ri : s->cc->cm->stream_idle_timeout_ms);
}

static void stream_timer_arm(struct herald_http_stream *s)
{
    uint64_t next = 0, now = herald_now_ms();
    uint64_t idle = idle_ms(s);
    if (idle)
        next = s->last_activity + idle;
    uint64_t dl[3] = {s->deadline_headers, s->deadline_request, s->deadline_max};
    for (int i = 0; i < 3; i++)
        if (dl[i] && (!next || dl[i] < next))
            next = dl[i];
    if (next && s->timer)
        herald_timer_arm(s->timer, next > now ? next - now : 0);   /* activity moves it later */
}

/* 408 while the response has not started, a reset after. */
static void time_out(struct herald_http_stream *s, struct herald_stat *st, const char *details)
{
    herald_stat_inc(st);
    s->cc->close_after = true;
    if (s->response_started || s->upgraded)
        reset_stream(s, false, details);
    else
        send_local_reply(s, 408, "Request Timeout", details, NULL);
}

static void on_stream_timer(struct herald_timer *t, void *arg)
{
    struct herald_http_stream *s = arg;
    struct cm_conn *cc = s->cc;
    struct herald_http_cm *cm = cc->cm;
    uint64_t now = herald_now_ms(), idle = idle_ms(s);

    if (s->over)
        return;
    enter(cc);
    if (s->deadline_headers && now >= s->deadline_headers)
        time_out(s, cm->st.rq_header_timeout, "request_header_timeout");
    else if (s->deadline_request && now >= s->deadline_request && !s->request_complete)
        time_out(s, cm->st.rq_timeout, "request_overall_timeout");
    else if (s->deadline_max && now >= s->deadline_max)
        time_out(s, cm->st.rq_max_duration_reached, "max_duration_timeout");
    else if (idle && now >= s->last_activity + idle)
        time_out(s, cm->st.rq_idle_timeout, "stream_idle_timeout");
    else
        stream_timer_arm(s);
    leave(cc);
}

/* The drain's last GOAWAY (the last stream it took); the connection closes
 * once the streams in flight are done. */
static void on_drain_timer(struct herald_timer *t, void *arg)
{
    struct cm_conn *cc = arg;
    (void)t;
    if (!cc->h2 || cc->closing || cc->gone)
        return;
    enter(cc);
    cc->h2_announced = false;
    h2_server_goaway(cc->h2, NGHTTP2_NO_ERROR);
    if (!cc->h2streams)
        close_conn(cc, HERALD_CLOSE_FLUSH);
    leave(cc);
}

/* HTTP/2's graceful drain (RFC 9113 6.8, Envoy's drain sequence): a GOAWAY
 * naming the largest stream id first, so that the requests the client sent
 * before it read that are still served; the real one drain_timeout later.
 * A final GOAWAY right away would refuse them. Call between enter/leave. */
static void h2_drain(struct cm_conn *cc)
{
    bool was = cc->draining;
    cc->draining = true;
    if (was || !cc->h2 || cc->closing || cc->gone)
        return;
    if (!cc->cm->drain_timeout_ms || h2_server_failed(cc->h2)) {
        h2_server_goaway(cc->h2, NGHTTP2_NO_ERROR);
        return;
    }
    if (!cc->drain_timer)
        cc->drain_timer = herald_timer_new(on_drain_timer, cc);
    h2_server_shutdown_notice(cc->h2);
    cc->h2_announced = true;
    herald_timer_arm(cc->drain_timer, cc->cm->drain_timeout_ms);
}

static void on_idle_timer(struct herald_timer *t, void *arg)
{
    struct cm_conn *cc = arg;
    if (cc->stream || cc->h2streams || cc->closing || cc->gone)
        return;
    if (!cc->draining)
        herald_stat_inc(cc->cm->st.cx_idle_timeout);
    close_conn(cc, HERALD_CLOSE_FLUSH);
}

static void on_duration_timer(struct herald_timer *t, void *arg)
{
    struct cm_conn *cc = arg;
    herald_stat_inc(cc->cm->st.cx_max_duration_reached);
    enter(cc);
    if (!cc->stream && !cc->h2streams) {
        cc->draining = true;
        close_conn(cc, HERALD_CLOSE_FLUSH);
    } else if (cc->h2) {
        h2_drain(cc);
    } else {
        cc->draining = true;
    }
    leave(cc);
}

/* ---------------------------------------------------------------- the connection */

static void handle_eof(struct cm_conn *cc)
{
    struct herald_http_stream *s = cc->stream;
    cc->eof_handled = true;
    if (!s || (s->over && !s->upgraded)) {
        /* nothing outstanding (a stream just over is not an active request) */
        close_conn(cc, HERALD_CLOSE_FLUSH);
        return;
    }
    if (s->upgraded || s->upgrade_requested) {
        /* a tunnel's client half-closed, before the upstream's answer or
         * after: its end goes on as the end of the request's bytes */
        if (!s->dec.end_in && !s->over) {
            struct herald_buf *b = herald_buf_new();
            s->dec.end_in = true;
            run_data(s, false, 0, b, true);
            herald_buf_free(b);
        }
        return;
    }
    if (!s->request_complete) {
        /* cut short: the client gave up */
        reset_stream(s, true, "downstream_remote_disconnect");
        return;
    }
    /* A client that asked to close after this request and then shut its
     * side finished sending, it did not give up: it gets its answer, then
     * the close (as HAProxy; Envoy resets, envoyproxy/envoy#2066). */
    if (cc->client_done)
        return;
    /* Otherwise, like Envoy's connection manager, no half-close on HTTP: a
     * client FIN with a response outstanding ends the exchange (the upstream
     * request is reset) and is counted as a remote close with an active
     * request. */
    herald_stat_inc(cc->cm->st.cx_destroy_active_rq);
    herald_stat_inc(cc->cm->st.cx_destroy_remote_active_rq);
    cc->remote_closed = true;
    reset_stream(s, true, "downstream_remote_disconnect");
    if (!cc->closing && !cc->gone)
        close_conn(cc, HERALD_CLOSE_RESET);
}

static void start_h1(struct cm_conn *cc)
{
    struct herald_http_cm *cm = cc->cm;
    cc->proto = PROTO_H1;
    cc->codec = h1_codec_new(H1_SERVER, &cm->limits, &h1_cbs, cc);
    herald_stat_inc(cm->st.cx_http1_total);
    herald_gauge_add(cm->st.cx_http1_active, 1);
}

static bool keepalive_ping(void *arg)
{
    struct cm_conn *cc = arg;
    if (cc->gone || cc->closing || !h2_server_ping(cc->h2))
        return false;
    enter(cc);
    leave(cc); /* out with it (and with anything that was waiting) */
    return true;
}

/* The client answered neither the PING nor anything else: Envoy closes it
 * without a GOAWAY (nothing would read it). */
static void keepalive_timed_out(void *arg)
{
    struct cm_conn *cc = arg;
    if (cc->gone || cc->closing)
        return;
    herald_stat_inc(cc->cm->h2st.keepalive_timeout);
    h2_abort(cc, "http2.keepalive_timeout", HERALD_CLOSE_RESET);
}

static const struct h2_keepalive_ops keepalive_ops = {
    .ping = keepalive_ping,
    .timed_out = keepalive_timed_out,
};

static void start_h2(struct cm_conn *cc)
{
    struct herald_http_cm *cm = cc->cm;
    cc->proto = PROTO_H2;
    cc->h2 = h2_server_new(&cm->h2set, &cm->h2st, &h2_cbs, cc);
    cc->kick_timer = herald_timer_new(on_kick_timer, cc);
    cc->keepalive = h2_keepalive_start(&cm->h2_keepalive, h2_server_frame_counts(cc->h2), &keepalive_ops, cc);
    herald_stat_inc(cm->st.cx_http2_total);
    herald_gauge_add(cm->st.cx_http2_active, 1);
}

/* codec_type AUTO: ALPN when TLS negotiated one, else the client preface
 * (h2c with prior knowledge) or HTTP/1. false: not enough bytes yet. */
static bool pick_codec(struct cm_conn *cc, struct herald_buf *in)
{
    const char *alpn = herald_conn_alpn(cc->c);
    if (alpn && !strcmp(alpn, "h2")) {
        start_h2(cc);
        return true;
    }
    if (alpn && *alpn) {
        start_h1(cc);
        return true;
    }
    char head[H2_PREFACE_LEN];
    size_t len = herald_buf_len(in);
    size_t n = len < H2_PREFACE_LEN ? len : H2_PREFACE_LEN;
    evbuffer_copyout(buf_ev(in), head, n);
    if (memcmp(head, H2_PREFACE, n)) {
        start_h1(cc);
        return true;
    }
    if (n < H2_PREFACE_LEN && !cc->read_eof)
        return false;
    if (n < H2_PREFACE_LEN)
        start_h1(cc);
    else
        start_h2(cc);
    return true;
}

static void process_h2(struct cm_conn *cc, struct herald_buf *in)
{
    if (cc->gone)
        return;
    if (cc->closing || cc->codec_dead) {
        herald_buf_drain(in, herald_buf_len(in));
        return;
    }
    if (h2_server_recv(cc->h2, buf_ev(in)) < 0)
        cc->codec_dead = true; /* GOAWAY queued: h2_out flushes it and closes */
    if (cc->read_eof && !cc->eof_handled) {
        /* no half-close in HTTP/2: the client is gone */
        cc->eof_handled = true;
        cc->remote_closed = true;
        for (struct herald_http_stream *s = cc->h2streams; s; s = s->next)
            if (!s->over) {
                herald_stat_inc(cc->cm->st.cx_destroy_active_rq);
                herald_stat_inc(cc->cm->st.cx_destroy_remote_active_rq);
                reset_stream(s, true, "downstream_remote_disconnect");
            }
        if (!cc->closing && !cc->gone)
            close_conn(cc, HERALD_CLOSE_FLUSH);
    }
}

static void process_input(struct cm_conn *cc, struct herald_buf *in)
{
    if (cc->proto == PROTO_NONE && !cc->gone && !cc->closing && !pick_codec(cc, in))
        return;
    if (cc->proto == PROTO_H2) {
        process_h2(cc, in);
        return;
    }
    if (cc->proto == PROTO_NONE) {
        herald_buf_drain(in, herald_buf_len(in));
        return;
    }
    for (int round = 0; round < 2; round++) {
        struct herald_http_stream *s = cc->stream;
        if (cc->gone)
            return;
        if (cc->closing) {
            /* half-closed, lingering: read and drop */
            herald_buf_drain(in, herald_buf_len(in));
            return;
        }
        if (s && s->upgraded) {
            if (cc->decode_paused || s->over)
                return;
            if (herald_buf_len(in) > 0 && !s->dec.end_in) {
                s->rx_body += herald_buf_len(in);
                touch(s);
                run_data(s, false, 0, in, false);
                herald_buf_drain(in, herald_buf_len(in));
            }
            if (cc->read_eof && !cc->eof_handled)
                handle_eof(cc);
            return;
        }
        if (cc->codec_dead) {
            herald_buf_drain(in, herald_buf_len(in));
            return;
        }
        if (cc->decode_paused || cc->pipeline_paused)
            break;
        if (h1_codec_dispatch(cc->codec, buf_ev(in)) < 0)
            return;
        if (cc->stream && cc->stream->upgraded && herald_buf_len(in) > 0)
            continue; /* answered 101 at once: the rest is the new protocol's */
        break;
    }
    /* the peer's EOF counts once everything before it was parsed */
    if (cc->read_eof && !cc->eof_handled && !cc->closing && !cc->gone && herald_buf_len(in) == 0)
        handle_eof(cc);
}

/* ---------------------------------------------------------------- SDK: the connection manager */

void *herald_http_cm_session_new(struct herald_http_cm *cm, struct herald_conn *c)
{
    struct cm_conn *cc = xcalloc(1, sizeof(*cc));
    cc->cm = cm;
    cc->c = c;
    cc->wbuf = evbuffer_new();
    cc->start_mono = herald_now_ms();
    cc->finish_timer = herald_timer_new(on_finish_timer, cc);
    cc->linger_timer = herald_timer_new(on_linger_timer, cc);
    if (cm->idle_timeout_ms) {
        cc->idle_timer = herald_timer_new(on_idle_timer, cc);
        idle_arm_configured(cc, true);
    }
    if (cm->max_connection_duration_ms) {
        cc->duration_timer = herald_timer_new(on_duration_timer, cc);
        if (cc->duration_timer)
            herald_timer_arm(cc->duration_timer, cm->max_connection_duration_ms);
    }
    herald_stat_inc(cm->st.cx_total);
    herald_gauge_add(cm->st.cx_active, 1);
    /* AUTO decides on the first bytes (pick_codec) */
    if (cm->codec == CODEC_HTTP1)
        start_h1(cc);
    else if (cm->codec == CODEC_HTTP2)
        start_h2(cc);
    return cc;
}

/* pool.c (pool.h's client-side struct h2_stats is not h2_server.h's) */
void http_pools_owner_closed(uint64_t id);

void herald_http_cm_session_destroy(void *session)
{
    struct cm_conn *cc = session;
    struct herald_http_cm *cm;

    if (!cc)
        return;
    cm = cc->cm;
    cc->gone = true;
    if (cc->stream) {
        /* a stream already over (reset by the EOF, or complete) was counted then */
        if (!cc->stream->over) {
            herald_stat_inc(cm->st.cx_destroy_active_rq);
            herald_stat_inc(cc->remote_closed ? cm->st.cx_destroy_remote_active_rq
                                              : cm->st.cx_destroy_local_active_rq);
            reset_stream(cc->stream, cc->remote_closed, NULL);
        }
        stream_finish(cc->stream);
    }
    while (cc->h2streams) {
        struct herald_http_stream *s = cc->h2streams;
        if (!s->over) {
            herald_stat_inc(cm->st.cx_destroy_active_rq);
            herald_stat_inc(cc->remote_closed ? cm->st.cx_destroy_remote_active_rq
                                              : cm->st.cx_destroy_local_active_rq);
            reset_stream(s, cc->remote_closed, NULL);
        }
        stream_finish(s);
    }
    /* upstream connections that carry this connection's PROXY header go with it */
    http_pools_owner_closed(herald_conn_id(cc->c));
    account_bytes(cc);
    herald_stat_inc(cm->st.cx_destroy);
    herald_stat_inc(cc->remote_closed ? cm->st.cx_destroy_remote : cm->st.cx_destroy_local);
    herald_gauge_add(cm->st.cx_active, -1);
    if (cc->proto == PROTO_H1)
        herald_gauge_add(cm->st.cx_http1_active, -1);
    else if (cc->proto == PROTO_H2)
        herald_gauge_add(cm->st.cx_http2_active, -1);
    herald_histogram_record(cm->st.cx_length_ms, herald_now_ms() - cc->start_mono);
    if (cc->idle_timer)
        herald_timer_free(cc->idle_timer);
    if (cc->duration_timer)
        herald_timer_free(cc->duration_timer);
    if (cc->finish_timer)
        herald_timer_free(cc->finish_timer);
    if (cc->linger_timer)
        herald_timer_free(cc->linger_timer);
    if (cc->kick_timer)
        herald_timer_free(cc->kick_timer);
    if (cc->drain_timer)
        herald_timer_free(cc->drain_timer);
    h2_keepalive_stop(cc->keepalive);
    h2_server_free(cc->h2);
    h1_codec_free(cc->codec);
    evbuffer_free(cc->wbuf);
    free(cc);
}

enum herald_status herald_http_cm_on_read(void *session, struct herald_buf *data, bool end_stream)
{
    struct cm_conn *cc = session;

    enter(cc);
    cc->in = data;
    account_bytes(cc);
    if (end_stream)
        cc->read_eof = true;
    process_input(cc, data);
    leave(cc);
    return HERALD_CONTINUE;
}

void herald_http_cm_on_event(void *session, enum herald_conn_event ev)
{
    struct cm_conn *cc = session;
    struct herald_http_stream *s;

    enter(cc);
    s = cc->stream;
    switch (ev) {
    case HERALD_EV_REMOTE_CLOSE:
    case HERALD_EV_LOCAL_CLOSE:
        cc->gone = true;
        cc->remote_closed = ev == HERALD_EV_REMOTE_CLOSE;
        if (s && !s->over) {
            herald_stat_inc(cc->cm->st.cx_destroy_active_rq);
            herald_stat_inc(cc->remote_closed ? cc->cm->st.cx_destroy_remote_active_rq
                                              : cc->cm->st.cx_destroy_local_active_rq);
            reset_stream(s, cc->remote_closed, cc->remote_closed ? "downstream_remote_disconnect"
                                                                 : "downstream_local_disconnect");
        }
        for (struct herald_http_stream *h2s = cc->h2streams; h2s; h2s = h2s->next)
            if (!h2s->over) {
                herald_stat_inc(cc->cm->st.cx_destroy_active_rq);
                herald_stat_inc(cc->remote_closed ? cc->cm->st.cx_destroy_remote_active_rq
                                                  : cc->cm->st.cx_destroy_local_active_rq);
                reset_stream(h2s, cc->remote_closed, cc->remote_closed ? "downstream_remote_disconnect"
                                                                       : "downstream_local_disconnect");
            }
        herald_timer_cancel(cc->idle_timer);
        if (cc->duration_timer)
            herald_timer_cancel(cc->duration_timer);
        break;
    case HERALD_EV_DRAIN:
        /* Envoy's drain: no new requests on this connection; an idle HTTP/1
         * one closes after a short grace (below). */
        if (!cc->draining)
            herald_stat_inc(cc->cm->st.cx_drain_close);
        if (cc->h2)
            h2_drain(cc);   /* streams in flight, and those on their way, finish */
        cc->draining = true;
        if (!s && !cc->h2streams && !cc->closing && !cc->gone) {
            /* An idle HTTP/1 connection may have a request on the wire: closing
             * now would reset it. It gets a grace in which that request is
             * answered with Connection: close; still idle then, it closes. */
            if (!cc->h2 && !cc->idle_timer)
                cc->idle_timer = herald_timer_new(on_idle_timer, cc);
            if (!cc->h2 && cc->idle_timer)
                idle_arm(cc, DRAIN_IDLE_GRACE_MS);
            else
                close_conn(cc, HERALD_CLOSE_FLUSH);
        }
        break;
    case HERALD_EV_TIMERS_RESCALED:
        /* reduce_timeouts' scale moved: the idle timers take their new length */
        if (cc->gone || cc->closing)
            break;
        if (s && !s->over)
            stream_timer_arm(s);
        for (struct herald_http_stream *h2s = cc->h2streams; h2s; h2s = h2s->next)
            if (!h2s->over)
                stream_timer_arm(h2s);
        if (!s && !cc->h2streams && !cc->draining && cc->cm->idle_timeout_ms && cc->idle_since)
            idle_arm_configured(cc, false);
        break;
    case HERALD_EV_ABOVE_WRITE_HIGH:
        if (cc->h2) {
            /* frames wait in nghttp2 (bounded by the flood limits); each stream's own
             * queue stops its upstream. Reading goes on, so that floods are seen. */
            if (!cc->above_high)
                herald_stat_inc(cc->cm->st.flow_paused);
            cc->above_high = true;
            break;
        }
        if (!cc->above_high) {
            cc->above_high = true;
            herald_stat_inc(cc->cm->st.flow_paused);
            herald_conn_pause_reading(cc->c, PAUSE_WRITE);
            if (s)
                stream_watermark(s, WM_DOWNSTREAM, true);
        }
        break;
    case HERALD_EV_BELOW_WRITE_LOW:
        if (cc->h2) {
            if (cc->above_high)
                herald_stat_inc(cc->cm->st.flow_resumed);
            cc->above_high = false; /* leave() flushes */
            break;
        }
        if (cc->above_high) {
            cc->above_high = false;
            herald_stat_inc(cc->cm->st.flow_resumed);
            if (s)
                stream_watermark(s, WM_DOWNSTREAM, false);
            if (!cc->gone && !cc->closing)
                herald_conn_resume_reading(cc->c, PAUSE_WRITE);
        }
        break;
    default:
        break;
    }
    leave(cc);
}

/* ---------------------------------------------------------------- SDK: streams */

struct herald_conn *herald_http_stream_conn(struct herald_http_stream *s) { return s->cc->c; }
enum herald_http_protocol herald_http_stream_protocol(const struct herald_http_stream *s) { return s->proto; }
const struct herald_headers *herald_http_stream_request_headers(const struct herald_http_stream *s)
{
    return s->req;
}
uint64_t herald_http_stream_id(const struct herald_http_stream *s) { return s->id; }
const char *herald_http_stream_downstream_address(const struct herald_http_stream *s)
{
    return s->client_addr;
}

const struct herald_route *herald_http_stream_route(struct herald_http_stream *s)
{
    const struct herald_route *r = stream_route(s);
    /* a route's idle_timeout replaces the HCM's from now on */
    if (r && herald_route_idle_timeout_ms(r) && !s->over)
        stream_timer_arm(s);
    return r;
}

const char *herald_http_stream_virtual_cluster(struct herald_http_stream *s, const char **stat_prefix)
{
    const char *prefix = NULL;
    const char *name = route_virtual_cluster(stream_route(s), s->req, &prefix);
    s->vcluster = name;
    if (stat_prefix)
        *stat_prefix = prefix;
    return name;
}

void herald_http_stream_clear_route_cache(struct herald_http_stream *s)
{
    s->route_valid = false;
    s->route = NULL;
}

void herald_http_stream_send_local_reply_grpc(struct herald_http_stream *s, int status, int grpc_status,
                                              const char *body, const char *details, const char *flags)
{
    struct cm_conn *cc = s->cc;
    enter(cc);
    send_local_reply_grpc(s, status, grpc_status, body, details, flags);
    leave_sdk(cc);
}

void herald_http_stream_send_local_reply(struct herald_http_stream *s, int status, const char *body,
                                         const char *details, const char *flags)
{
    struct cm_conn *cc = s->cc;
    enter(cc);
    send_local_reply(s, status, body, details, flags);
    leave_sdk(cc);
}

void herald_http_stream_mark_health_check(struct herald_http_stream *s)
{
    s->health_check = true;
}

void herald_http_stream_local_reply_header_options(struct herald_http_stream *s,
                                                   const struct herald_header_options *o)
{
    s->lr_options = o;
}

void herald_header_options_apply(const struct herald_header_options *o, struct herald_headers *h,
                                 struct herald_http_stream *s)
{
    header_options_apply_with(o, h, s ? log_field : NULL, s);
}

void herald_route_apply_request_stream(const struct herald_route *r, struct herald_headers *req,
                                       const char *upstream_hostname, struct herald_http_stream *s)
{
    route_apply_request(r, req, upstream_hostname, s ? log_field : NULL, s);
}

void herald_http_stream_add_local_reply_header(struct herald_http_stream *s, const char *name, const char *value)
{
    if (!s->lr_extra)
        s->lr_extra = herald_headers_new();
    herald_headers_add(s->lr_extra, name, value);
}

void herald_http_stream_continue_decoding(struct herald_http_stream *s)
{
    struct cm_conn *cc = s->cc;
    if (s->over || s->local_reply)
        return;
    enter(cc);
    continue_dir(s, false);
    leave_sdk(cc);
}

void herald_http_stream_continue_encoding(struct herald_http_stream *s)
{
    struct cm_conn *cc = s->cc;
    if (s->over)
        return;
    enter(cc);
    continue_dir(s, true);
    leave_sdk(cc);
}

void herald_http_stream_encode_headers(struct herald_http_stream *s, struct herald_headers *headers,
                                       bool end_stream)
{
    struct cm_conn *cc = s->cc;
    enter(cc);
    encode_headers_in(s, headers, end_stream);
    leave_sdk(cc);
}

void herald_http_stream_encode_data(struct herald_http_stream *s, struct herald_buf *data, bool end_stream)
{
    struct cm_conn *cc = s->cc;
    enter(cc);
    encode_data_in(s, data, end_stream);
    leave_sdk(cc);
}

static void add_data(struct fdir *d, struct herald_buf *data)
{
    if (!d->trailers || !d->in_cb) {
        herald_buf_drain(data, herald_buf_len(data));
        return;
    }
    if (!d->added)
        d->added = herald_buf_new();
    herald_buf_move(d->added, data, SIZE_MAX);
}

void herald_http_stream_add_encoded_data(struct herald_http_stream *s, struct herald_buf *data)
{
    add_data(&s->enc, data);
}

void herald_http_stream_add_decoded_data(struct herald_http_stream *s, struct herald_buf *data)
{
    add_data(&s->dec, data);
}

/* The position in direction enc of the filter that owns session, or NONE. */
static size_t session_pos(struct herald_http_stream *s, bool enc, const void *session)
{
    struct fdir *d = dir_of(s, enc);
    if (!s->sessions || !session)
        return NONE;
    for (size_t p = 0; p < d->n; p++)
        if (s->sessions[filter_index(s, enc, p)] == session)
            return p;
    return NONE;
}

/* Pacing (Envoy's inject*DataToFilterChain): bytes a filter took with STOP
 * go on from the filter after it. Its STOP left the mark "data waits after
 * this filter" (hold_pos); the injected bytes pass that mark, behind
 * anything buffered at it. */
static void inject_data(struct herald_http_stream *s, bool enc, void *session, struct herald_buf *data, bool end)
{
    struct fdir *d = dir_of(s, enc);
    size_t p = session_pos(s, enc, session);
    if (p == NONE || s->over || s->reset || !d->headers_in || d->end_out) {
        herald_buf_drain(data, herald_buf_len(data));
        return;
    }
    if (d->hold_pos == p + 1) {
        bool ignored;
        struct herald_buf *held = take_held(d, &ignored);
        herald_buf_move(held, data, SIZE_MAX);
        herald_buf_move(data, held, SIZE_MAX);
        herald_buf_free(held);
    }
    touch(s);
    run_data(s, enc, p + 1, data, end);
}

void herald_http_stream_inject_encoded_data(struct herald_http_stream *s, void *session, struct herald_buf *data,
                                            bool end_stream)
{
    struct cm_conn *cc = s->cc;
    enter(cc);
    inject_data(s, true, session, data, end_stream);
    leave_sdk(cc);
}

void herald_http_stream_inject_decoded_data(struct herald_http_stream *s, void *session, struct herald_buf *data,
                                            bool end_stream)
{
    struct cm_conn *cc = s->cc;
    enter(cc);
    inject_data(s, false, session, data, end_stream);
    leave_sdk(cc);
}

void herald_http_stream_encode_watermark(struct herald_http_stream *s, bool above)
{
    struct cm_conn *cc = s->cc;
    if (s->over)
        return;
    if (!count_hold(&s->wm_filters, above))
        return;
    enter(cc);
    stream_watermark(s, WM_FILTER, above);
    leave_sdk(cc);
}

void herald_http_stream_encode_trailers(struct herald_http_stream *s, struct herald_headers *trailers)
{
    struct cm_conn *cc = s->cc;
    enter(cc);
    encode_trailers_in(s, trailers);
    leave_sdk(cc);
}

bool herald_http_stream_encode_blocked(const struct herald_http_stream *s)
{
    return s->wm_above != 0;
}

static void set_decode_paused(struct herald_http_stream *s, bool pause);

/* Reading stays paused while anyone asks: pause_decoding's caller, or a
 * filter that holds too much of the body (a pacer). */
void herald_http_stream_pause_decoding(struct herald_http_stream *s, bool pause)
{
    s->dec_asked = pause;
    set_decode_paused(s, pause || s->dec_holds > 0);
}

void herald_http_stream_decode_watermark(struct herald_http_stream *s, bool above)
{
    if (s->over)
        return;
    if (!count_hold(&s->dec_holds, above))
        return;
    set_decode_paused(s, above || s->dec_asked);
}

static void set_decode_paused(struct herald_http_stream *s, bool pause)
{
    struct cm_conn *cc = s->cc;
    if (cc->h2) {
        /* per stream: its DATA stays unconsumed, holding the client's window */
        if (s->dec_paused == pause || cc->gone)
            return;
        s->dec_paused = pause;
        if (s->h2id)
            h2_server_pause(cc->h2, s->h2id, pause);
        if (!pause && cc->kick_timer)
            herald_timer_arm(cc->kick_timer, 0);
        return;
    }
    if (cc->decode_paused == pause || cc->gone)
        return;
    cc->decode_paused = pause;
    if (pause) {
        h1_codec_pause(cc->codec);
        if (!cc->closing)
            herald_conn_pause_reading(cc->c, PAUSE_DECODE);
    } else {
        if (!cc->pipeline_paused)
            h1_codec_resume(cc->codec);
        /* re-dispatches what came meanwhile, from the loop, not from here */
        if (!cc->closing)
            herald_conn_resume_reading(cc->c, PAUSE_DECODE);
    }
}

void herald_http_stream_reset(struct herald_http_stream *s)
{
    struct cm_conn *cc = s->cc;
    enter(cc);
    reset_stream(s, false, NULL);
    leave_sdk(cc);
}

/* *slot = a copy of v, in the stream's own inline buffer when it fits */
static void set_owned_str(char **slot, char *inline_buf, size_t cap, const char *v)
{
    if (*slot && !strcmp(*slot, v))
        return;   /* the router names the cluster, then cluster and host: keep what is the same */
    if (*slot != inline_buf)
        free(*slot);
    size_t n = strlen(v);
    if (n < cap) {
        memcpy(inline_buf, v, n + 1);
        *slot = inline_buf;
    } else {
        *slot = xstrdup(v);
    }
}

void herald_http_stream_set_upstream(struct herald_http_stream *s, const char *cluster, const char *host)
{
    if (cluster)
        set_owned_str(&s->upstream_cluster, s->upstream_cluster_inline, sizeof(s->upstream_cluster_inline),
                      cluster);
    if (host)
        set_owned_str(&s->upstream_host, s->upstream_host_inline, sizeof(s->upstream_host_inline), host);
}

void cm_stream_upstream_attempt(struct herald_http_stream *s, const struct herald_host *host)
{
    s->upstream_attempts++;
    s->upstream_local[0] = '\0';   /* no connection yet for this attempt */
    s->upstream_tx_end_mono = 0;
    memset(&s->up, 0, sizeof(s->up));
    if (s->cc->cm->log_upstream_hostname) {
        const char *hostname = herald_host_hostname(host);
        free(s->upstream_hostname);
        s->upstream_hostname = hostname ? xstrdup(hostname) : NULL;
    }
}

void cm_stream_upstream_request_sent(struct herald_http_stream *s)
{
    s->upstream_tx_end_mono = herald_now_ms();
}

bool cm_stream_counts_upstream_bytes(const struct herald_http_stream *s)
{
    return s->cc->cm->log_up_wire;
}

static atomic_bool any_counts_upstream_bytes;   /* set by the main thread, read by workers */

bool cm_any_counts_upstream_bytes(void)
{
    return atomic_load_explicit(&any_counts_upstream_bytes, memory_order_relaxed);
}

void cm_stream_upstream_bytes(struct herald_http_stream *s, bool sent, uint64_t bytes, bool headers)
{
    wire_add(&s->up, sent, bytes, headers);
}

void cm_stream_upstream_bound(struct herald_http_stream *s, const char *local, uint64_t conn_id, uint64_t ready_ms,
                              bool h2, SSL *ssl)
{
    s->upstream_conn_id = conn_id;
    s->upstream_protocol = h2 ? "HTTP/2" : "HTTP/1.1";
    size_t n = local ? strnlen(local, sizeof(s->upstream_local) - 1) : 0;   /* per request: no snprintf */
    memcpy(s->upstream_local, local ? local : "", n);
    s->upstream_local[n] = '\0';
    s->upstream_ready_ms = ready_ms;
    SSL_SESSION_free(s->upstream_tls);
    s->upstream_tls = ssl && s->cc->cm->log_upstream_tls ? SSL_get1_session(ssl) : NULL;
}

void herald_http_stream_set_upstream_failure_reason(struct herald_http_stream *s, const char *reason)
{
    free(s->upstream_failure);
    s->upstream_failure = reason ? xstrdup(reason) : NULL;
}

void herald_http_stream_add_response_flag(struct herald_http_stream *s, const char *flag)
{
    add_flag(s, flag);
}

int herald_http_stream_metadata_set(struct herald_http_stream *s, const char *ns, const char *key,
                                    const char *value)
{
    return metadata_set(&s->meta, ns, key, value);
}

int herald_http_stream_metadata_set_typed(struct herald_http_stream *s, const char *ns, const char *key,
                                          const char *value, enum herald_metadata_type type)
{
    /* the SDK's kinds are metadata.h's, in the same order */
    if ((unsigned)type > HERALD_METADATA_NULL)
        return -1;
    return metadata_set_typed(&s->meta, ns, key, value, (enum metadata_type)type);
}

/* Only the stream's own envoy.lb entries count, as in Envoy (its router reads
 * the request's dynamic metadata, not the connection's). */
struct herald_host *herald_http_stream_choose_host(struct herald_http_stream *s, const struct herald_route *r,
                                                   struct herald_cluster *c, uint64_t hash, uint32_t attempt)
{
    /* without subsets it reads neither the route's criteria nor the stream's */
    return cluster_choose_host_matching(c, hash, attempt, route_metadata_match(r), s ? &s->meta : NULL);
}

const char *herald_http_stream_metadata_get(const struct herald_http_stream *s, const char *ns,
                                            const char *key)
{
    const char *v = metadata_get(&s->meta, ns, key);
    /* then the connection's (listener and network filters': a PROXY TLV) */
    return v || !s->cc ? v : herald_conn_metadata_get(s->cc->c, ns, key);
}

bool herald_http_stream_is_upgrade(const struct herald_http_stream *s) { return s->upgrade_requested; }

struct herald_stat *herald_http_stream_counter(struct herald_http_stream *s, const char *name)
{
    const struct cm_stats *st = &s->cc->cm->st;
    static const struct { const char *name; size_t off; } known[] = {
        {"rq_total", offsetof(struct cm_stats, rq_total_router)},   /* once per request: first */
        {"no_route", offsetof(struct cm_stats, no_route)},
        {"no_cluster", offsetof(struct cm_stats, no_cluster)},
        {"rq_redirect", offsetof(struct cm_stats, rq_redirect)},
        {"rq_direct_response", offsetof(struct cm_stats, rq_direct_response)},
        {"rq_reset_after_downstream_response_started",
         offsetof(struct cm_stats, rq_reset_after_downstream_response_started)},
    };
    for (size_t i = 0; name && i < ARRAY_SIZE(known); i++)
        if (!strcmp(name, known[i].name))
            return *(struct herald_stat *const *)((const char *)st + known[i].off);
    return NULL;
}

/* ---------------------------------------------------------------- config */

static void make_stats(struct cm_stats *st, const char *p)
{
#define C(f, n) st->f = herald_counter(p, n)
#define G(f, n) st->f = herald_gauge(p, n)
#define H(f, n) st->f = herald_histogram(p, n)
    C(cx_total, "downstream_cx_total");
    G(cx_active, "downstream_cx_active");
    C(cx_destroy, "downstream_cx_destroy");
    C(cx_destroy_remote, "downstream_cx_destroy_remote");
    C(cx_destroy_local, "downstream_cx_destroy_local");
    C(cx_destroy_active_rq, "downstream_cx_destroy_active_rq");
    C(cx_destroy_remote_active_rq, "downstream_cx_destroy_remote_active_rq");
    C(cx_destroy_local_active_rq, "downstream_cx_destroy_local_active_rq");
    C(cx_http1_total, "downstream_cx_http1_total");
    G(cx_http1_active, "downstream_cx_http1_active");
    C(cx_http2_total, "downstream_cx_http2_total");
    G(cx_http2_active, "downstream_cx_http2_active");
    C(rq_http2_total, "downstream_rq_http2_total");
    C(cx_protocol_error, "downstream_cx_protocol_error");
    C(cx_idle_timeout, "downstream_cx_idle_timeout");
    C(cx_drain_close, "downstream_cx_drain_close");
    C(cx_rx_bytes_total, "downstream_cx_rx_bytes_total");
    C(cx_tx_bytes_total, "downstream_cx_tx_bytes_total");
    H(cx_length_ms, "downstream_cx_length_ms");
    C(cx_upgrades_total, "downstream_cx_upgrades_total");
    G(cx_upgrades_active, "downstream_cx_upgrades_active");
    C(cx_max_duration_reached, "downstream_cx_max_duration_reached");
    C(cx_max_requests_reached, "downstream_cx_max_requests_reached");
    C(flow_paused, "downstream_flow_control_paused_reading_total");
    C(flow_resumed, "downstream_flow_control_resumed_reading_total");
    C(rq_total, "downstream_rq_total");
    C(rq_http1_total, "downstream_rq_http1_total");
    G(rq_active, "downstream_rq_active");
    C(rq_xx[1], "downstream_rq_1xx");
    C(rq_xx[2], "downstream_rq_2xx");
    C(rq_xx[3], "downstream_rq_3xx");
    C(rq_xx[4], "downstream_rq_4xx");
    C(rq_xx[5], "downstream_rq_5xx");
    C(rq_completed, "downstream_rq_completed");
    H(rq_time, "downstream_rq_time");
    C(rq_too_large, "downstream_rq_too_large");
    C(rq_idle_timeout, "downstream_rq_idle_timeout");
    C(rq_timeout, "downstream_rq_timeout");
    C(rq_header_timeout, "downstream_rq_header_timeout");
    C(rq_max_duration_reached, "downstream_rq_max_duration_reached");
    C(rq_rx_reset, "downstream_rq_rx_reset");
    C(rq_tx_reset, "downstream_rq_tx_reset");
    C(rq_non_relative_path, "downstream_rq_non_relative_path");
    C(rq_ws_on_non_ws_route, "downstream_rq_ws_on_non_ws_route");
    C(rq_response_before_rq_complete, "downstream_rq_response_before_rq_complete");
    C(rq_failed_path_normalization, "downstream_rq_failed_path_normalization");
    C(rq_redirected_normalized, "downstream_rq_redirected_with_normalized_path");
    C(rq_overload_close, "downstream_rq_overload_close");
    C(cx_overload_disable_keepalive, "downstream_cx_overload_disable_keepalive");
    C(no_route, "no_route");
    C(no_cluster, "no_cluster");
    C(rq_redirect, "rq_redirect");
    C(rq_direct_response, "rq_direct_response");
    C(rq_total_router, "rq_total");
    C(rq_reset_after_downstream_response_started, "rq_reset_after_downstream_response_started");
#undef C
#undef G
#undef H
    /* Envoy keeps the codec's under http1.* */
    st->dropped_underscores = herald_counter("http1", "dropped_headers_with_underscores");
    st->rejected_underscores = herald_counter("http1", "requests_rejected_with_underscores_in_headers");
}

/* The HTTP/2 codec's counters, under http.<stat_prefix>.http2. */
static void make_h2_stats(struct herald_http_cm *cm)
{
    char *p = xasprintf("%s.http2", cm->stat_prefix);
    struct h2_stats *h = &cm->h2st;
#define C(f, n) h->f = herald_counter(p, n)
    C(rx_reset, "rx_reset");
    C(tx_reset, "tx_reset");
    C(header_overflow, "header_overflow");
    C(too_many_headers, "too_many_headers");
    C(outbound_flood, "outbound_flood");
    C(outbound_control_flood, "outbound_control_flood");
    C(inbound_empty_frames_flood, "inbound_empty_frames_flood");
    C(inbound_priority_frames_flood, "inbound_priority_frames_flood");
    C(inbound_window_update_frames_flood, "inbound_window_update_frames_flood");
    C(rx_messaging_error, "rx_messaging_error");
    C(trailers, "trailers");
    C(goaway_sent, "goaway_sent");
    C(stream_refused_errors, "stream_refused_errors");
    C(keepalive_timeout, "keepalive_timeout");
#undef C
    cm->st.h2_dropped_underscores = herald_counter(p, "dropped_headers_with_underscores");
    cm->st.h2_rejected_underscores = herald_counter(p, "requests_rejected_with_underscores_in_headers");
    /* Envoy's name for its CVE-2023-44487 defence, an HCM counter */
    h->premature_resets = herald_counter(cm->stat_prefix, "downstream_rq_too_many_premature_resets");
    free(p);
}

static uint32_t opt_u32(const struct herald_cfg *o, const char *name, uint32_t def)
{
    const struct herald_cfg *v = herald_cfg_get(o, name);
    return v ? (uint32_t)herald_cfg_int(v, def) : def;
}

/* http2_protocol_options, with Envoy's edge-hardened defaults (see hcm_schema.c). */
static int h2_options(struct herald_http_cm *cm, const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *o = herald_cfg_get(n, "http2_protocol_options");
    struct h2_settings *h = &cm->h2set;
    h->max_concurrent_streams = opt_u32(o, "max_concurrent_streams", 100);
    h->initial_stream_window_size = opt_u32(o, "initial_stream_window_size", 65536);
    h->initial_connection_window_size = opt_u32(o, "initial_connection_window_size", 1024 * 1024);
    h->hpack_table_size = opt_u32(o, "hpack_table_size", 4096);
    h->max_outbound_frames = opt_u32(o, "max_outbound_frames", 10000);
    h->max_outbound_control_frames = opt_u32(o, "max_outbound_control_frames", 1000);
    h->max_consecutive_inbound_frames_with_empty_payload =
        opt_u32(o, "max_consecutive_inbound_frames_with_empty_payload", 1);
    h->max_inbound_priority_frames_per_stream = opt_u32(o, "max_inbound_priority_frames_per_stream", 100);
    h->max_inbound_window_update_frames_per_data_frame_sent =
        opt_u32(o, "max_inbound_window_update_frames_per_data_frame_sent", 10);
    h->stream_error_on_invalid_http_messaging =
        herald_cfg_bool(herald_cfg_get(o, "stream_error_on_invalid_http_messaging"), false) ||
        herald_cfg_bool(herald_cfg_get(n, "stream_error_on_invalid_http_message"), false);
    h->max_header_list_bytes = cm->limits.max_request_headers_kb * 1024;
    h->max_headers_count = cm->limits.max_headers_count;
    h->premature_reset_total_stream_count = 500;
    cm->h2_allow_connect = herald_cfg_bool(herald_cfg_get(o, "allow_connect"), false);
    h->enable_connect_protocol = cm->h2_allow_connect;
    h2_keepalive_cfg_read(herald_cfg_get(o, "connection_keepalive"), &cm->h2_keepalive);
    cm->drain_timeout_ms = herald_cfg_duration_ms(herald_cfg_get(n, "drain_timeout"), 5000);
    if (h->initial_stream_window_size < 65535 || h->initial_stream_window_size > 0x7fffffff) {
        herald_cfg_errorf(herald_cfg_get(o, "initial_stream_window_size"), err,
                          "initial_stream_window_size must be between 65535 and 2147483647");
        return -1;
    }
    if (h->initial_connection_window_size < 65535 || h->initial_connection_window_size > 0x7fffffff) {
        herald_cfg_errorf(herald_cfg_get(o, "initial_connection_window_size"), err,
                          "initial_connection_window_size must be between 65535 and 2147483647");
        return -1;
    }
    if (h->max_concurrent_streams < 1) {
        herald_cfg_errorf(herald_cfg_get(o, "max_concurrent_streams"), err,
                          "max_concurrent_streams must be at least 1");
        return -1;
    }
    return 0;
}

/* One entry of http_filters resolved like core/filters.c does network filters. */
static int make_http_filter(struct herald_http_cm *cm, const struct herald_cfg *f,
                            const struct herald_filter_env *env, struct cfg_diag *d, bool last, bool after_last)
{
    const char *name = herald_cfg_str(herald_cfg_get(f, "name"), "");
    const struct herald_cfg *tc0 = herald_cfg_get(f, "typed_config");
    if (tc0 && herald_cfg_type(tc0) == HERALD_CFG_NULL)
        tc0 = NULL;
    const char *url = herald_cfg_str(herald_cfg_get(tc0, "@type"), NULL);
    char *type_url = NULL;
    if (url) {
        const char *slash = strrchr(url, '/');
        type_url = xstrdup(slash ? slash + 1 : url);
        if (!strcmp(type_url, "xds.type.v3.TypedStruct") || !strcmp(type_url, "udpa.type.v1.TypedStruct")) {
            free(type_url);
            type_url = NULL;
        }
    }
    bool disabled = herald_cfg_bool(herald_cfg_get(f, "disabled"), false);
    if (disabled && after_last) {
        free(type_url);
        return 0;      /* behind the terminal filter: no route could reach it */
    }
    char *err = NULL;
    const struct plugin *p = plugin_find(*name ? name : NULL, type_url, HERALD_PLUGIN_HTTP_FILTER, &err);
    free(type_url);
    if (!p) {
        if (herald_cfg_bool(herald_cfg_get(f, "is_optional"), false)) {
            herald_env_warn(env, f, "optional HTTP filter '%s' is not available: left out (%s)", name, err);
            free(err);
            return 0;
        }
        const char *hint = *name ? schema_v2_filter_hint(name) : NULL;
        if (hint)
            diag_error(d, f, "%s; '%s' is a v2-era name: use '%s'", err, name, hint);
        else
            diag_error(d, f, "%s", err);
        free(err);
        return -1;
    }
    struct herald_cfg *tc = (struct herald_cfg *)tc0, *empty = NULL;
    if (!tc) {
        empty = cfg_new(HERALD_CFG_OBJECT, f);
        tc = empty;
    }
    if (p->desc->config_schema && schema_check(tc, p->desc->config_schema, d) < 0) {
        cfg_free(empty);
        return -1;
    }
    struct herald_filter_env fenv = *env;
    fenv.filter_name = p->desc->name;
    fenv.stat_prefix = cm->stat_prefix;
    const struct herald_http_filter_ops *ops = p->desc->ops;
    void *conf = NULL;
    int rc = ops->config_create ? ops->config_create(tc, &fenv, &conf, &err) : 0;
    if (rc < 0) {
        if (err)
            diag_error_take(d, err);
        else
            diag_error(d, tc, "HTTP filter '%s' rejected its configuration", p->desc->name);
        cfg_free(empty);
        return -1;
    }
    if (empty)
        cfg_set((struct herald_cfg *)f, "typed_config", empty);
    struct http_filter *hf = &cm->filters[cm->nfilters++];
    hf->plugin = p;
    hf->ops = ops;
    hf->conf = conf;
    hf->name = xstrdup(name);
    hf->default_off = disabled;
    if (disabled)
        cm->route_toggles = true;
    bool terminal = p->desc->flags & HERALD_PLUGIN_TERMINAL;
    if (terminal && disabled) {
        diag_error(d, f, "'%s' is the terminal HTTP filter: it cannot be disabled", p->desc->name);
        return -1;
    }
    if (terminal && !last) {
        diag_error(d, f, "'%s' is a terminal HTTP filter and must be the last of http_filters",
                   p->desc->name);
        return -1;
    }
    if (!terminal && last) {
        diag_error(d, f, "the last HTTP filter must be a terminal filter (envoy.filters.http.router); "
                   "'%s' is not", p->desc->name);
        return -1;
    }
    return 0;
}

static const char *enum_str(const struct herald_cfg *n, const char *def) { return herald_cfg_str(n, def); }

/* ---------------------------------------------------------------- typed_per_filter_config */

#define FILTER_CONFIG_TYPE "envoy.config.route.v3.FilterConfig"

struct resolve_ctx {
    struct herald_http_cm *cm;
    const struct herald_filter_env *env;
    struct cfg_diag *d;
    bool bad;
};

/* A per-route value: the filter its key names makes it into a conf. Envoy's
 * FilterConfig wrapper {config, is_optional, disabled} is unwrapped: disabled
 * true turns the filter off where it applies (the most specific level
 * decides); any other entry turns it on, which is how a filter that
 * http_filters disables is enabled for some routes. */

/* A per-route config's @type names the filter's per-route message (Envoy finds
 * the message by it): a Buffer where a BufferPerRoute belongs would otherwise
 * fail field by field, far from the mistake. Compared by the message's own
 * name, so that v2 and v3 spellings of one message both pass. */
static bool per_route_type_ok(const struct herald_cfg *tc, const struct herald_message *want, struct cfg_diag *d)
{
    const struct herald_cfg *t = herald_cfg_get(tc, "@type");
    const char *type = herald_cfg_str(t, NULL);
    if (!type || !want->name)
        return true;
    const char *got = strrchr(type, '.'), *exp = strrchr(want->name, '.');
    got = got ? got + 1 : type;
    exp = exp ? exp + 1 : want->name;
    if (!strcmp(got, exp))
        return true;
    const char *slash = strrchr(type, '/');
    diag_error(d, t, "wrong @type for this filter's per-route configuration: %s (expected %s)",
               slash ? slash + 1 : type, want->name);
    return false;
}
static void resolve_filter_config(struct route_filter_config *fc, void *arg)
{
    struct resolve_ctx *rx = arg;
    struct herald_http_cm *cm = rx->cm;
    size_t i = 0;
    while (i < cm->nfilters && strcmp(cm->filters[i].name, fc->name) != 0)
        i++;
    if (i == cm->nfilters) {
        diag_error(rx->d, fc->node, "typed_per_filter_config names '%s': no http_filters entry of this "
                   "connection manager has that name", fc->name);
        rx->bad = true;
        return;
    }
    const struct http_filter *hf = &cm->filters[i];
    const struct herald_cfg *tc = fc->node;
    const char *type = herald_cfg_str(herald_cfg_get(tc, "@type"), NULL);
    const char *slash = type ? strrchr(type, '/') : NULL;
    bool optional = false;
    if (type && !strcmp(slash ? slash + 1 : type, FILTER_CONFIG_TYPE)) {
        const struct herald_cfg *dis = NULL;
        for (size_t k = 0; k < herald_cfg_len(tc); k++) {
            const char *key = herald_cfg_key_at(tc, k);
            if (!strcmp(key, "disabled")) {
                dis = herald_cfg_at(tc, k);
                if (herald_cfg_type(dis) != HERALD_CFG_BOOL) {
                    diag_error(rx->d, dis, FILTER_CONFIG_TYPE ".disabled must be true or false");
                    rx->bad = true;
                    return;
                }
            } else if (strcmp(key, "@type") && strcmp(key, "config") && strcmp(key, "is_optional")) {
                diag_error(rx->d, herald_cfg_at(tc, k), "unknown field '%s' in " FILTER_CONFIG_TYPE, key);
                rx->bad = true;
                return;
            }
        }
        optional = herald_cfg_bool(herald_cfg_get(tc, "is_optional"), false);
        fc->filter = i;
        if (herald_cfg_bool(dis, false)) {
            /* off here: a config beside it would never be used (Envoy ignores it too) */
            fc->disabled = true;
            cm->route_toggles = true;
            return;
        }
        const struct herald_cfg *inner = herald_cfg_get(tc, "config");
        if (!inner && dis)
            return;    /* {disabled: false}: on, with the filter's own configuration */
        if (!inner) {
            diag_error(rx->d, fc->node, FILTER_CONFIG_TYPE " needs config (or disabled)");
            rx->bad = true;
            return;
        }
        tc = inner;
        /* google.protobuf.Empty, the placeholder Envoy's users write to turn on a
         * filter that takes no per-route configuration */
        const char *it = herald_cfg_str(herald_cfg_get(tc, "@type"), NULL);
        const char *is = it ? strrchr(it, '/') : NULL;
        if (it && !strcmp(is ? is + 1 : it, "google.protobuf.Empty") && herald_cfg_len(tc) == 1)
            return;
    }
    const struct herald_http_filter_ops *ops = hf->ops;
    if (!HTTP_OPS_HAS(ops, route_config_create) || !ops->route_config_create) {
        if (optional) {
            fc->filter = i;    /* is_optional: the config is dropped, the filter still turned on */
            return;
        }
        diag_error(rx->d, fc->node, "HTTP filter '%s' (%s) takes no per-route configuration", fc->name,
                   hf->plugin->desc->name);
        rx->bad = true;
        return;
    }
    if (ops->route_config_schema && !per_route_type_ok(tc, ops->route_config_schema, rx->d)) {
        rx->bad = true;
        return;
    }
    if (ops->route_config_schema && schema_check((struct herald_cfg *)tc, ops->route_config_schema, rx->d) < 0) {
        rx->bad = true;
        return;
    }
    struct herald_filter_env fenv = *rx->env;
    fenv.filter_name = hf->plugin->desc->name;
    fenv.stat_prefix = cm->stat_prefix;
    char *err = NULL;
    void *conf = NULL;
    if (ops->route_config_create(tc, &fenv, &conf, &err) < 0) {
        if (err)
            diag_error_take(rx->d, err);
        else
            diag_error(rx->d, tc, "HTTP filter '%s' rejected this per-route configuration", fc->name);
        rx->bad = true;
        return;
    }
    fc->filter = i;
    fc->conf = conf;
}

static void destroy_filter_config(struct route_filter_config *fc, void *arg)
{
    struct herald_http_cm *cm = arg;
    if (fc->filter < cm->nfilters && fc->conf) {
        const struct herald_http_filter_ops *ops = cm->filters[fc->filter].ops;
        if (HTTP_OPS_HAS(ops, route_config_destroy) && ops->route_config_destroy)
            ops->route_config_destroy(fc->conf);
    }
    fc->conf = NULL;
    fc->filter = SIZE_MAX;
}

/* the most specific one: the first of the chain */
void *herald_http_stream_route_config(struct herald_http_stream *s, const void *filter_conf)
{
    void *conf;
    return herald_http_stream_route_config_chain(s, filter_conf, &conf, 1) ? conf : NULL;
}

size_t herald_http_stream_route_config_chain(struct herald_http_stream *s, const void *filter_conf, void **confs,
                                             size_t max)
{
    struct herald_http_cm *cm = s->cc->cm;
    if (!route_table_has_filter_configs(cm->routes) || !filter_conf)
        return 0;
    for (size_t i = 0; i < cm->nfilters; i++)
        if (cm->filters[i].conf == filter_conf) {
            const struct route_filter_config *fc[3];
            size_t n = route_filter_config_chain(stream_route(s), i, fc, 3), out = 0;
            for (size_t k = 0; k < n && out < max; k++)
                if (fc[k]->conf)   /* an on/off switch carries no configuration */
                    confs[out++] = fc[k]->conf;
            return out;
        }
    return 0;
}

void herald_http_cm_destroy(struct herald_http_cm *cm)
{
    if (!cm)
        return;
    if (cm->routes)
        route_table_foreach_filter_config(cm->routes, destroy_filter_config, cm);
    for (size_t i = cm->nfilters; i-- > 0;) {
        if (cm->filters[i].ops->config_destroy)
            cm->filters[i].ops->config_destroy(cm->filters[i].conf);
        free(cm->filters[i].name);
    }
    free(cm->filters);
    for (size_t i = 0; i < cm->nlogs; i++)
        herald_access_log_destroy(cm->logs[i]);
    free(cm->logs);
    local_reply_free(cm->local_reply);
    if (cm->routes)
        route_table_free(cm->routes);
    for (size_t i = 0; i < cm->nupgrades; i++)
        free(cm->upgrades[i]);
    free(cm->upgrades);
    free(cm->upgrade_enabled);
    free(cm->stat_prefix);
    free(cm->server_name);
    free(cm->via);
    free(cm->default_host_for_http_10);
    free(cm);
}

struct check_clusters {
    const struct herald_filter_env *env;
    struct cfg_diag *d;
    int bad;
};

static void check_cluster(const char *cluster, const struct herald_cfg *at, void *arg)
{
    struct check_clusters *cc = arg;
    if (!cluster) {
        /* a cluster_header may name any of them: none is "never referenced" */
        env_mark_all_clusters_referenced(cc->env);
        return;
    }
    if (herald_env_cluster_exists(cc->env, cluster) || !cc->d)
        return;
    diag_error(cc->d, at, "route names unknown cluster '%s' (set validate_clusters: false to allow it)", cluster);
    cc->bad++;
}

struct herald_http_cm *herald_http_cm_create(const struct herald_cfg *n, const struct herald_filter_env *env,
                                             char **err)
{
    struct cfg_diag local = {0};
    struct cfg_diag *d = env->diag ? env->diag : &local;
    size_t errors_before = d->nerrors;
    struct herald_http_cm *cm = xcalloc(1, sizeof(*cm));

    const char *sp = herald_cfg_str(herald_cfg_get(n, "stat_prefix"), "");
    size_t splen = strlen(sp);
    cm->stat_prefix = xasprintf("http.%.*s", (int)(splen && sp[splen - 1] == '.' ? splen - 1 : splen), sp);

    const char *codec = enum_str(herald_cfg_get(n, "codec_type"), "AUTO");
    if (!strcasecmp(codec, "HTTP1")) {
        cm->codec = CODEC_HTTP1;
    } else if (!strcasecmp(codec, "HTTP2")) {
        cm->codec = CODEC_HTTP2;
    } else if (!strcasecmp(codec, "AUTO")) {
        cm->codec = CODEC_AUTO;
    } else {
        herald_cfg_errorf(herald_cfg_get(n, "codec_type"), err, "not supported: codec_type %s", codec);
        goto fail_err;
    }
    const struct herald_cfg *rc = herald_cfg_get(n, "route_config");
    if (!rc) {
        herald_cfg_errorf(n, err, "route_config is required (rds and scoped_routes are not supported)");
        goto fail_err;
    }
    cm->routes = route_table_create(rc, d);
    if (!cm->routes)
        goto fail;
    /* validate_clusters defaults to true for an inline route_config, as in
     * Envoy: a typo in a cluster name stops start-up instead of 503s later. */
    if (herald_cfg_bool(herald_cfg_get(rc, "validate_clusters"), true)) {
        struct check_clusters cc = {.env = env, .d = d};
        route_table_foreach_cluster(cm->routes, check_cluster, &cc);
        if (cc.bad)
            goto fail;
    } else {
        struct check_clusters cc = {.env = env, .d = NULL};
        route_table_foreach_cluster(cm->routes, check_cluster, &cc); /* only marks them referenced */
    }

    /* http_filters; none means the router alone, as Envoy does */
    const struct herald_cfg *hf = herald_cfg_get(n, "http_filters");
    size_t nf = herald_cfg_len(hf);
    cm->filters = xcalloc(nf ? nf : 1, sizeof(*cm->filters));
    int bad = 0;
    if (nf == 0) {
        char *e = NULL;
        const struct plugin *p =
            plugin_find("envoy.filters.http.router", NULL, HERALD_PLUGIN_HTTP_FILTER, &e);
        if (!p) {
            diag_error(d, n, "http_filters is empty and the router is not available: %s", e);
            free(e);
            goto fail;
        }
        struct herald_cfg *empty = cfg_new(HERALD_CFG_OBJECT, n);
        struct herald_filter_env fenv = *env;
        fenv.stat_prefix = cm->stat_prefix;
        fenv.filter_name = p->desc->name;
        const struct herald_http_filter_ops *ops = p->desc->ops;
        void *conf = NULL;
        if (p->desc->config_schema && schema_check(empty, p->desc->config_schema, d) < 0) {
            cfg_free(empty);
            goto fail;
        }
        if (ops->config_create && ops->config_create(empty, &fenv, &conf, &e) < 0) {
            if (e)
                diag_error_take(d, e);
            cfg_free(empty);
            goto fail;
        }
        cfg_free(empty); /* the default router keeps nothing of an empty config */
        cm->filters[0] = (struct http_filter){.plugin = p, .ops = ops, .conf = conf,
                                              .name = xstrdup("envoy.filters.http.router")};
        cm->nfilters = 1;
    }
    /* the last one that is not disabled must be terminal */
    size_t last = nf;
    for (size_t i = nf; i-- > 0;)
        if (!herald_cfg_bool(herald_cfg_get(herald_cfg_at(hf, i), "disabled"), false)) {
            last = i;
            break;
        }
    for (size_t i = 0; i < nf; i++)
        if (make_http_filter(cm, herald_cfg_at(hf, i), env, d, i == last, i > last) < 0)
            bad = 1;
    if (bad)
        goto fail;
    if (nf && (cm->nfilters == 0 ||
               !(cm->filters[cm->nfilters - 1].plugin->desc->flags & HERALD_PLUGIN_TERMINAL))) {
        diag_error(d, hf, "http_filters must end with a terminal filter (envoy.filters.http.router)");
        goto fail;
    }
    if (route_table_has_filter_configs(cm->routes)) {
        struct resolve_ctx rx = {.cm = cm, .env = env, .d = d};
        route_table_foreach_filter_config(cm->routes, resolve_filter_config, &rx);
        if (rx.bad)
            goto fail;
    }

    const struct herald_cfg *sn = herald_cfg_get(n, "server_name");
    cm->server_name = xstrdup(herald_cfg_str(sn, "herald"));
    const char *sht = enum_str(herald_cfg_get(n, "server_header_transformation"), "OVERWRITE");
    cm->server_transform = !strcasecmp(sht, "APPEND_IF_ABSENT") ? SERVER_APPEND_IF_ABSENT
                           : !strcasecmp(sht, "PASS_THROUGH")   ? SERVER_PASS_THROUGH
                                                                : SERVER_OVERWRITE;
    const char *via = herald_cfg_str(herald_cfg_get(n, "via"), NULL);
    cm->via = via && *via ? xstrdup(via) : NULL;
    cm->use_remote_address = herald_cfg_bool(herald_cfg_get(n, "use_remote_address"), false);
    cm->skip_xff_append = herald_cfg_bool(herald_cfg_get(n, "skip_xff_append"), false);
    const char *sto = herald_cfg_str(herald_cfg_get(herald_cfg_get(n, "scheme_header_transformation"),
                                                    "scheme_to_overwrite"), NULL);
    cm->scheme_overwrite = !sto ? NULL : !strcmp(sto, "https") ? "https" : "http";
    cm->xff_num_trusted_hops = (uint32_t)herald_cfg_int(herald_cfg_get(n, "xff_num_trusted_hops"), 0);
    cm->generate_request_id = herald_cfg_bool(herald_cfg_get(n, "generate_request_id"), true);
    cm->preserve_external_request_id =
        herald_cfg_bool(herald_cfg_get(n, "preserve_external_request_id"), false);
    cm->always_set_request_id =
        herald_cfg_bool(herald_cfg_get(n, "always_set_request_id_in_response"), false);
    cm->keep_xfcc = !strcasecmp(enum_str(herald_cfg_get(n, "forward_client_cert_details"), "SANITIZE"),
                                "ALWAYS_FORWARD_ONLY");

    const struct herald_cfg *co = herald_cfg_get(n, "common_http_protocol_options");
    cm->idle_timeout_ms = herald_cfg_duration_ms(herald_cfg_get(co, "idle_timeout"), 3600 * 1000);
    cm->max_connection_duration_ms = herald_cfg_duration_ms(herald_cfg_get(co, "max_connection_duration"), 0);
    cm->max_stream_duration_ms = herald_cfg_duration_ms(herald_cfg_get(co, "max_stream_duration"), 0);
    cm->max_requests_per_connection =
        (uint32_t)herald_cfg_int(herald_cfg_get(co, "max_requests_per_connection"), 0);
    cm->limits.max_headers_count = (uint32_t)herald_cfg_int(herald_cfg_get(co, "max_headers_count"), 100);
    const char *us = enum_str(herald_cfg_get(co, "headers_with_underscores_action"), "ALLOW");
    cm->underscores = !strcasecmp(us, "REJECT_REQUEST") ? US_REJECT
                      : !strcasecmp(us, "DROP_HEADER")  ? US_DROP
                                                        : US_ALLOW;
    cm->limits.max_request_headers_kb =
        (uint32_t)herald_cfg_int(herald_cfg_get(n, "max_request_headers_kb"), 60);

    const struct herald_cfg *h1 = herald_cfg_get(n, "http_protocol_options");
    cm->allow_absolute_url = herald_cfg_bool(herald_cfg_get(h1, "allow_absolute_url"), true);
    cm->accept_http_10 = herald_cfg_bool(herald_cfg_get(h1, "accept_http_10"), false);
    const char *dh = herald_cfg_str(herald_cfg_get(h1, "default_host_for_http_10"), NULL);
    cm->default_host_for_http_10 = dh && *dh ? xstrdup(dh) : NULL;
    cm->enable_trailers = herald_cfg_bool(herald_cfg_get(h1, "enable_trailers"), false);
    const struct herald_cfg *acl = herald_cfg_get(h1, "allow_chunked_length");
    if (herald_cfg_bool(acl, false)) {
        herald_cfg_errorf(acl, err,
                          "not supported: allow_chunked_length: true (herald rejects Content-Length "
                          "beside Transfer-Encoding, as Envoy does by default)");
        goto fail_err;
    }

    cm->stream_idle_timeout_ms = herald_cfg_duration_ms(herald_cfg_get(n, "stream_idle_timeout"), 300 * 1000);
    cm->request_timeout_ms = herald_cfg_duration_ms(herald_cfg_get(n, "request_timeout"), 0);
    cm->request_headers_timeout_ms = herald_cfg_duration_ms(herald_cfg_get(n, "request_headers_timeout"), 0);
    cm->delayed_close_ms = herald_cfg_duration_ms(herald_cfg_get(n, "delayed_close_timeout"), 1000);

    const struct herald_cfg *ups = herald_cfg_get(n, "upgrade_configs");
    for (size_t i = 0; i < herald_cfg_len(ups); i++) {
        const struct herald_cfg *u = herald_cfg_at(ups, i);
        if (!cm->upgrade_enabled)
            cm->upgrade_enabled = xcalloc(herald_cfg_len(ups), sizeof(bool));
        cm->upgrade_enabled[cm->nupgrades] = herald_cfg_bool(herald_cfg_get(u, "enabled"), true);
        char **slot = VEC_PUSH(cm->upgrades, cm->nupgrades, cm->capupgrades);
        *slot = xstrdup(herald_cfg_str(herald_cfg_get(u, "upgrade_type"), ""));
    }
    cm->normalize_path = herald_cfg_bool(herald_cfg_get(n, "normalize_path"), false);
    cm->merge_slashes = herald_cfg_bool(herald_cfg_get(n, "merge_slashes"), false);
    const char *esc = enum_str(herald_cfg_get(n, "path_with_escaped_slashes_action"), "KEEP_UNCHANGED");
    cm->escaped_slashes = !strcasecmp(esc, "REJECT_REQUEST")          ? ESC_REJECT
                          : !strcasecmp(esc, "UNESCAPE_AND_FORWARD")  ? ESC_UNESCAPE_FORWARD
                          : !strcasecmp(esc, "UNESCAPE_AND_REDIRECT") ? ESC_UNESCAPE_REDIRECT
                                                                     : ESC_KEEP;
    cm->strip_matching_host_port = herald_cfg_bool(herald_cfg_get(n, "strip_matching_host_port"), false);
    cm->strip_any_host_port = herald_cfg_bool(herald_cfg_get(n, "strip_any_host_port"), false);
    cm->strip_trailing_host_dot = herald_cfg_bool(herald_cfg_get(n, "strip_trailing_host_dot"), false);

    const struct herald_cfg *logs = herald_cfg_get(n, "access_log");
    size_t nl = herald_cfg_len(logs);
    cm->logs = xcalloc(nl ? nl : 1, sizeof(*cm->logs));
    for (size_t i = 0; i < nl; i++) {
        struct herald_access_log *l =
            herald_access_log_create(herald_cfg_at(logs, i), env, HERALD_DEFAULT_ACCESS_LOG_FORMAT, err);
        if (!l)
            goto fail_err;
        cm->logs[cm->nlogs++] = l;
        cm->log_upstream_tls |= access_log_uses(l, "UPSTREAM_TLS_") || access_log_uses(l, "UPSTREAM_PEER_");
        cm->log_upstream_hostname |= access_log_uses(l, "UPSTREAM_HOST_NAME");
        cm->log_dn_wire |= access_log_uses(l, "DOWNSTREAM_WIRE_BYTES_") || access_log_uses(l, "DOWNSTREAM_HEADER_BYTES_");
        cm->log_up_wire |= access_log_uses(l, "UPSTREAM_WIRE_BYTES_") || access_log_uses(l, "UPSTREAM_HEADER_BYTES_");
    }

    const struct herald_cfg *lrc = herald_cfg_get(n, "local_reply_config");
    if (lrc && !(cm->local_reply = local_reply_create(lrc, err)))
        goto fail_err;

    if (h2_options(cm, n, err) < 0)
        goto fail_err;
    cm->h2set.count_frame_bytes = cm->log_dn_wire;
    if (cm->log_up_wire)
        atomic_store_explicit(&any_counts_upstream_bytes, true, memory_order_relaxed);
    make_stats(&cm->st, cm->stat_prefix);
    make_h2_stats(cm);
    diag_free(&local);
    return cm;

fail:
    /* the errors are in the diagnostics already: hand the last one back as
     * ours, so that the caller does not add a vaguer one */
    if (d->nerrors > errors_before) {
        *err = d->errors[--d->nerrors];
    } else if (!*err) {
        *err = xstrdup("invalid HttpConnectionManager configuration");
    }
fail_err:
    herald_http_cm_destroy(cm);
    if (d == &local) {
        if (!*err && local.nerrors)
            *err = xstrdup(local.errors[0]);
        diag_free(&local);
    }
    return NULL;
}
