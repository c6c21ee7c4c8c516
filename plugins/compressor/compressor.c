/* compressor (HTTP): envoy.filters.http.compressor with the gzip library
 * (envoy.compression.gzip.compressor), Envoy's response compression.
 *
 * A response is compressed when the request accepted gzip (Accept-Encoding,
 * q-values honoured, "*" counts), the response is not already encoded, has a
 * listed content type (or none), is at least min_content_length long when it
 * says how long, does not carry Cache-Control: no-transform, has a body (not
 * HEAD, 204, 304) and passes the ETag rule. Then Content-Length goes,
 * Content-Encoding: gzip and Vary: accept-encoding come, and the body streams
 * through deflate: each chunk is deflated and sync-flushed so the client can
 * read it at once (as Envoy flushes); the last one, or the trailers, end the
 * gzip stream (its end goes in front of the trailers).
 *
 * With request_direction_config, request bodies are compressed the same way
 * (enabled, content type, min_content_length, no Content-Encoding yet; no
 * Accept-Encoding to ask), as Envoy's: Content-Encoding: gzip is set and
 * Content-Length removed for the upstream.
 *
 * Stats: http.<prefix>.compressor.<library name>.gzip.* for responses and
 * ...gzip.request.* for requests (Envoy's names). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "feature_flag.h"
#include "header_tokens.h"
#include "herald/herald.h"
#include "typed_library.h"

#define GZIP_TYPE "envoy.extensions.compression.gzip.compressor.v3.Gzip"

static const char *const default_content_types[] = {
    "text/html", "text/plain", "text/css", "application/javascript", "application/x-javascript",
    "text/javascript", "text/x-javascript", "text/ecmascript", "text/js", "text/jscript", "text/x-js",
    "application/ecmascript", "application/x-json", "application/xml", "application/json", "image/svg+xml",
    "text/xml", "application/xhtml+xml", NULL,
};

struct stats {
    struct herald_stat *compressed, *not_compressed, *no_accept_header, *header_identity, *header_gzip,
        *header_compressor_used, *header_wildcard, *header_not_valid, *total_uncompressed_bytes,
        *total_compressed_bytes, *content_length_too_small, *not_compressed_etag;
};

struct request_stats {
    struct herald_stat *compressed, *not_compressed, *total_uncompressed_bytes, *total_compressed_bytes;
};

/* CommonDirectionConfig */
struct direction {
    bool configured;                   /* request: only with request_direction_config */
    struct feature_flag enabled;
    uint64_t min_content_length;
    char **content_types; size_t ncontent_types;
};

struct conf {
    struct direction response, request;
    bool disable_on_etag, remove_accept_encoding;
    int level, strategy, window_bits, memory_level;
    size_t chunk_size;
    struct stats st;
    struct request_stats rq;
};

/* One body going through deflate. */
struct deflater {
    bool active, finished;
    z_stream z;
    unsigned char *out;                /* chunk_size bytes */
    struct herald_stat *uncompressed, *compressed;
};

struct route_conf {                    /* CompressorPerRoute */
    bool disabled;
};

struct session {
    struct conf *conf;
    struct herald_http_stream *s;
    bool accepts_gzip;                 /* decided on the request headers */
    bool no_accept_header;
    const char *accept_stat;           /* which header_* the Accept-Encoding counts as */
    bool head;
    struct deflater resp, req;
};

/* ------------------------------------------------------------ schema */

static const char *const levels[] = {
    "DEFAULT_COMPRESSION", "BEST_SPEED", "COMPRESSION_LEVEL_1", "COMPRESSION_LEVEL_2", "COMPRESSION_LEVEL_3",
    "COMPRESSION_LEVEL_4", "COMPRESSION_LEVEL_5", "COMPRESSION_LEVEL_6", "COMPRESSION_LEVEL_7",
    "COMPRESSION_LEVEL_8", "COMPRESSION_LEVEL_9", "BEST_COMPRESSION", NULL,
};
static const char *const strategies[] = {"DEFAULT_STRATEGY", "FILTERED", "HUFFMAN_ONLY", "RLE", "FIXED", NULL};

