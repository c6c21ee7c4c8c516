/* local_reply_config: mappers (filter, status_code, body, body_format_override,
 * headers_to_add) and body_format, as Envoy's LocalReply: the first mapper
 * whose AccessLogFilter matches rewrites the reply; the body format (the
 * mapper's override, else body_format, else the body as it is) makes the
 * body, with the format's content type. Parsed once per HCM; used only when
 * a reply is made locally, never on a proxied request. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "access_log.h"
#include "access_log_filter.h"
#include "common.h"
#include "config/data_source.h"
#include "http/header_option.h"
#include "http/local_reply.h"

struct body_format {
    struct herald_access_log *fmt;
    char *content_type;
};

struct lr_mapper {
    struct log_filter *filter;
    int status;                        /* 0: keep */
    char *body;                        /* NULL: keep */
    struct body_format *override;      /* NULL: the config's body_format */
    struct herald_header_options *headers;   /* headers_to_add */
};

struct local_reply {
    struct lr_mapper *mappers;
    size_t nmappers;
    struct body_format *format;        /* NULL: the body as it is, text/plain */
};

static bool keys_ok(const struct herald_cfg *n, const char *const *allowed, const char *what, char **err)
{
    if (herald_cfg_type(n) != HERALD_CFG_OBJECT) {
        herald_cfg_errorf(n, err, "%s must be a mapping", what);
        return false;
    }
    for (size_t i = 0; i < herald_cfg_len(n); i++) {
        const char *k = herald_cfg_key_at(n, i);
        bool known = false;
        for (size_t j = 0; allowed[j] && !known; j++)
            known = !strcmp(k, allowed[j]);
        if (!known) {
            herald_cfg_errorf(herald_cfg_at(n, i), err, "unknown field '%s' in %s", k, what);
            return false;
        }
    }
    return true;
}

/* A DataSource's text (inline_string, inline_bytes, filename, environment_variable). */
static char *data_source(const struct herald_cfg *n, char **err)
{
    static const char *const keys[] = {"inline_string", "inline_bytes", "filename", "environment_variable", NULL};
    if (!keys_ok(n, keys, "envoy.config.core.v3.DataSource", err))
        return NULL;
    if (herald_cfg_len(n) != 1) {
        herald_cfg_errorf(n, err, "a DataSource needs exactly one of inline_string, inline_bytes, filename "
                                  "and environment_variable");
        return NULL;
    }
    size_t len;
    char *b = data_source_read(n, SIZE_MAX, &len, err);
    if (b && strlen(b) != len) {   /* bodies are text here */
        herald_cfg_errorf(herald_cfg_at(n, 0), err, "a body with NUL bytes is not supported");
        free(b);
        return NULL;
    }
    return b;
}

static void body_format_free(struct body_format *b)
{
    if (!b)
        return;
    herald_access_log_destroy(b->fmt);
    free(b->content_type);
    free(b);
}

/* A SubstitutionFormatString as a body format: content_type defaults to
 * text/plain, application/json for json_format (Envoy's BodyFormatter). */
static struct body_format *body_format_create(const struct herald_cfg *n, char **err)
{
    struct body_format *b = xcalloc(1, sizeof(*b));
    if (!(b->fmt = access_log_format_create(n, "%LOCAL_REPLY_BODY%", err))) {
        free(b);
        return NULL;
    }
    const char *ct = herald_cfg_str(herald_cfg_get(n, "content_type"), "");
    b->content_type = xstrdup(*ct ? ct : access_log_is_json(b->fmt) ? "application/json" : "text/plain");
    return b;
}

