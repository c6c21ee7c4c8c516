/* tunnel.c: tunneling_config. Instead of a TCP connection to the host, an
 * HTTP request to it through the core's upstream pools: a CONNECT to
 * hostname (over HTTP/2 when the cluster speaks it: one stream of a shared
 * connection), or with use_post a POST to post_path whose body is the
 * client's bytes. A 2xx answer opens the tunnel; from then on the request
 * body carries the client's bytes and the response body the host's, each
 * end a half-close of its direction. Any other answer, or no answer, is a
 * failed connect attempt, as Envoy's. */
#include <stdlib.h>
#include <string.h>

#include "tcp_proxy.h"

struct tcp_tunnel {
    const struct tcp_tunnel_cbs *cbs;
    void *arg;
    struct herald_http_upstream *u;
    bool post;                         /* use_post: open once the request can go */
    bool open, answered, ended_in;
};

static void gone(struct tcp_tunnel *t, enum herald_upstream_reset why, int status)
{
    struct herald_http_upstream *u = t->u;
    t->u = NULL;
    if (u)
        herald_http_upstream_free(u);
    t->cbs->on_failed(t->arg, !t->open, why, status);
}

/* The host's side ended without a body byte more (an answer that ended at
 * once, or trailers): an empty end to the session. */
static void end_empty(const struct tcp_tunnel_cbs *cbs, void *sess)
{
    struct herald_buf *none = herald_buf_new();
    cbs->on_data(sess, none, true);
    herald_buf_free(none);
}

/* A POST's answer may wait for the whole body (an HTTP/1.1 server does), so
 * its bytes flow as soon as a connection is there; its answer is checked
 * when it comes. */
static void on_ready(void *arg)
{
    struct tcp_tunnel *t = arg;
    if (t->post && !t->open) {
        t->open = true;
        t->cbs->on_open(t->arg);
    }
}

static void on_headers(void *arg, struct herald_headers *h, bool end_stream)
{
    struct tcp_tunnel *t = arg;
    const char *st = herald_headers_get(h, ":status");
    int status = st ? atoi(st) : 0;
    herald_headers_free(h);
    if (status >= 100 && status < 200)
        return;
    if (t->answered || status < 200 || status > 299) {
        /* not a tunnel: the attempt failed (Envoy counts it as a connect failure) */
        gone(t, HERALD_UPSTREAM_RESET_CONNECT_FAILURE, status);
        return;
    }
    bool was_open = t->open;
    t->open = t->answered = true;
    t->ended_in = end_stream;
    /* copies: the session may free t from on_open */
    const struct tcp_tunnel_cbs *cbs = t->cbs;
    void *sess = t->arg;
    if (!was_open)
        cbs->on_open(sess);
    if (end_stream)
        end_empty(cbs, sess);
}

static void on_data(void *arg, struct herald_buf *data, bool end_stream)
{
    struct tcp_tunnel *t = arg;
    if (!t->answered || t->ended_in) {
        herald_buf_drain(data, herald_buf_len(data));
        return;
    }
    t->ended_in = end_stream;
    t->cbs->on_data(t->arg, data, end_stream);
}

static void on_trailers(void *arg, struct herald_headers *trailers)
{
    struct tcp_tunnel *t = arg;
    herald_headers_free(trailers);
    if (!t->answered || t->ended_in)
        return;
    t->ended_in = true;
    end_empty(t->cbs, t->arg);
}

static void on_reset(void *arg, enum herald_upstream_reset why)
{
    struct tcp_tunnel *t = arg;
    t->u = NULL; /* gone with the callback */
    t->cbs->on_failed(t->arg, !t->open, why, 0);
}

static void on_watermark(void *arg, bool above)
{
    struct tcp_tunnel *t = arg;
    t->cbs->on_watermark(t->arg, above);
}

static const struct herald_http_upstream_cbs upstream_cbs = {
    .size = sizeof(struct herald_http_upstream_cbs),
    .on_ready = on_ready,
    .on_headers = on_headers,
    .on_data = on_data,
    .on_trailers = on_trailers,
    .on_reset = on_reset,
    .on_watermark = on_watermark,
};

struct tcp_tunnel *tcp_tunnel_start(const struct tcp_proxy_tunneling *cfg, struct herald_cluster *c,
                                    struct herald_host *h, struct herald_conn *d, herald_log_field_cb field,
                                    void *field_ctx, const struct tcp_tunnel_cbs *cbs, void *arg)
{
    struct tcp_tunnel *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->cbs = cbs;
    t->arg = arg;
    t->post = cfg->use_post;
    t->u = herald_http_upstream_new_for(c, h, &upstream_cbs, t, HERALD_PRIORITY_DEFAULT, d);
    if (!t->u) {
        free(t);
        return NULL;
    }
    struct herald_headers *req = herald_headers_new();
    char *authority = herald_format_render(cfg->hostname, field, field_ctx);
    if (cfg->use_post) {
        herald_headers_set(req, ":method", "POST");
        herald_headers_set(req, ":scheme", "http");
        herald_headers_set(req, ":path", cfg->post_path);
    } else {
        herald_headers_set(req, ":method", "CONNECT");
    }
    herald_headers_set(req, ":authority", authority ? authority : "");
    free(authority);
    if (cfg->headers)
        herald_header_options_apply_fields(cfg->headers, req, field, field_ctx);
    herald_http_upstream_send_headers(t->u, req, false);
    return t;
}

void tcp_tunnel_write(struct tcp_tunnel *t, struct herald_buf *data, bool end_stream)
{
    if (t->u)
        herald_http_upstream_send_data(t->u, data, end_stream);
    else
        herald_buf_drain(data, herald_buf_len(data));
}

void tcp_tunnel_pause_reading(struct tcp_tunnel *t, bool pause)
{
    if (t->u)
        herald_http_upstream_pause_reading(t->u, pause);
}

void tcp_tunnel_free(struct tcp_tunnel *t)
{
    if (t->u)
        herald_http_upstream_free(t->u);
    free(t);
}