static const struct herald_field gzip_fields[] = {
    {.name = "memory_level", .kind = HERALD_FIELD_UINT, .help = "zlib memLevel, 1 to 9; default 5"},
    {.name = "compression_level", .kind = HERALD_FIELD_ENUM, .enum_values = levels,
     .help = "BEST_SPEED, BEST_COMPRESSION, COMPRESSION_LEVEL_1..9 or DEFAULT_COMPRESSION (default, zlib's 6)"},
    {.name = "compression_strategy", .kind = HERALD_FIELD_ENUM, .enum_values = strategies,
     .help = "DEFAULT_STRATEGY (default), FILTERED, HUFFMAN_ONLY, RLE or FIXED"},
    {.name = "window_bits", .kind = HERALD_FIELD_UINT, .help = "9 to 15; default 12"},
    {.name = "chunk_size", .kind = HERALD_FIELD_UINT, .help = "deflate output chunk, 4096 to 65536; default 4096"},
    {.name = NULL},
};
/* Checked by typed_library_check (the core leaves Any alone). */
static const struct herald_message gzip_schema = {GZIP_TYPE, gzip_fields, NULL};

static const struct herald_field common_fields[] = {
    {.name = "enabled", .kind = HERALD_FIELD_MESSAGE, .message = &feature_flag_schema,
     .help = "a RuntimeFeatureFlag; default on"},
    {.name = "min_content_length", .kind = HERALD_FIELD_UINT,
     .help = "responses whose Content-Length is below it are left alone; default 30"},
    {.name = "content_type", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REPEATED,
     .help = "media types compressed; default Envoy's list of text, JSON, XML, JavaScript and SVG types"},
    {.name = NULL},
};
static const struct herald_message common_schema = {
    "envoy.extensions.filters.http.compressor.v3.Compressor.CommonDirectionConfig", common_fields, NULL,
};

static const struct herald_field response_fields[] = {
    {.name = "common_config", .kind = HERALD_FIELD_MESSAGE, .message = &common_schema},
    {.name = "disable_on_etag_header", .kind = HERALD_FIELD_BOOL,
     .help = "leave responses with an ETag alone (else a strong ETag is made weak)"},
    {.name = "remove_accept_encoding_header", .kind = HERALD_FIELD_BOOL,
     .help = "remove Accept-Encoding from the request before it goes upstream"},
    {.name = "uncompressible_response_codes", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = "status_header_enabled", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = NULL},
};
static const struct herald_message response_schema = {
    "envoy.extensions.filters.http.compressor.v3.Compressor.ResponseDirectionConfig", response_fields, NULL,
};

static const struct herald_field request_fields[] = {
    {.name = "common_config", .kind = HERALD_FIELD_MESSAGE, .message = &common_schema},
    {.name = NULL},
};
static const struct herald_message request_schema = {
    "envoy.extensions.filters.http.compressor.v3.Compressor.RequestDirectionConfig", request_fields, NULL,
};

static const struct herald_field compressor_fields[] = {
    {.name = "response_direction_config", .kind = HERALD_FIELD_MESSAGE, .message = &response_schema},
    {.name = "request_direction_config", .kind = HERALD_FIELD_MESSAGE, .message = &request_schema,
     .help = "request body compression; off when absent"},
    {.name = "compressor_library", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REQUIRED,
     .message = &typed_library_schema},
    {.name = "choose_first", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = "content_length", .kind = HERALD_FIELD_REMOVED,
     .hint = "deprecated: use response_direction_config.common_config.min_content_length"},
    {.name = "content_type", .kind = HERALD_FIELD_REMOVED,
     .hint = "deprecated: use response_direction_config.common_config.content_type"},
    {.name = "disable_on_etag_header", .kind = HERALD_FIELD_REMOVED,
     .hint = "deprecated: use response_direction_config.disable_on_etag_header"},
    {.name = "remove_accept_encoding_header", .kind = HERALD_FIELD_REMOVED,
     .hint = "deprecated: use response_direction_config.remove_accept_encoding_header"},
    {.name = "runtime_enabled", .kind = HERALD_FIELD_REMOVED,
     .hint = "deprecated: use response_direction_config.common_config.enabled"},
    {.name = NULL},
};
static const struct herald_message compressor_schema = {
    "envoy.extensions.filters.http.compressor.v3.Compressor", compressor_fields, NULL,
};

