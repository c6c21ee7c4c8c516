/* buffer (HTTP): envoy.filters.http.buffer, Envoy's buffer filter. A request
 * with a body goes upstream only once all of it is here: the filter stops
 * the headers, lets the core hold the body (STOP_AND_BUFFER) up to
 * max_request_bytes (SDK 1.11's set_decode_buffer_limit: past it the core
 * answers 413 and counts http.<prefix>.downstream_rq_too_large), and at the
 * end of the stream sets content-length when the client sent none, as
 * Envoy does, then lets headers and body go on together.
 *
 * A route, virtual host or route configuration may give a BufferPerRoute in
 * typed_per_filter_config: disabled: true (the filter does nothing there) or
 * buffer: {max_request_bytes} (its own limit); the most specific one counts.
 *
 * Unlike Envoy, an upgrade request (WebSocket, CONNECT) is never held:
 * Envoy's filter would wait for a body end that such a stream only sends
 * when the tunnel closes. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "herald/herald.h"
#include "xalloc.h"

struct conf {                          /* a Buffer, or a BufferPerRoute */
    bool disabled;
    uint32_t max_request_bytes;
};

struct session {
    const struct conf *conf;
    struct herald_http_stream *s;
    struct herald_headers *req;        /* set: this request is being buffered */
    uint32_t limit;                    /* ... up to this many body bytes */
    uint64_t body;                     /* body bytes seen so far */
};

/* ------------------------------------------------------------ schema */

static int buffer_check(const struct herald_cfg *n, char **err)
{
    /* UInt32Value with Envoy's gt: 0 */
    const struct herald_cfg *m = herald_cfg_get(n, "max_request_bytes");
    int64_t v = herald_cfg_int(m, 0);
    if (v < 1 || v > UINT32_MAX)
        return herald_cfg_errorf(m, err, "max_request_bytes must be from 1 to 4294967295");
    return 0;
}

static const struct herald_field buffer_fields[] = {
    {.name = "max_request_bytes", .kind = HERALD_FIELD_UINT, .flags = HERALD_F_REQUIRED,
     .help = "the most request body held; past it the client gets 413"},
    {.name = "max_request_time", .kind = HERALD_FIELD_REMOVED,
     .hint = "v2 field, gone from Envoy: use the connection manager's request_timeout"},
    {.name = NULL},
};
static const struct herald_message buffer_schema = {
    "envoy.extensions.filters.http.buffer.v3.Buffer", buffer_fields, buffer_check,
};

/* the oneof is required, and disabled may only be true (Envoy's validate rules) */
static int per_route_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *d = herald_cfg_get(n, "disabled");
    if (!d && !herald_cfg_get(n, "buffer"))
        return herald_cfg_errorf(n, err, "BufferPerRoute needs disabled: true or buffer");
    if (d && !herald_cfg_bool(d, false))
        return herald_cfg_errorf(d, err, "disabled must be true (give buffer to change the limit instead)");
    return 0;
}

static const struct herald_field per_route_fields[] = {
    {.name = "disabled", .kind = HERALD_FIELD_BOOL, .oneof = "override",
     .help = "true: no buffering on this route or virtual host"},
    {.name = "buffer", .kind = HERALD_FIELD_MESSAGE, .oneof = "override", .message = &buffer_schema,
     .help = "a Buffer whose max_request_bytes replaces the filter's"},
    {.name = NULL},
};
static const struct herald_message per_route_schema = {
    "envoy.extensions.filters.http.buffer.v3.BufferPerRoute", per_route_fields, per_route_check,
};

/* ------------------------------------------------------------ config */

static struct conf *conf_of(const struct herald_cfg *buffer)
{
    struct conf *c = xcalloc(1, sizeof(*c));
    c->max_request_bytes = (uint32_t)herald_cfg_int(herald_cfg_get(buffer, "max_request_bytes"), 0);
    return c;
}

static int conf_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out, char **err)
{
    (void)env;
    (void)err;
    *out = conf_of(n);
    return 0;
}

static int route_conf_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out,
                             char **err)
{
    (void)env;
    (void)err;
    const struct herald_cfg *b = herald_cfg_get(n, "buffer");
    struct conf *c = conf_of(b);
    c->disabled = !b;
    *out = c;
    return 0;
}

static void conf_destroy(void *p)
{
    free(p);
}

/* ------------------------------------------------------------ the filter */

static void *session_new(void *conf, struct herald_http_stream *s)
{
    struct session *ss = xcalloc(1, sizeof(*ss));
    ss->conf = conf;
    ss->s = s;
    return ss;
}

static void session_destroy(void *p)
{
    free(p);
}

/* Envoy's maybeAddContentLength: the whole body is here, so its length is known */
static void add_content_length(struct session *ss)
{
    if (herald_headers_get(ss->req, "content-length"))
        return;
    char num[24];
    snprintf(num, sizeof(num), "%" PRIu64, ss->body);
    herald_headers_set(ss->req, "content-length", num);
}

static enum herald_http_status decode_headers(void *p, struct herald_headers *headers, bool end_stream)
{
    struct session *ss = p;
    if (end_stream || herald_http_stream_is_upgrade(ss->s))
        return HERALD_HTTP_CONTINUE;
    const struct conf *route = herald_http_stream_route_config(ss->s, ss->conf);
    const struct conf *c = route ? route : ss->conf;
    if (c->disabled)
        return HERALD_HTTP_CONTINUE;
    herald_http_stream_set_decode_buffer_limit(ss->s, c->max_request_bytes);
    ss->limit = c->max_request_bytes;
    ss->req = headers;                 /* the stream's own map: it outlives the filter walk */
    return HERALD_HTTP_STOP;
}

static enum herald_http_status decode_data(void *p, struct herald_buf *data, bool end_stream)
{
    struct session *ss = p;
    if (!ss->req)
        return HERALD_HTTP_CONTINUE;
    ss->body += herald_buf_len(data);
    /* A last chunk that takes the body past the limit is held too, so that the
     * core's limit answers it with 413 as Envoy's does when it buffers that
     * chunk; a body sent in one piece would otherwise go through whole. */
    if (!end_stream || ss->body > ss->limit)
        return HERALD_HTTP_STOP_AND_BUFFER;
    add_content_length(ss);
    return HERALD_HTTP_CONTINUE;
}

static enum herald_http_status decode_trailers(void *p, struct herald_headers *trailers)
{
    (void)trailers;
    struct session *ss = p;
    if (ss->req)
        add_content_length(ss);
    return HERALD_HTTP_CONTINUE;
}

static const struct herald_http_filter_ops ops = {
    .size = sizeof(struct herald_http_filter_ops),
    .config_create = conf_create,
    .config_destroy = conf_destroy,
    .session_new = session_new,
    .session_destroy = session_destroy,
    .decode_headers = decode_headers,
    .decode_data = decode_data,
    .decode_trailers = decode_trailers,
    .route_config_schema = &per_route_schema,
    .route_config_create = route_conf_create,
    .route_config_destroy = conf_destroy,
};

static const char *const type_urls[] = {
    "envoy.extensions.filters.http.buffer.v3.Buffer",
    "envoy.config.filter.http.buffer.v2.Buffer",
    NULL,
};

static const char *const aliases[] = { "envoy.buffer", NULL };

HERALD_PLUGIN(.name = "envoy.filters.http.buffer",
              .kind = HERALD_PLUGIN_HTTP_FILTER,
              .aliases = aliases,
              .type_urls = type_urls,
              .version = "1.0.0",
              .description = "buffer: the whole request body before it goes upstream, 413 past max_request_bytes",
              .config_schema = &buffer_schema,
              .ops = &ops);
