/* Request mirroring (RouteAction.request_mirror_policies): a copy of the
 * request, body and trailers included, goes to a host of another cluster;
 * its answer is read and thrown away and nothing of it reaches the client,
 * as with Envoy's shadows. The copy's :authority gets "-shadow" appended
 * (before any port) unless the policy says not to.
 *
 * A shadow belongs to its router session until the session ends. Then a
 * shadow whose request went out whole is left to finish alone (bounded by
 * the route's timeout), and one still sending is cancelled: its request
 * could never be completed. */
#include <stdlib.h>
#include <string.h>

#include "router.h"

struct shadow {
    struct herald_http_upstream *u;
    struct herald_timer *timer;            /* the route's timeout */
    bool sent_all;                         /* the whole request is queued */
    bool released;                         /* the session is gone: free on completion */
};

static void shadow_free(struct shadow *sh)
{
    if (sh->u)
        herald_http_upstream_free(sh->u);
    herald_timer_free(sh->timer);
    free(sh);
}

/* The exchange is over (answered, failed or timed out): a released shadow
 * goes now, an owned one waits for its session. */
static void shadow_over(struct shadow *sh)
{
    if (sh->u) {
        struct herald_http_upstream *u = sh->u;
        sh->u = NULL;
        herald_http_upstream_free(u);
    }
    if (sh->timer)
        herald_timer_cancel(sh->timer);
    if (sh->released)
        shadow_free(sh);
}

static void sh_ready(void *arg)
{
    (void)arg;
}

static void sh_headers(void *arg, struct herald_headers *headers, bool end_stream)
{
    herald_headers_free(headers);
    if (end_stream)
        shadow_over(arg);
}

static void sh_data(void *arg, struct herald_buf *data, bool end_stream)
{
    herald_buf_drain(data, herald_buf_len(data));
    if (end_stream)
        shadow_over(arg);
}

static void sh_trailers(void *arg, struct herald_headers *trailers)
{
    herald_headers_free(trailers);
    shadow_over(arg);
}

static void sh_reset(void *arg, enum herald_upstream_reset why)
{
    (void)why;
    struct shadow *sh = arg;
    sh->u = NULL;                          /* gone with the reset */
    shadow_over(sh);
}

static const struct herald_http_upstream_cbs shadow_cbs = {
    .size = sizeof(struct herald_http_upstream_cbs),
    .on_ready = sh_ready,
    .on_headers = sh_headers,
    .on_data = sh_data,
    .on_trailers = sh_trailers,
    .on_reset = sh_reset,
};

static void on_timeout(struct herald_timer *t, void *arg)
{
    (void)t;
    shadow_over(arg);
}

/* "host:port" -> "host-shadow:port"; IPv6 literals keep their brackets. */
static void add_suffix(struct herald_headers *h)
{
    const char *a = herald_headers_get(h, ":authority");
    if (!a || !*a)
        return;
    size_t len = strlen(a), host_len = len;
    const char *colon = strrchr(a, ':');
    if (colon && (a[0] != '[' || colon > strchr(a, ']')))
        host_len = (size_t)(colon - a);
    char *v = malloc(len + sizeof("-shadow"));
    if (!v)
        abort();
    memcpy(v, a, host_len);
    memcpy(v + host_len, "-shadow", 7);
    memcpy(v + host_len + 7, a + host_len, len - host_len + 1);
    herald_headers_set(h, ":authority", v);
    free(v);
}

struct shadow *shadow_start(struct herald_http_stream *s, const struct herald_route *route, size_t policy,
                            const char *cluster,
                            const struct herald_headers *request, bool end_stream, uint64_t timeout_ms)
{
    struct herald_cluster *c = herald_cluster_get(cluster);
    struct herald_host *h = c ? herald_cluster_choose_host(c, 0) : NULL;
    if (!h)
        return NULL;
    struct shadow *sh = calloc(1, sizeof(*sh));
    if (!sh)
        abort();
    sh->u = herald_http_upstream_new_for(c, h, &shadow_cbs, sh, HERALD_PRIORITY_DEFAULT, herald_http_stream_conn(s));
    if (!sh->u) {
        free(sh);
        return NULL;
    }
    struct herald_headers *copy = herald_headers_copy(request);
    herald_route_apply_request_stream(route, copy, herald_host_hostname(h), s);
    if (herald_route_mirror_host_suffix(route, policy))
        add_suffix(copy);
    if (timeout_ms) {
        sh->timer = herald_timer_new(on_timeout, sh);
        herald_timer_arm(sh->timer, timeout_ms);
    }
    sh->sent_all = end_stream;
    herald_http_upstream_send_headers(sh->u, copy, end_stream);
    return sh;
}

void shadow_data(struct shadow *sh, const struct herald_buf *data, bool end_stream)
{
    if (!sh->u || sh->sent_all)
        return;
    struct herald_buf *copy = herald_buf_new();
    router_buf_copy(copy, data);
    sh->sent_all = end_stream;
    herald_http_upstream_send_data(sh->u, copy, end_stream);
    herald_buf_free(copy);
}

void shadow_trailers(struct shadow *sh, const struct herald_headers *trailers)
{
    if (!sh->u || sh->sent_all)
        return;
    sh->sent_all = true;
    herald_http_upstream_send_trailers(sh->u, herald_headers_copy(trailers));
}

void shadow_release(struct shadow *sh)
{
    if (!sh->u || !sh->sent_all) {
        shadow_free(sh);                   /* over, or never to be completed */
        return;
    }
    sh->released = true;
}