static const struct herald_field per_route_fields[] = {
    {.name = "disabled", .kind = HERALD_FIELD_BOOL, .oneof = "override",
     .help = "true: no compression on this route"},
    {.name = "overrides", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED, .oneof = "override"},
    {.name = NULL},
};
static const struct herald_message per_route_schema = {
    "envoy.extensions.filters.http.compressor.v3.CompressorPerRoute", per_route_fields, NULL,
};

/* ------------------------------------------------------------ config */

static int level_of(const char *name)
{
    if (!strcmp(name, "DEFAULT_COMPRESSION"))
        return Z_DEFAULT_COMPRESSION;
    if (!strcmp(name, "BEST_SPEED"))
        return Z_BEST_SPEED;
    if (!strcmp(name, "BEST_COMPRESSION"))
        return Z_BEST_COMPRESSION;
    return name[strlen(name) - 1] - '0';   /* COMPRESSION_LEVEL_n */
}

static int strategy_of(const char *name)
{
    if (!strcmp(name, "FILTERED"))
        return Z_FILTERED;
    if (!strcmp(name, "HUFFMAN_ONLY"))
        return Z_HUFFMAN_ONLY;
    if (!strcmp(name, "RLE"))
        return Z_RLE;
    if (!strcmp(name, "FIXED"))
        return Z_FIXED;
    return Z_DEFAULT_STRATEGY;
}

static void conf_destroy(void *p)
{
    struct conf *c = p;
    if (!c)
        return;
    struct direction *dirs[] = {&c->response, &c->request};
    for (size_t k = 0; k < 2; k++) {
        feature_flag_free(&dirs[k]->enabled);
        for (size_t i = 0; i < dirs[k]->ncontent_types; i++)
            free(dirs[k]->content_types[i]);
        free(dirs[k]->content_types);
    }
    free(c);
}

static char *xdup(const char *s)
{
    char *d = strdup(s);
    if (!d)
        abort();
    return d;
}

static void direction_parse(const struct herald_cfg *common, struct direction *d)
{
    d->configured = true;
    feature_flag_parse(herald_cfg_get(common, "enabled"), true, &d->enabled);
    d->min_content_length = (uint64_t)herald_cfg_int(herald_cfg_get(common, "min_content_length"), 30);
    const struct herald_cfg *types = herald_cfg_get(common, "content_type");
    size_t n = herald_cfg_len(types);
    if (!n)
        while (default_content_types[n])
            n++;
    d->ncontent_types = n;
    d->content_types = calloc(n, sizeof(char *));
    if (!d->content_types)
        abort();
    for (size_t i = 0; i < n; i++)
        d->content_types[i] = xdup(herald_cfg_len(types) ? herald_cfg_str(herald_cfg_at(types, i), "")
                                                         : default_content_types[i]);
}

static void stats_create(struct stats *st, const struct herald_filter_env *env, const char *library_name)
{
    char prefix[512];
    const char *sp = herald_env_stat_prefix(env);
    snprintf(prefix, sizeof(prefix), "%s.compressor.%s.gzip", sp ? sp : "http", library_name);
    st->compressed = herald_counter(prefix, "compressed");
    st->not_compressed = herald_counter(prefix, "not_compressed");
    st->no_accept_header = herald_counter(prefix, "no_accept_header");
    st->header_identity = herald_counter(prefix, "header_identity");
    st->header_gzip = herald_counter(prefix, "header_gzip");
    st->header_compressor_used = herald_counter(prefix, "header_compressor_used");
    st->header_wildcard = herald_counter(prefix, "header_wildcard");
    st->header_not_valid = herald_counter(prefix, "header_not_valid");
    st->total_uncompressed_bytes = herald_counter(prefix, "total_uncompressed_bytes");
    st->total_compressed_bytes = herald_counter(prefix, "total_compressed_bytes");
    st->content_length_too_small = herald_counter(prefix, "content_length_too_small");
    st->not_compressed_etag = herald_counter(prefix, "not_compressed_etag");
}