static int parse_mapper(struct lr_mapper *m, const struct herald_cfg *n, char **err)
{
    static const char *const keys[] = {"filter", "status_code", "body", "body_format_override", "headers_to_add",
                                       NULL};
    if (!keys_ok(n, keys, "envoy.extensions.filters.network.http_connection_manager.v3.ResponseMapper", err))
        return -1;
    const struct herald_cfg *f = herald_cfg_get(n, "filter");
    if (!f)
        return herald_cfg_errorf(n, err, "filter is required");
    if (!(m->filter = log_filter_create(f, err)))
        return -1;
    const struct herald_cfg *sc = herald_cfg_get(n, "status_code");
    if (sc) {
        int64_t code = herald_cfg_int(sc, 0);
        if (herald_cfg_type(sc) != HERALD_CFG_INT || code < 200 || code >= 600)
            return herald_cfg_errorf(sc, err, "status_code must be from 200 to 599");
        m->status = (int)code;
    }
    const struct herald_cfg *b = herald_cfg_get(n, "body");
    if (b && !(m->body = data_source(b, err)))
        return -1;
    const struct herald_cfg *bf = herald_cfg_get(n, "body_format_override");
    if (bf && !(m->override = body_format_create(bf, err)))
        return -1;
    const struct herald_cfg *hs = herald_cfg_get(n, "headers_to_add");
    if (hs) {
        if (herald_cfg_type(hs) != HERALD_CFG_ARRAY)
            return herald_cfg_errorf(hs, err, "headers_to_add must be a list");
        if (herald_cfg_len(hs) > 1000)
            return herald_cfg_errorf(hs, err, "at most 1000 headers_to_add");
        if (herald_header_options_new(hs, &m->headers, err) < 0)
            return -1;
    }
    return 0;
}

struct local_reply *local_reply_create(const struct herald_cfg *n, char **err)
{
    static const char *const keys[] = {"mappers", "body_format", NULL};
    if (!keys_ok(n, keys, "envoy.extensions.filters.network.http_connection_manager.v3.LocalReplyConfig", err))
        return NULL;
    struct local_reply *lr = xcalloc(1, sizeof(*lr));
    const struct herald_cfg *ms = herald_cfg_get(n, "mappers");
    if (ms && herald_cfg_type(ms) != HERALD_CFG_ARRAY) {
        herald_cfg_errorf(ms, err, "mappers must be a list");
        goto fail;
    }
    lr->mappers = xcalloc(herald_cfg_len(ms) + 1, sizeof(*lr->mappers));
    for (size_t i = 0; i < herald_cfg_len(ms); i++) {
        lr->nmappers = i + 1;
        if (parse_mapper(&lr->mappers[i], herald_cfg_at(ms, i), err) < 0)
            goto fail;
    }
    const struct herald_cfg *bf = herald_cfg_get(n, "body_format");
    if (bf && !(lr->format = body_format_create(bf, err)))
        goto fail;
    return lr;
fail:
    local_reply_free(lr);
    return NULL;
}

void local_reply_free(struct local_reply *lr)
{
    if (!lr)
        return;
    for (size_t i = 0; i < lr->nmappers; i++) {
        struct lr_mapper *m = &lr->mappers[i];
        log_filter_free(m->filter);
        free(m->body);
        body_format_free(m->override);
        herald_header_options_free(m->headers);
    }
    free(lr->mappers);
    body_format_free(lr->format);
    free(lr);
}

const struct lr_mapper *local_reply_match(const struct local_reply *lr, herald_log_field_cb field, void *ctx)
{
    for (size_t i = 0; i < lr->nmappers; i++)
        if (log_filter_matches(lr->mappers[i].filter, field, ctx))
            return &lr->mappers[i];
    return NULL;
}

int lr_mapper_status(const struct lr_mapper *m)
{
    return m->status;
}

const char *lr_mapper_body(const struct lr_mapper *m)
{
    return m->body;
}

void lr_mapper_add_headers(const struct lr_mapper *m, struct herald_headers *h, herald_log_field_cb field,
                           void *ctx)
{
    header_options_apply_with(m->headers, h, field, ctx);
}

char *local_reply_format(const struct local_reply *lr, const struct lr_mapper *m, herald_log_field_cb field,
                         void *ctx, size_t *len, const char **content_type)
{
    const struct body_format *bf = m && m->override ? m->override : lr->format;
    if (!bf) {
        char scratch[64];
        const char *body = field(ctx, "LOCAL_REPLY_BODY", NULL, scratch, sizeof(scratch));
        *content_type = "text/plain";
        *len = body ? strlen(body) : 0;
        return xstrdup(body ? body : "");
    }
    *content_type = bf->content_type;
    return access_log_render(bf->fmt, field, ctx, len);
}
