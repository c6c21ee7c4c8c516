/* ext_authz (HTTP): envoy.filters.http.ext_authz, Envoy's external
 * authorization filter with its HTTP service. Before a request goes on, a
 * check request goes to http_service.server_uri.cluster: the client's method,
 * path_prefix + its path, the headers Envoy sends (Authorization, :method,
 * :path, Host, what allowed_headers matches, minus disallowed_headers; values
 * of one name joined with ","), headers_to_add, content-length and, with
 * with_request_body, the buffered body and x-envoy-auth-partial-body. The
 * request (and its body) waits for the answer:
 *
 *   200            allowed: allowed_upstream_headers set on the request,
 *                  allowed_upstream_headers_to_append added, the names in
 *                  x-envoy-auth-headers-to-remove removed, and
 *                  allowed_client_headers_on_success added to the response;
 *   5xx, no answer, reset, server_uri.timeout
 *                  an error: failure_mode_allow lets the request go on,
 *                  else the client gets status_on_error (403);
 *   anything else  denied: the client gets that status, the answer's body
 *                  and the headers allowed_client_headers matches (all of
 *                  them when it is unset).
 *
 * Per route (ExtAuthzPerRoute in typed_per_filter_config): disabled skips
 * the check, check_settings may turn the body off or change its settings.
 *
 * Stats (Envoy's): http.<hcm prefix>.ext_authz.[<stat_prefix>.]ok, denied,
 * error, disabled, failure_mode_allowed, and cluster.<route's cluster>.
 * ext_authz.ok, denied, error, failure_mode_allowed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ext_authz.h"

#define COMPONENT "ext_authz"
#define MAX_ANSWER_BODY (1024 * 1024)  /* a bigger answer is an error */

enum state {
    ST_IDLE = 0,                       /* not checking (yet, or at all) */
    ST_BUFFERING,                      /* collecting the body for the check */
    ST_CALLING,                        /* the check is out */
    ST_DONE,                           /* decided */
};

struct session {
    struct authz_conf *conf;
    struct herald_http_stream *s;
    struct herald_headers *req;        /* the request's headers (the stream's) */
    struct cluster_stats *cs;          /* the route's cluster's counters, or NULL */
    enum state state;
    struct body_settings body;         /* this request's: the filter's or the route's */
    struct herald_buf *body_buf;       /* up to body.max_bytes of the request body */
    uint64_t body_seen;                /* request body bytes seen while buffering */
    bool request_ended;
    bool paused;                       /* we paused decoding during the check */
    bool replied;                      /* answered from here (denied, error, 413) */
    struct herald_http_upstream *u;
    struct herald_timer *timer;
    struct herald_headers *answer;     /* the authorization service's response headers */
    struct herald_buf *answer_body;
    struct herald_headers *deny_headers;  /* for the local reply of a denial */
    struct herald_headers *client_add;    /* allowed_client_headers_on_success */
};

/* ------------------------------------------------------------ helpers */