static void request_stats_create(struct request_stats *st, const struct herald_filter_env *env,
                                 const char *library_name)
{
    char prefix[512];
    const char *sp = herald_env_stat_prefix(env);
    snprintf(prefix, sizeof(prefix), "%s.compressor.%s.gzip.request", sp ? sp : "http", library_name);
    st->compressed = herald_counter(prefix, "compressed");
    st->not_compressed = herald_counter(prefix, "not_compressed");
    st->total_uncompressed_bytes = herald_counter(prefix, "total_uncompressed_bytes");
    st->total_compressed_bytes = herald_counter(prefix, "total_compressed_bytes");
}

static int conf_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out, char **err)
{
    const struct herald_cfg *lib = herald_cfg_get(n, "compressor_library");
    const struct herald_cfg *gz = herald_cfg_get(lib, "typed_config");
    if (typed_library_check(gz, &gzip_schema, err) < 0)
        return -1;
    struct conf *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    int64_t v;
    if (typed_library_uint(gz, "memory_level", 1, 9, 5, &v, err) < 0)
        goto fail;
    c->memory_level = (int)v;
    if (typed_library_uint(gz, "window_bits", 9, 15, 12, &v, err) < 0)
        goto fail;
    c->window_bits = (int)v;
    if (typed_library_uint(gz, "chunk_size", 4096, 65536, 4096, &v, err) < 0)
        goto fail;
    c->chunk_size = (size_t)v;
    c->level = level_of(typed_library_enum(gz, &gzip_schema, "compression_level", "DEFAULT_COMPRESSION"));
    c->strategy = strategy_of(typed_library_enum(gz, &gzip_schema, "compression_strategy", "DEFAULT_STRATEGY"));

    const struct herald_cfg *resp = herald_cfg_get(n, "response_direction_config");
    direction_parse(herald_cfg_get(resp, "common_config"), &c->response);
    const struct herald_cfg *req = herald_cfg_get(n, "request_direction_config");
    if (req)
        direction_parse(herald_cfg_get(req, "common_config"), &c->request);
    c->disable_on_etag = herald_cfg_bool(herald_cfg_get(resp, "disable_on_etag_header"), false);
    c->remove_accept_encoding = herald_cfg_bool(herald_cfg_get(resp, "remove_accept_encoding_header"), false);
    stats_create(&c->st, env, herald_cfg_str(herald_cfg_get(lib, "name"), "gzip"));
    request_stats_create(&c->rq, env, herald_cfg_str(herald_cfg_get(lib, "name"), "gzip"));
    *out = c;
    return 0;
fail:
    conf_destroy(c);
    return -1;
}

static int route_conf_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out, char **err)
{
    (void)env;
    (void)err;
    struct route_conf *r = calloc(1, sizeof(*r));
    if (!r)
        abort();
    r->disabled = herald_cfg_bool(herald_cfg_get(n, "disabled"), false);
    *out = r;
    return 0;
}

static void route_conf_destroy(void *p)
{
    free(p);
}

/* ------------------------------------------------------------ the decisions */

/* q of a token's parameters ("q=0.5"); 1 when absent. */
static double q_value(const char *params, size_t len)
{
    if (!params)
        return 1;
    char buf[64];
    if (len >= sizeof(buf))
        len = sizeof(buf) - 1;
    memcpy(buf, params, len);
    buf[len] = '\0';
    const char *q = strstr(buf, "q=");
    return q ? strtod(q + 2, NULL) : 1;
}

/* Envoy's choice over Accept-Encoding: gzip when listed with q > 0, else "*"
 * with q > 0; an explicit gzip;q=0 refuses even with "*". */
