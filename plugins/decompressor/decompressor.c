/* decompressor (HTTP): envoy.filters.http.decompressor with the gzip library
 * (envoy.compression.gzip.decompressor), Envoy's body decompression, for
 * requests and responses independently.
 *
 * A body whose outermost Content-Encoding is gzip is inflated as it streams
 * (nothing is buffered whole): the gzip token leaves Content-Encoding (the
 * header goes when it was the only one) and Content-Length goes. Skipped
 * when the direction is disabled, or Cache-Control says no-transform (unless
 * ignore_no_transform_header). With response decompression on,
 * advertise_accept_encoding appends gzip to the request's Accept-Encoding.
 *
 * A body that is not valid gzip, or inflates to more than max_inflate_ratio
 * times its compressed size (a zip bomb), is an error counted in
 * decompressor_error: a request is answered 400 from here (the stream is
 * reset when a response has already started), a response is reset, since
 * its headers have gone downstream already.
 *
 * Stats: http.<prefix>.decompressor.<library name>.gzip.{request,response}.* */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "feature_flag.h"
#include "header_tokens.h"
#include "herald/herald.h"
#include "typed_library.h"

#define GZIP_TYPE "envoy.extensions.compression.gzip.decompressor.v3.Gzip"

struct direction_stats {
    struct herald_stat *decompressed, *not_decompressed, *total_uncompressed_bytes, *total_compressed_bytes,
        *decompressor_error;
};

struct direction {
    struct feature_flag enabled;
    bool ignore_no_transform;
    struct direction_stats st;
};

struct conf {
    struct direction request, response;
    bool advertise_accept_encoding;
    int window_bits;
    size_t chunk_size;
    uint64_t max_inflate_ratio;
};

/* One direction's inflate state. */
struct inflater {
    const struct direction *dir;
    bool active, failed, ended;
    z_stream z;
    uint64_t in, out;
};

struct session {
    struct conf *conf;
    struct herald_http_stream *s;
    struct inflater req, resp;
    unsigned char *chunk;              /* chunk_size bytes, shared by both directions */
};

/* ------------------------------------------------------------ schema */

static const struct herald_field gzip_fields[] = {
    {.name = "window_bits", .kind = HERALD_FIELD_UINT, .help = "9 to 15; default 15"},
    {.name = "chunk_size", .kind = HERALD_FIELD_UINT, .help = "inflate output chunk, 4096 to 65536; default 4096"},
    {.name = "max_inflate_ratio", .kind = HERALD_FIELD_UINT,
     .help = "1 to 1032; default 100: a body inflating more than this times its size is refused"},
    {.name = NULL},
};
/* Checked by typed_library_check (the core leaves Any alone). */
static const struct herald_message gzip_schema = {GZIP_TYPE, gzip_fields, NULL};

static const struct herald_field common_fields[] = {
    {.name = "enabled", .kind = HERALD_FIELD_MESSAGE, .message = &feature_flag_schema,
     .help = "a RuntimeFeatureFlag; default on"},
    {.name = "ignore_no_transform_header", .kind = HERALD_FIELD_BOOL,
     .help = "decompress even with Cache-Control: no-transform"},
    {.name = NULL},
};
static const struct herald_message common_schema = {
    "envoy.extensions.filters.http.decompressor.v3.Decompressor.CommonDirectionConfig", common_fields, NULL,
};

static const struct herald_field request_fields[] = {
    {.name = "common_config", .kind = HERALD_FIELD_MESSAGE, .message = &common_schema},
    {.name = "advertise_accept_encoding", .kind = HERALD_FIELD_BOOL,
     .help = "default true: append gzip to the request's Accept-Encoding when responses are decompressed"},
    {.name = NULL},
};
static const struct herald_message request_schema = {
    "envoy.extensions.filters.http.decompressor.v3.Decompressor.RequestDirectionConfig", request_fields, NULL,
};

static const struct herald_field response_fields[] = {
    {.name = "common_config", .kind = HERALD_FIELD_MESSAGE, .message = &common_schema},
    {.name = NULL},
};
static const struct herald_message response_schema = {
    "envoy.extensions.filters.http.decompressor.v3.Decompressor.ResponseDirectionConfig", response_fields, NULL,
};

static const struct herald_field decompressor_fields[] = {
    {.name = "decompressor_library", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REQUIRED,
     .message = &typed_library_schema},
    {.name = "request_direction_config", .kind = HERALD_FIELD_MESSAGE, .message = &request_schema},
    {.name = "response_direction_config", .kind = HERALD_FIELD_MESSAGE, .message = &response_schema},
    {.name = NULL},
};
static const struct herald_message decompressor_schema = {
    "envoy.extensions.filters.http.decompressor.v3.Decompressor", decompressor_fields, NULL,
};