static char *lower_dup(const char *s)
{
    char *d = strdup(s);
    if (!d)
        abort();
    for (char *p = d; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return d;
}

/* Connection-specific headers: never copied between the two exchanges. */
static bool hop_by_hop(const char *n)
{
    static const char *const names[] = {"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                                        "upgrade", "te", "content-length", NULL};
    for (size_t i = 0; names[i]; i++)
        if (!strcmp(n, names[i]))
            return true;
    return false;
}

/* Headers of the answer that may go to the request or the client. */
static bool answer_header_usable(const char *n)
{
    return n[0] != ':' && strcmp(n, "host") != 0 && !hop_by_hop(n);
}

static void count(struct herald_stat *own, struct herald_stat *cluster)
{
    herald_stat_inc(own);
    if (cluster)
        herald_stat_inc(cluster);
}

static void stop_check(struct session *ss)
{
    if (ss->u) {
        struct herald_http_upstream *u = ss->u;
        ss->u = NULL;
        herald_http_upstream_free(u);
    }
    if (ss->timer)
        herald_timer_cancel(ss->timer);
}

static void unpause(struct session *ss)
{
    if (ss->paused) {
        ss->paused = false;
        herald_http_stream_pause_decoding(ss->s, false);
    }
}

/* ------------------------------------------------------------ outcomes */

static void go_on(struct session *ss)
{
    ss->state = ST_DONE;
    unpause(ss);
    herald_http_stream_continue_decoding(ss->s);
}

static void on_error(struct session *ss, const char *why)
{
    struct authz_conf *c = ss->conf;
    stop_check(ss);
    HERALD_LOGF(HERALD_LOG_DEBUG, COMPONENT, "[S%llu] check failed: %s",
                (unsigned long long)herald_http_stream_id(ss->s), why);
    count(c->st_error, ss->cs ? ss->cs->error : NULL);
    if (c->failure_mode_allow) {
        count(c->st_failure_mode_allowed, ss->cs ? ss->cs->failure_mode_allowed : NULL);
        if (c->failure_header_add)
            herald_headers_add(ss->req, "x-envoy-auth-failure-mode-allowed", "true");
        go_on(ss);
        return;
    }
    ss->state = ST_DONE;
    ss->replied = true;
    unpause(ss);
    herald_http_stream_send_local_reply(ss->s, c->status_on_error, "", "ext_authz_error", "UAEX");
}

/* x-envoy-auth-headers-to-remove: a comma-separated list of names. */
static bool remove_listed(struct session *ss, const char *list)
{
    bool changed = false;
    char *copy = lower_dup(list);
    for (char *sv = NULL, *t = strtok_r(copy, ",", &sv); t; t = strtok_r(NULL, ",", &sv)) {
        while (*t == ' ' || *t == '\t')
            t++;
        size_t len = strlen(t);
        while (len && (t[len - 1] == ' ' || t[len - 1] == '\t'))
            t[--len] = '\0';
        /* Envoy keeps pseudo-headers and Host: the request would be malformed */
        if (!*t || t[0] == ':' || !strcmp(t, "host"))
            continue;
        changed |= herald_headers_remove(ss->req, t) > 0;
    }
    free(copy);
    return changed;
}

static void allowed(struct session *ss)
{
    struct authz_conf *c = ss->conf;
    bool changed = false;
    const char *n, *v;
    /* names in a header map are lower-case already */
    for (size_t i = 0; herald_headers_at(ss->answer, i, &n, &v); i++) {
        const char *name = n;
        if (!strcmp(name, "x-envoy-auth-headers-to-remove")) {
            changed |= remove_listed(ss, v);
        } else if (answer_header_usable(name)) {
            if (name_list_match(&c->up_set, name)) {
                herald_headers_set(ss->req, name, v);
                changed = true;
            }
            if (name_list_match(&c->up_append, name)) {
                herald_headers_add(ss->req, name, v);
                changed = true;
            }
            if (name_list_match(&c->client_ok, name)) {
                if (!ss->client_add)
                    ss->client_add = herald_headers_new();
                herald_headers_add(ss->client_add, name, v);
            }
            if (name_list_match(&c->metadata, name))
                herald_http_stream_metadata_set(ss->s, EXT_AUTHZ_NAME, name, v);
        }
    }
    if (c->clear_route_cache && changed)
        herald_http_stream_clear_route_cache(ss->s);
    count(c->st_ok, ss->cs ? ss->cs->ok : NULL);
    go_on(ss);
}

static void denied(struct session *ss, int status)
{
    struct authz_conf *c = ss->conf;
    const char *n, *v;
    for (size_t i = 0; herald_headers_at(ss->answer, i, &n, &v); i++) {
        const char *name = n;
        /* Envoy: all of them but Host when allowed_client_headers is unset, else
         * what it matches and always WWW-Authenticate and Location */
        if (answer_header_usable(name) && strcmp(name, "x-envoy-auth-headers-to-remove") != 0 &&
            (!c->client.set || name_list_match(&c->client, name) || !strcmp(name, "www-authenticate") ||
             !strcmp(name, "location"))) {
            if (!ss->deny_headers)
                ss->deny_headers = herald_headers_new();
            herald_headers_add(ss->deny_headers, name, v);
        }
    }
    count(c->st_denied, ss->cs ? ss->cs->denied : NULL);
    size_t len = ss->answer_body ? herald_buf_len(ss->answer_body) : 0;
    char *body = malloc(len + 1);
    if (!body)
        abort();
    if (len)
        herald_buf_copyout(ss->answer_body, 0, body, len);
    body[len] = '\0';
    ss->state = ST_DONE;
    ss->replied = true;
    unpause(ss);
    herald_http_stream_send_local_reply(ss->s, status, body, "ext_authz_denied", "UAEX");
    free(body);
}

/* The whole answer is in. */
static void answered(struct session *ss)
{
    stop_check(ss);
    const char *st = herald_headers_get(ss->answer, ":status");
    int status = st ? atoi(st) : 0;
    if (status == 200)
        allowed(ss);
    else if (status >= 500 && status <= 599)
        on_error(ss, "the authorization service answered 5xx");
    else
        denied(ss, status >= 200 && status <= 599 ? status : 403);
}

/* ------------------------------------------------------------ the check request */

static void cr_ready(void *arg)
{
    (void)arg;
}

static void cr_headers(void *arg, struct herald_headers *h, bool end_stream)
{
    struct session *ss = arg;
    const char *st = herald_headers_get(h, ":status");
    int status = st ? atoi(st) : 0;
    if (ss->state != ST_CALLING || (status >= 100 && status < 200)) {
        herald_headers_free(h);        /* informational: the answer is still to come */
        return;
    }
    herald_headers_free(ss->answer);
    ss->answer = h;
    if (end_stream)
        answered(ss);
}

static void cr_data(void *arg, struct herald_buf *data, bool end_stream)
{
    struct session *ss = arg;
    if (ss->state != ST_CALLING || !ss->answer) {
        herald_buf_drain(data, herald_buf_len(data));
        return;
    }
    if (!ss->answer_body)
        ss->answer_body = herald_buf_new();
    herald_buf_move(ss->answer_body, data, SIZE_MAX);
    if (herald_buf_len(ss->answer_body) > MAX_ANSWER_BODY) {
        on_error(ss, "the answer's body is too large");
        return;
    }
    if (end_stream)
        answered(ss);
}

static void cr_trailers(void *arg, struct herald_headers *trailers)
{
    struct session *ss = arg;
    herald_headers_free(trailers);
    if (ss->state == ST_CALLING && ss->answer)
        answered(ss);
}

static void cr_reset(void *arg, enum herald_upstream_reset why)
{
    struct session *ss = arg;
    ss->u = NULL;                      /* gone with the reset */
    if (ss->state != ST_CALLING)
        return;
    on_error(ss, why == HERALD_UPSTREAM_RESET_CONNECT_FAILURE ? "cannot connect to the authorization service"
                 : why == HERALD_UPSTREAM_RESET_OVERFLOW    ? "the authorization cluster's circuit breaker"
                                                            : "the authorization request was reset");
}

static const struct herald_http_upstream_cbs check_cbs = {
    .size = sizeof(struct herald_http_upstream_cbs),
    .on_ready = cr_ready,
    .on_headers = cr_headers,
    .on_data = cr_data,
    .on_trailers = cr_trailers,
    .on_reset = cr_reset,
};

static void on_timeout(struct herald_timer *t, void *arg)
{
    (void)t;
    struct session *ss = arg;
    if (ss->state == ST_CALLING)
        on_error(ss, "server_uri.timeout");
}

static bool always_sent(const char *n)
{
    return !strcmp(n, "authorization") || !strcmp(n, ":method") || !strcmp(n, ":path") || !strcmp(n, ":authority");
}

/* The check request's headers, from the client's request. */
static struct herald_headers *check_headers(struct session *ss, size_t body_len, bool partial)
{
    struct authz_conf *c = ss->conf;
    struct herald_headers *h = herald_headers_new();
    const char *n, *v;
    for (size_t i = 0; herald_headers_at(ss->req, i, &n, &v); i++) {
        const char *name = n;   /* lower-case in a header map */
        /* Host travels as :authority; the rest are this exchange's own */
        if (!strcmp(name, "host") || hop_by_hop(name) || !strcmp(name, "x-envoy-auth-partial-body") ||
            (name[0] == ':' && !always_sent(name)) || name_list_match(&c->disallowed, name) ||
            (!always_sent(name) && !name_list_match(&c->allowed, name)))
            continue;
        if (!strcmp(name, ":path") && *c->path_prefix) {
            size_t lp = strlen(c->path_prefix), lv = strlen(v);
            char *p = malloc(lp + lv + 1);
            if (!p)
                abort();
            memcpy(p, c->path_prefix, lp);
            memcpy(p + lp, v, lv + 1);
            herald_headers_set(h, name, p);
            free(p);
        } else if (herald_headers_get(h, name)) {
            /* a repeated name: Envoy's CheckRequest holds one value per name, all of them joined */
            char *all = herald_headers_get_all(ss->req, name);
            herald_headers_set(h, name, all);
            free(all);
        } else {
            herald_headers_add(h, name, v);
        }
    }
    char num[32];
    snprintf(num, sizeof(num), "%zu", body_len);
    herald_headers_set(h, "content-length", num);
    if (ss->body.max_bytes && ss->body_buf)
        herald_headers_set(h, "x-envoy-auth-partial-body", partial ? "true" : "false");
    for (size_t i = 0; i < c->nto_add; i++)
        herald_headers_set(h, c->to_add[i].key, c->to_add[i].value);
    /* what Envoy's async client and router add to a request of their own */
    herald_headers_set(h, "x-envoy-internal", "true");
    if (c->timeout_ms) {
        snprintf(num, sizeof(num), "%llu", (unsigned long long)c->timeout_ms);
        herald_headers_set(h, "x-envoy-expected-rq-timeout-ms", num);
    }
    return h;
}

static void start_check(struct session *ss)
{
    struct authz_conf *c = ss->conf;
    ss->state = ST_CALLING;
    struct herald_cluster *cl = herald_cluster_get(c->cluster);
    struct herald_host *host = cl ? herald_cluster_choose_host(cl, 0) : NULL;
    if (!host) {
        on_error(ss, cl ? "no healthy host in the authorization cluster" : "no such authorization cluster");
        return;
    }
    struct herald_buf *body = NULL;
    bool partial = false;
    if (ss->body_buf && herald_buf_len(ss->body_buf)) {
        body = herald_buf_new();
        size_t len = herald_buf_len(ss->body_buf);
        if (len > ss->body.max_bytes)
            len = ss->body.max_bytes;
        /* copied, not moved: the same bytes go upstream after an allow */
        struct iovec vec[64];
        int nv = herald_buf_peek(ss->body_buf, len, vec, 64);
        if (nv > 64) {
            char *flat = malloc(len);
            if (!flat)
                abort();
            herald_buf_copyout(ss->body_buf, 0, flat, len);
            herald_buf_add(body, flat, len);
            free(flat);
        } else {
            size_t left = len;
            for (int i = 0; i < nv && left; i++) {
                size_t l = vec[i].iov_len < left ? vec[i].iov_len : left;
                herald_buf_add(body, vec[i].iov_base, l);
                left -= l;
            }
        }
        partial = ss->body_seen != len;
    }
    struct herald_headers *h = check_headers(ss, body ? herald_buf_len(body) : 0, partial);
    ss->u = herald_http_upstream_new_for(cl, host, &check_cbs, ss, HERALD_PRIORITY_DEFAULT,
                                         herald_http_stream_conn(ss->s));
    if (!ss->u) {
        herald_headers_free(h);
        herald_buf_free(body);
        on_error(ss, "cannot start the authorization request");
        return;
    }
    if (c->timeout_ms) {
        if (!ss->timer)
            ss->timer = herald_timer_new(on_timeout, ss);
        herald_timer_arm(ss->timer, c->timeout_ms);
    }
    /* the client's body waits with the request: stop reading it meanwhile */
    if (!ss->request_ended && !ss->paused) {
        ss->paused = true;
        herald_http_stream_pause_decoding(ss->s, true);
    }
    herald_http_upstream_send_headers(ss->u, h, body == NULL);
    if (body && ss->u) {
        herald_http_upstream_send_data(ss->u, body, true);
    }
    herald_buf_free(body);
}

/* ------------------------------------------------------------ the filter */

static void *session_new(void *conf, struct herald_http_stream *s)
{
    struct session *ss = calloc(1, sizeof(*ss));
    if (!ss)
        return NULL;
    ss->conf = conf;
    ss->s = s;
    return ss;
}

static void session_destroy(void *p)
{
    struct session *ss = p;
    stop_check(ss);
    herald_timer_free(ss->timer);
    herald_buf_free(ss->body_buf);
    herald_headers_free(ss->answer);
    herald_buf_free(ss->answer_body);
    herald_headers_free(ss->deny_headers);
    herald_headers_free(ss->client_add);
    free(ss);
}

static void on_complete(void *p)
{
    struct session *ss = p;
    /* the client is gone (or the exchange is over): cancel the check */
    stop_check(ss);
    if (ss->state != ST_DONE)
        ss->state = ST_DONE;
    ss->paused = false;
}

static enum herald_http_status decode_headers(void *p, struct herald_headers *headers, bool end_stream)
{
    struct session *ss = p;
    struct authz_conf *c = ss->conf;
    ss->req = headers;
    ss->request_ended = end_stream;
    /* Envoy: no route, no check */
    const struct herald_route *route = herald_http_stream_route(ss->s);
    if (!route)
        return HERALD_HTTP_CONTINUE;
    const struct authz_route *rc = herald_http_stream_route_config(ss->s, c);
    if (rc && rc->disabled)
        return HERALD_HTTP_CONTINUE;
    if (!fraction_on(&c->enabled, true)) {
        herald_stat_inc(c->st_disabled);
        if (c->has_deny_at_disable && feature_flag_on(&c->deny_at_disable)) {
            ss->state = ST_DONE;
            ss->replied = true;
            herald_http_stream_send_local_reply(ss->s, c->status_on_error, "", "ext_authz_error", "UAEX");
            return HERALD_HTTP_STOP;
        }
        return HERALD_HTTP_CONTINUE;
    }
    if (herald_route_kind(route) == HERALD_ROUTE_FORWARD) {
        const char *cluster = herald_route_cluster(route, headers, 0);
        if (cluster)
            ss->cs = ext_authz_cluster_stats(c, cluster);
    }
    ss->body = c->body;
    if (rc && rc->has_body)
        ss->body = rc->body;
    if (rc && rc->skip_body)
        ss->body.max_bytes = 0;
    if (ss->body.max_bytes && !end_stream && !herald_http_stream_is_upgrade(ss->s)) {
        ss->state = ST_BUFFERING;
        ss->body_buf = herald_buf_new();
        return HERALD_HTTP_STOP;
    }
    start_check(ss);
    /* an answer already given continued the stream from here */
    return ss->state == ST_DONE && !ss->replied ? HERALD_HTTP_CONTINUE : HERALD_HTTP_STOP;
}

static enum herald_http_status decode_data(void *p, struct herald_buf *data, bool end_stream)
{
    struct session *ss = p;
    if (end_stream)
        ss->request_ended = true;
    if (ss->state == ST_BUFFERING) {
        size_t len = herald_buf_len(data);
        uint64_t have = herald_buf_len(ss->body_buf);
        if (have < ss->body.max_bytes) {
            size_t take = ss->body.max_bytes - have < len ? (size_t)(ss->body.max_bytes - have) : len;
            char *tmp = malloc(take ? take : 1);
            if (!tmp)
                abort();
            herald_buf_copyout(data, 0, tmp, take);
            herald_buf_add(ss->body_buf, tmp, take);
            free(tmp);
        }
        ss->body_seen += len;
        if (ss->body_seen > ss->body.max_bytes && !ss->body.allow_partial) {
            /* Envoy's buffer limit of max_request_bytes: 413, and no check */
            ss->state = ST_DONE;
            ss->replied = true;
            herald_http_stream_send_local_reply(ss->s, 413, "Payload Too Large", "request_payload_too_large", NULL);
            return HERALD_HTTP_STOP;
        }
        if (end_stream || ss->body_seen >= ss->body.max_bytes) {
            start_check(ss);
            if (ss->replied)
                return HERALD_HTTP_STOP;
            if (ss->state == ST_DONE)
                return HERALD_HTTP_CONTINUE;
        }
        return HERALD_HTTP_STOP_AND_BUFFER;
    }
    if (ss->state == ST_CALLING)
        return HERALD_HTTP_STOP_AND_BUFFER;
    return HERALD_HTTP_CONTINUE;
}

static enum herald_http_status decode_trailers(void *p, struct herald_headers *trailers)
{
    (void)trailers;
    struct session *ss = p;
    ss->request_ended = true;
    if (ss->state == ST_BUFFERING)
        start_check(ss);
    return ss->state == ST_CALLING || ss->replied ? HERALD_HTTP_STOP : HERALD_HTTP_CONTINUE;
}

static enum herald_http_status encode_headers(void *p, struct herald_headers *headers, bool end_stream)
{
    (void)end_stream;
    struct session *ss = p;
    const char *n, *v;
    if (ss->deny_headers) {
        /* a denial's local reply: the answer's headers replace the reply's own */
        for (size_t i = 0; herald_headers_at(ss->deny_headers, i, &n, &v); i++)
            herald_headers_remove(headers, n);
        for (size_t i = 0; herald_headers_at(ss->deny_headers, i, &n, &v); i++)
            herald_headers_add(headers, n, v);
        herald_headers_free(ss->deny_headers);
        ss->deny_headers = NULL;
    }
    if (ss->client_add) {
        for (size_t i = 0; herald_headers_at(ss->client_add, i, &n, &v); i++)
            herald_headers_add(headers, n, v);
    }
    return HERALD_HTTP_CONTINUE;
}

static const struct herald_http_filter_ops ops = {
    .size = sizeof(struct herald_http_filter_ops),
    .config_create = ext_authz_config_create,
    .config_destroy = ext_authz_config_destroy,
    .session_new = session_new,
    .session_destroy = session_destroy,
    .decode_headers = decode_headers,
    .decode_data = decode_data,
    .decode_trailers = decode_trailers,
    .encode_headers = encode_headers,
    .on_complete = on_complete,
    .route_config_schema = &ext_authz_per_route_schema,
    .route_config_create = ext_authz_route_create,
    .route_config_destroy = ext_authz_route_destroy,
};

static const char *const type_urls[] = {
    "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
    "envoy.config.filter.http.ext_authz.v2.ExtAuthz",
    NULL,
};

static const char *const aliases[] = {"envoy.ext_authz", NULL};

HERALD_PLUGIN(.name = EXT_AUTHZ_NAME,
              .kind = HERALD_PLUGIN_HTTP_FILTER,
              .aliases = aliases,
              .type_urls = type_urls,
              .version = "1.0.0",
              .description = "external authorization: each request is checked with an HTTP service first",
              .config_schema = &ext_authz_schema,
              .ops = &ops);