static void read_accept_encoding(struct session *ss, const struct herald_headers *h)
{
    const char *n, *v;
    bool any = false, gzip_seen = false, identity = false;
    double gzip_q = 0, star_q = -1;
    for (size_t i = 0; herald_headers_at(h, i, &n, &v); i++) {
        if (strcasecmp(n, "accept-encoding"))
            continue;
        any = true;
        const char *p = v, *tok, *params;
        size_t len, plen;
        while (header_next_token(&p, &tok, &len, &params, &plen)) {
            double q = q_value(params, plen);
            if (len == 4 && !strncasecmp(tok, "gzip", 4)) {
                gzip_seen = true;
                gzip_q = q;
            } else if (len == 1 && *tok == '*') {
                star_q = q;
            } else if (len == 8 && !strncasecmp(tok, "identity", 8)) {
                identity = true;
            }
        }
    }
    if (!any) {
        ss->no_accept_header = true;
        return;
    }
    if (gzip_seen && gzip_q > 0) {
        ss->accepts_gzip = true;
        ss->accept_stat = "gzip";
    } else if (!gzip_seen && star_q > 0) {
        ss->accepts_gzip = true;
        ss->accept_stat = "wildcard";
    } else if (identity) {
        ss->accept_stat = "identity";
    } else {
        ss->accept_stat = "not_valid";
    }
}

static bool content_type_allowed(const struct direction *c, const char *ct)
{
    if (!ct)
        return true;                   /* Envoy compresses a response that names no type */
    size_t len = strcspn(ct, ";");
    while (len && (ct[len - 1] == ' ' || ct[len - 1] == '\t'))
        len--;
    for (size_t i = 0; i < c->ncontent_types; i++)
        if (strlen(c->content_types[i]) == len && !strncasecmp(c->content_types[i], ct, len))
            return true;
    return false;
}

static void count_accept(const struct session *ss)
{
    const struct stats *st = &ss->conf->st;
    if (ss->no_accept_header)
        herald_stat_inc(st->no_accept_header);
    else if (!strcmp(ss->accept_stat, "gzip")) {
        herald_stat_inc(st->header_compressor_used);
        herald_stat_inc(st->header_gzip);
    } else if (!strcmp(ss->accept_stat, "wildcard"))
        herald_stat_inc(st->header_wildcard);
    else if (!strcmp(ss->accept_stat, "identity"))
        herald_stat_inc(st->header_identity);
    else
        herald_stat_inc(st->header_not_valid);
}

/* Whether this response may be compressed, counting why not as Envoy does. */
static bool should_compress(struct session *ss, struct herald_headers *h, bool end_stream)
{
    struct conf *c = ss->conf;
    const char *status = herald_headers_get(h, ":status");
    if (end_stream || ss->head || (status && (!strcmp(status, "204") || !strcmp(status, "304"))))
        return false;
    if (herald_http_stream_is_upgrade(ss->s))
        return false;
    count_accept(ss);
    if (!ss->accepts_gzip)
        return false;
    const char *cl = herald_headers_get(h, "content-length");
    if (cl && strtoull(cl, NULL, 10) < c->response.min_content_length) {
        herald_stat_inc(c->st.content_length_too_small);
        return false;
    }
    if (!content_type_allowed(&c->response, herald_headers_get(h, "content-type")))
        return false;
    if (header_has_token(h, "cache-control", "no-transform"))
        return false;
    const char *ce = herald_headers_get(h, "content-encoding");
    if (ce && *ce)
        return false;
    if (header_has_token(h, "transfer-encoding", "gzip"))
        return false;
    if (c->disable_on_etag && herald_headers_get(h, "etag")) {
        herald_stat_inc(c->st.not_compressed_etag);
        return false;
    }
    return true;
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
    struct deflater *dfs[] = {&ss->resp, &ss->req};
    for (size_t k = 0; k < 2; k++) {
        if (dfs[k]->active)
            deflateEnd(&dfs[k]->z);
        free(dfs[k]->out);
    }
    free(ss);
}

static bool start_deflate(const struct conf *c, struct deflater *df);