/* ------------------------------------------------------------ config */

static void direction_parse(const struct herald_cfg *n, struct direction *d, const struct herald_filter_env *env,
                            const char *library_name, const char *which)
{
    const struct herald_cfg *common = herald_cfg_get(n, "common_config");
    feature_flag_parse(herald_cfg_get(common, "enabled"), true, &d->enabled);
    d->ignore_no_transform = herald_cfg_bool(herald_cfg_get(common, "ignore_no_transform_header"), false);
    char prefix[512];
    const char *sp = herald_env_stat_prefix(env);
    snprintf(prefix, sizeof(prefix), "%s.decompressor.%s.gzip.%s", sp ? sp : "http", library_name, which);
    d->st.decompressed = herald_counter(prefix, "decompressed");
    d->st.not_decompressed = herald_counter(prefix, "not_decompressed");
    d->st.total_uncompressed_bytes = herald_counter(prefix, "total_uncompressed_bytes");
    d->st.total_compressed_bytes = herald_counter(prefix, "total_compressed_bytes");
    d->st.decompressor_error = herald_counter(prefix, "decompressor_error");
}

static void conf_destroy(void *p)
{
    struct conf *c = p;
    if (!c)
        return;
    feature_flag_free(&c->request.enabled);
    feature_flag_free(&c->response.enabled);
    free(c);
}

static int conf_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out, char **err)
{
    const struct herald_cfg *lib = herald_cfg_get(n, "decompressor_library");
    const struct herald_cfg *gz = herald_cfg_get(lib, "typed_config");
    if (typed_library_check(gz, &gzip_schema, err) < 0)
        return -1;
    int64_t window_bits, chunk_size, ratio;
    if (typed_library_uint(gz, "window_bits", 9, 15, 15, &window_bits, err) < 0 ||
        typed_library_uint(gz, "chunk_size", 4096, 65536, 4096, &chunk_size, err) < 0 ||
        typed_library_uint(gz, "max_inflate_ratio", 1, 1032, 100, &ratio, err) < 0)
        return -1;
    struct conf *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    c->window_bits = (int)window_bits;
    c->chunk_size = (size_t)chunk_size;
    c->max_inflate_ratio = (uint64_t)ratio;
    const char *name = herald_cfg_str(herald_cfg_get(lib, "name"), "gzip");
    const struct herald_cfg *req = herald_cfg_get(n, "request_direction_config");
    direction_parse(req, &c->request, env, name, "request");
    direction_parse(herald_cfg_get(n, "response_direction_config"), &c->response, env, name, "response");
    c->advertise_accept_encoding = herald_cfg_bool(herald_cfg_get(req, "advertise_accept_encoding"), true);
    *out = c;
    return 0;
}

/* ------------------------------------------------------------ the decisions */

/* When the outermost (last) coding of Content-Encoding is gzip: removes it
 * from the header (the header with it when it was the only one); true. */
static bool take_outer_gzip(struct herald_headers *h)
{
    const char *ce = herald_headers_get(h, "content-encoding");
    if (!ce)
        return false;
    const char *p = ce, *tok, *params, *last = NULL;
    size_t len, plen, last_len = 0;
    while (header_next_token(&p, &tok, &len, &params, &plen)) {
        last = tok;
        last_len = len;
    }
    if (!last || last_len != 4 || strncasecmp(last, "gzip", 4))
        return false;
    size_t keep = (size_t)(last - ce);
    while (keep && (ce[keep - 1] == ',' || ce[keep - 1] == ' ' || ce[keep - 1] == '\t'))
        keep--;
    if (!keep) {
        herald_headers_remove(h, "content-encoding");
        return true;
    }
    char *rest = strndup(ce, keep);
    if (!rest)
        abort();
    herald_headers_set(h, "content-encoding", rest);
    free(rest);
    return true;
}

static void start(struct session *ss, struct inflater *f, const struct direction *d, struct herald_headers *h,
                  bool end_stream)
{
    f->dir = d;
    if (end_stream || !feature_flag_on(&d->enabled) ||
        (!d->ignore_no_transform && header_has_token(h, "cache-control", "no-transform")) ||
        !take_outer_gzip(h) || inflateInit2(&f->z, ss->conf->window_bits + 16) != Z_OK) {
        herald_stat_inc(d->st.not_decompressed);
        return;
    }
    herald_headers_remove(h, "content-length");
    herald_stat_inc(d->st.decompressed);
    f->active = true;
    if (!ss->chunk && !(ss->chunk = malloc(ss->conf->chunk_size)))
        abort();
}

/* Inflates data in place; false on a corrupt stream or past the ratio. */
static bool inflate_buf(struct session *ss, struct inflater *f, struct herald_buf *data)
{
    struct herald_buf *out = herald_buf_new();
    bool ok = true;
    size_t in_len = herald_buf_len(data);
    f->in += in_len;
    herald_stat_add(f->dir->st.total_compressed_bytes, in_len);
    while (ok && !f->ended && herald_buf_len(data)) {
        struct iovec v;
        herald_buf_peek(data, herald_buf_len(data), &v, 1);
        f->z.next_in = v.iov_base;
        f->z.avail_in = (uInt)v.iov_len;
        do {
            f->z.next_out = ss->chunk;
            f->z.avail_out = (uInt)ss->conf->chunk_size;
            int rc = inflate(&f->z, Z_NO_FLUSH);
            size_t produced = ss->conf->chunk_size - f->z.avail_out;
            f->out += produced;
            if (produced)
                herald_buf_add(out, ss->chunk, produced);
            bool bomb = f->out > f->in * ss->conf->max_inflate_ratio;
            bool corrupt = (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) ||
                           (rc == Z_BUF_ERROR && f->z.avail_in > 0 && !produced);
            if (bomb || corrupt) {
                ok = false;
                break;
            }
            if (rc == Z_STREAM_END) {
                f->ended = true;       /* bytes after the gzip member are dropped, as Envoy's one stream */
                break;
            }
        } while (f->z.avail_in > 0 || f->z.avail_out == 0);
        herald_buf_drain(data, v.iov_len);
    }
    herald_stat_add(f->dir->st.total_uncompressed_bytes, herald_buf_len(out));
    herald_buf_drain(data, herald_buf_len(data));
    if (ok)
        herald_buf_move(data, out, SIZE_MAX);
    herald_buf_free(out);
    return ok;
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
    if (ss->req.active)
        inflateEnd(&ss->req.z);
    if (ss->resp.active)
        inflateEnd(&ss->resp.z);
    free(ss->chunk);
    free(ss);
}

static enum herald_http_status decode_headers(void *p, struct herald_headers *headers, bool end_stream)
{
    struct session *ss = p;
    start(ss, &ss->req, &ss->conf->request, headers, end_stream);
    if (ss->conf->advertise_accept_encoding && feature_flag_on(&ss->conf->response.enabled))
        header_append_token(headers, "accept-encoding", "gzip");
    return HERALD_HTTP_CONTINUE;
}

static enum herald_http_status decode_data(void *p, struct herald_buf *data, bool end_stream)
{
    (void)end_stream;
    struct session *ss = p;
    if (!ss->req.active || ss->req.failed)
        return HERALD_HTTP_CONTINUE;
    if (!inflate_buf(ss, &ss->req, data)) {
        ss->req.failed = true;
        herald_stat_inc(ss->conf->request.st.decompressor_error);
        herald_http_stream_send_local_reply(ss->s, 400, "request body decompression failed",
                                            "decompressor_error", NULL);
        return HERALD_HTTP_STOP;
    }
    return HERALD_HTTP_CONTINUE;
}

static enum herald_http_status encode_headers(void *p, struct herald_headers *headers, bool end_stream)
{
    struct session *ss = p;
    if (ss->req.failed)
        return HERALD_HTTP_CONTINUE;   /* our own 400 */
    start(ss, &ss->resp, &ss->conf->response, headers, end_stream);
    return HERALD_HTTP_CONTINUE;
}

static enum herald_http_status encode_data(void *p, struct herald_buf *data, bool end_stream)
{
    (void)end_stream;
    struct session *ss = p;
    if (!ss->resp.active || ss->resp.failed)
        return HERALD_HTTP_CONTINUE;
    if (!inflate_buf(ss, &ss->resp, data)) {
        ss->resp.failed = true;
        herald_stat_inc(ss->conf->response.st.decompressor_error);
        herald_http_stream_reset(ss->s);
        return HERALD_HTTP_STOP;
    }
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
    .encode_headers = encode_headers,
    .encode_data = encode_data,
};

static const char *const type_urls[] = {
    "envoy.extensions.filters.http.decompressor.v3.Decompressor",
    NULL,
};

HERALD_PLUGIN(.name = "envoy.filters.http.decompressor",
              .kind = HERALD_PLUGIN_HTTP_FILTER,
              .type_urls = type_urls,
              .version = "1.0.0",
              .description = "gzip request and response body decompression (Envoy's decompressor filter)",
              .config_schema = &decompressor_schema,
              .ops = &ops);