/* Envoy's request direction: no Accept-Encoding to ask, the rest as for responses. */
static void maybe_compress_request(struct session *ss, struct herald_headers *h, bool end_stream)
{
    const struct conf *c = ss->conf;
    if (!c->request.configured || end_stream)
        return;
    const char *cl = herald_headers_get(h, "content-length");
    const char *ce = herald_headers_get(h, "content-encoding");
    if (!feature_flag_on(&c->request.enabled) || (cl && strtoull(cl, NULL, 10) < c->request.min_content_length) ||
        !content_type_allowed(&c->request, herald_headers_get(h, "content-type")) || (ce && *ce) ||
        header_has_token(h, "cache-control", "no-transform") || !start_deflate(c, &ss->req)) {
        herald_stat_inc(c->rq.not_compressed);
        return;
    }
    ss->req.uncompressed = c->rq.total_uncompressed_bytes;
    ss->req.compressed = c->rq.total_compressed_bytes;
    herald_stat_inc(c->rq.compressed);
    herald_headers_remove(h, "content-length");
    herald_headers_set(h, "content-encoding", "gzip");
}

static enum herald_http_status decode_headers(void *p, struct herald_headers *headers, bool end_stream)
{
    struct session *ss = p;
    const struct route_conf *r = herald_http_stream_route_config(ss->s, ss->conf);
    if (!(r && r->disabled))
        maybe_compress_request(ss, headers, end_stream);
    if ((r && r->disabled) || !feature_flag_on(&ss->conf->response.enabled)) {
        ss->accept_stat = NULL;        /* off for this request: the response is not looked at */
        ss->no_accept_header = false;
        return HERALD_HTTP_CONTINUE;
    }
    const char *method = herald_headers_get(headers, ":method");
    ss->head = method && !strcmp(method, "HEAD");
    read_accept_encoding(ss, headers);
    if (!ss->accept_stat && !ss->no_accept_header)
        ss->accept_stat = "not_valid";
    if (ss->conf->remove_accept_encoding)
        herald_headers_remove(headers, "accept-encoding");
    return HERALD_HTTP_CONTINUE;
}

static bool start_deflate(const struct conf *c, struct deflater *df)
{
    if (deflateInit2(&df->z, c->level, Z_DEFLATED, c->window_bits + 16, c->memory_level, c->strategy) != Z_OK)
        return false;
    df->out = malloc(c->chunk_size);
    if (!df->out)
        abort();
    df->active = true;
    return true;
}

static void make_etag_weak(struct herald_headers *h)
{
    const char *etag = herald_headers_get(h, "etag");
    if (!etag || !strncmp(etag, "W/", 2))
        return;
    size_t len = strlen(etag) + 3;
    char *weak = malloc(len);
    if (!weak)
        abort();
    snprintf(weak, len, "W/%s", etag);
    herald_headers_set(h, "etag", weak);
    free(weak);
}

static enum herald_http_status encode_headers(void *p, struct herald_headers *headers, bool end_stream)
{
    struct session *ss = p;
    if (!ss->accept_stat && !ss->no_accept_header)
        return HERALD_HTTP_CONTINUE;   /* disabled for this request */
    if (!should_compress(ss, headers, end_stream) || !start_deflate(ss->conf, &ss->resp)) {
        herald_stat_inc(ss->conf->st.not_compressed);
        return HERALD_HTTP_CONTINUE;
    }
    ss->resp.uncompressed = ss->conf->st.total_uncompressed_bytes;
    ss->resp.compressed = ss->conf->st.total_compressed_bytes;
    herald_stat_inc(ss->conf->st.compressed);
    herald_headers_remove(headers, "content-length");
    herald_headers_set(headers, "content-encoding", "gzip");
    header_append_token(headers, "vary", "accept-encoding");
    make_etag_weak(headers);
    return HERALD_HTTP_CONTINUE;
}

/* Deflates len bytes with flush into out, in chunk_size pieces. */
static void deflate_into(struct deflater *df, size_t chunk_size, const void *in, size_t len, int flush,
                         struct herald_buf *out)
{
    df->z.next_in = (Bytef *)(uintptr_t)in;
    df->z.avail_in = (uInt)len;
    do {
        df->z.next_out = df->out;
        df->z.avail_out = (uInt)chunk_size;
        int rc = deflate(&df->z, flush);
        size_t produced = chunk_size - df->z.avail_out;
        if (produced)
            herald_buf_add(out, df->out, produced);
        if (rc == Z_STREAM_END || rc == Z_STREAM_ERROR)
            break;
        if (rc == Z_BUF_ERROR && df->z.avail_in == 0)
            break;                     /* nothing left to do for this flush */
    } while (df->z.avail_out == 0 || df->z.avail_in > 0);
}

/* Replaces data's bytes with their deflated form, sync-flushed; finish: end
 * the gzip stream. */
static void compress_buf(struct deflater *df, size_t chunk_size, struct herald_buf *data, bool finish)
{
    struct herald_buf *out = herald_buf_new();
    herald_stat_add(df->uncompressed, herald_buf_len(data));
    while (herald_buf_len(data)) {
        struct iovec v;
        herald_buf_peek(data, herald_buf_len(data), &v, 1);
        deflate_into(df, chunk_size, v.iov_base, v.iov_len, Z_NO_FLUSH, out);
        herald_buf_drain(data, v.iov_len);
    }
    deflate_into(df, chunk_size, NULL, 0, finish ? Z_FINISH : Z_SYNC_FLUSH, out);
    df->finished = finish;
    herald_stat_add(df->compressed, herald_buf_len(out));
    herald_buf_move(data, out, SIZE_MAX);
    herald_buf_free(out);
}

/* The trailers end the body: the gzip end to send in front of them, or NULL. */
static struct herald_buf *finish_before_trailers(struct deflater *df, size_t chunk_size)
{
    if (!df->active || df->finished)
        return NULL;
    struct herald_buf *end = herald_buf_new();
    compress_buf(df, chunk_size, end, true);
    return end;
}

static enum herald_http_status decode_data(void *p, struct herald_buf *data, bool end_stream)
{
    struct session *ss = p;
    if (ss->req.active && !ss->req.finished)
        compress_buf(&ss->req, ss->conf->chunk_size, data, end_stream);
    return HERALD_HTTP_CONTINUE;
}

static enum herald_http_status decode_trailers(void *p, struct herald_headers *trailers)
{
    (void)trailers;
    struct session *ss = p;
    struct herald_buf *end = finish_before_trailers(&ss->req, ss->conf->chunk_size);
    if (end) {
        herald_http_stream_add_decoded_data(ss->s, end);
        herald_buf_free(end);
    }
    return HERALD_HTTP_CONTINUE;
}

static enum herald_http_status encode_data(void *p, struct herald_buf *data, bool end_stream)
{
    struct session *ss = p;
    if (ss->resp.active && !ss->resp.finished)
        compress_buf(&ss->resp, ss->conf->chunk_size, data, end_stream);
    return HERALD_HTTP_CONTINUE;
}

/* Trailers end the body: the gzip end goes in front of them. */
static enum herald_http_status encode_trailers(void *p, struct herald_headers *trailers)
{
    (void)trailers;
    struct session *ss = p;
    struct herald_buf *end = finish_before_trailers(&ss->resp, ss->conf->chunk_size);
    if (end) {
        herald_http_stream_add_encoded_data(ss->s, end);
        herald_buf_free(end);
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
    .decode_trailers = decode_trailers,
    .encode_headers = encode_headers,
    .encode_data = encode_data,
    .encode_trailers = encode_trailers,
    .route_config_schema = &per_route_schema,
    .route_config_create = route_conf_create,
    .route_config_destroy = route_conf_destroy,
};

static const char *const type_urls[] = {
    "envoy.extensions.filters.http.compressor.v3.Compressor",
    NULL,
};

static const char *const aliases[] = { "envoy.compressor", NULL };

HERALD_PLUGIN(.name = "envoy.filters.http.compressor",
              .kind = HERALD_PLUGIN_HTTP_FILTER,
              .aliases = aliases,
              .type_urls = type_urls,
              .version = "1.0.0",
              .description = "gzip response compression (Envoy's compressor filter with the gzip library)",
              .config_schema = &compressor_schema,
              .ops = &ops);
