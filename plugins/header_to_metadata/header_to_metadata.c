/* header_to_metadata (HTTP): envoy.filters.http.header_to_metadata, Envoy's
 * Header-To-Metadata filter. Each rule reads a request (request_rules) or
 * response (response_rules) header, or a cookie, and sets a dynamic metadata
 * key: on_header_present from the value (or a fixed value, or the value
 * rewritten by regex_value_rewrite), on_header_missing from a fixed value.
 * Values may be base64 and typed STRING, NUMBER or PROTOBUF_VALUE (a
 * serialized google.protobuf.Value: null, number, string or bool; a struct
 * or list is not added). The usual use: namespace envoy.lb, which the router
 * merges into the request's subset criteria (lb_subset_config).
 *
 * As Envoy: the most specific typed_per_filter_config (a Config with rules)
 * replaces the filter's own; a value of 8 KiB or more is not added; stats
 * only with stat_prefix, as http_filter_name.<stat_prefix>.*. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/herald.h"
#include "value.h"

#define COMPONENT "header_to_metadata"
#define DEFAULT_NS "envoy.filters.http.header_to_metadata"
#define MAX_VALUE_LEN (8 * 1024)         /* Envoy's MAX_HEADER_VALUE_LEN */

enum vtype { VT_STRING = 0, VT_NUMBER, VT_PROTOBUF_VALUE };

struct kv {                              /* a KeyValuePair */
    char *ns, *key, *value;              /* value NULL: the header's */
    enum vtype type;
    bool base64;
};

struct rule {
    char *header;                        /* lower-case; NULL for a cookie rule */
    char *cookie;
    struct kv *present, *missing;
    struct herald_regex_subst *rewrite;  /* on_header_present.regex_value_rewrite */
    bool remove;
};

struct stats {
    struct herald_stat *rules_processed[2], *metadata_added[2], *header_not_found[2];
    struct herald_stat *base64_decode_failed, *header_value_too_long, *regex_substitution_failed;
};

struct conf {
    struct rule *rules[2]; size_t nrules[2]; /* [0] request_rules, [1] response_rules */
    struct stats *st;                    /* NULL without stat_prefix */
};

enum { REQ = 0, RESP = 1 };

struct session {
    struct conf *conf;                   /* the filter's */
    const struct conf *eff;              /* the most specific one, once known */
    struct herald_http_stream *s;
};

/* ------------------------------------------------------------ schema */

static const char *const type_values[] = { "STRING", "NUMBER", "PROTOBUF_VALUE", NULL };
static const char *const encode_values[] = { "NONE", "BASE64", NULL };

static int kv_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *k = herald_cfg_get(n, "key");
    if (!*herald_cfg_str(k, ""))
        return herald_cfg_errorf(k ? k : n, err, "a KeyValuePair needs a non-empty key");
    return 0;
}

static const struct herald_field kv_fields[] = {
    {.name = "metadata_namespace", .kind = HERALD_FIELD_STRING,
     .help = "default envoy.filters.http.header_to_metadata; envoy.lb feeds subset load balancing"},
    {.name = "key", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED},
    {.name = "value", .kind = HERALD_FIELD_STRING,
     .help = "on_header_present: used instead of the header's value; on_header_missing: required"},
    {.name = "regex_value_rewrite", .kind = HERALD_FIELD_MESSAGE, .message = &herald_regex_subst_schema,
     .help = "on_header_present: the header's value rewritten (every match replaced)"},
    {.name = "type", .kind = HERALD_FIELD_ENUM, .enum_values = type_values,
     .help = "STRING (default), NUMBER or PROTOBUF_VALUE (a serialized google.protobuf.Value)"},
    {.name = "encode", .kind = HERALD_FIELD_ENUM, .enum_values = encode_values,
     .help = "NONE (default) or BASE64: decoded before use"},
    {.name = NULL},
};
static const struct herald_message kv_schema = {
    "envoy.extensions.filters.http.header_to_metadata.v3.Config.KeyValuePair", kv_fields, kv_check,
};

/* Envoy's Rule checks. */
static int rule_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *h = herald_cfg_get(n, "header"), *c = herald_cfg_get(n, "cookie");
    const struct herald_cfg *p = herald_cfg_get(n, "on_header_present"), *m = herald_cfg_get(n, "on_header_missing");
    const char *name = herald_cfg_str(h ? h : c, "");
    if (!*name)
        return herald_cfg_errorf(h ? h : c ? c : n, err, "a rule needs a header or a cookie");
    if (strpbrk(name, "\r\n"))
        return herald_cfg_errorf(h ? h : c, err, "'%s' is not a valid header name", name);
    if (!p && !m)
        return herald_cfg_errorf(n, err, "a rule needs on_header_present or on_header_missing");
    if (p && *herald_cfg_str(herald_cfg_get(p, "value"), "") && herald_cfg_get(p, "regex_value_rewrite"))
        return herald_cfg_errorf(herald_cfg_get(p, "regex_value_rewrite"), err,
                                 "value and regex_value_rewrite cannot both be set");
    if (c && herald_cfg_bool(herald_cfg_get(n, "remove"), false))
        return herald_cfg_errorf(herald_cfg_get(n, "remove"), err, "remove cannot be used with a cookie");
    if (m && !*herald_cfg_str(herald_cfg_get(m, "value"), ""))
        return herald_cfg_errorf(m, err, "on_header_missing needs a non-empty value");
    return 0;
}

static const struct herald_field rule_fields[] = {
    {.name = "header", .kind = HERALD_FIELD_STRING, .oneof = "header_cookie_specifier",
     .help = "the header to read (all its values joined with ',')"},
    {.name = "cookie", .kind = HERALD_FIELD_STRING, .oneof = "header_cookie_specifier",
     .help = "the cookie to read (an empty one counts as missing)"},
    {.name = "on_header_present", .kind = HERALD_FIELD_MESSAGE, .message = &kv_schema},
    {.name = "on_header_missing", .kind = HERALD_FIELD_MESSAGE, .message = &kv_schema},
    {.name = "remove", .kind = HERALD_FIELD_BOOL, .help = "remove the header once read (not for cookies)"},
    {.name = NULL},
};
static const struct herald_message rule_schema = {
    "envoy.extensions.filters.http.header_to_metadata.v3.Config.Rule", rule_fields, rule_check,
};

static const struct herald_field config_fields[] = {
    {.name = "request_rules", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED, .message = &rule_schema},
    {.name = "response_rules", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REPEATED, .message = &rule_schema},
    {.name = "stat_prefix", .kind = HERALD_FIELD_STRING,
     .help = "stats as http_filter_name.<stat_prefix>.*; none without it"},
    {.name = NULL},
};
static const struct herald_message config_schema = {
    "envoy.extensions.filters.http.header_to_metadata.v3.Config", config_fields, NULL,
};

/* ------------------------------------------------------------ config */

static char *dup(const char *s)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d)
        abort();
    return d;
}

static void kv_free(struct kv *k)
{
    if (!k)
        return;
    free(k->ns);
    free(k->key);
    free(k->value);
    free(k);
}

static struct kv *kv_new(const struct herald_cfg *n)
{
    static const char *const types[] = { "STRING", "NUMBER", "PROTOBUF_VALUE" };
    if (!n)
        return NULL;
    struct kv *k = calloc(1, sizeof(*k));
    if (!k)
        abort();
    const char *ns = herald_cfg_str(herald_cfg_get(n, "metadata_namespace"), "");
    k->ns = dup(*ns ? ns : DEFAULT_NS);
    k->key = dup(herald_cfg_str(herald_cfg_get(n, "key"), ""));
    const char *v = herald_cfg_str(herald_cfg_get(n, "value"), "");
    k->value = *v ? dup(v) : NULL;
    const char *t = herald_cfg_str(herald_cfg_get(n, "type"), "STRING");
    for (size_t i = 0; i < 3; i++)
        if (!strcmp(t, types[i]))
            k->type = (enum vtype)i;
    k->base64 = !strcmp(herald_cfg_str(herald_cfg_get(n, "encode"), "NONE"), "BASE64");
    return k;
}

static void conf_destroy(void *p)
{
    struct conf *c = p;
    if (!c)
        return;
    for (int d = 0; d < 2; d++) {
        for (size_t i = 0; i < c->nrules[d]; i++) {
            struct rule *r = &c->rules[d][i];
            free(r->header);
            free(r->cookie);
            kv_free(r->present);
            kv_free(r->missing);
            herald_regex_subst_free(r->rewrite);
        }
        free(c->rules[d]);
    }
    free(c->st);
    free(c);
}

static int parse_rules(const struct herald_cfg *list, struct conf *c, int dir, const struct herald_filter_env *env,
                       char **err)
{
    size_t n = herald_cfg_len(list);
    c->rules[dir] = calloc(n ? n : 1, sizeof(*c->rules[dir]));
    if (!c->rules[dir])
        abort();
    for (size_t i = 0; i < n; i++) {
        const struct herald_cfg *rn = herald_cfg_at(list, i);
        struct rule *r = &c->rules[dir][c->nrules[dir]++];
        const char *h = herald_cfg_str(herald_cfg_get(rn, "header"), NULL);
        if (h && *h) {
            r->header = dup(h);
            for (char *q = r->header; *q; q++)
                *q = (char)tolower((unsigned char)*q);   /* header map names are lower-case */
        } else {
            r->cookie = dup(herald_cfg_str(herald_cfg_get(rn, "cookie"), ""));
        }
        const struct herald_cfg *p = herald_cfg_get(rn, "on_header_present");
        const struct herald_cfg *m = herald_cfg_get(rn, "on_header_missing");
        r->present = kv_new(p);
        r->missing = kv_new(m);
        r->remove = herald_cfg_bool(herald_cfg_get(rn, "remove"), false);
        const struct herald_cfg *rw = herald_cfg_get(p, "regex_value_rewrite");
        if (rw && !(r->rewrite = herald_regex_subst_new(rw, err)))
            return -1;
        if (herald_cfg_get(m, "regex_value_rewrite"))
            herald_env_warn(env, herald_cfg_get(m, "regex_value_rewrite"), "regex_value_rewrite has no effect in "
                            "on_header_missing (Envoy applies it to on_header_present only)");
    }
    return 0;
}

static void make_stats(struct conf *c, const char *sp)
{
    char prefix[256];
    snprintf(prefix, sizeof(prefix), "http_filter_name.%s", sp);
    c->st = calloc(1, sizeof(*c->st));
    if (!c->st)
        abort();
    c->st->rules_processed[REQ] = herald_counter(prefix, "request_rules_processed");
    c->st->rules_processed[RESP] = herald_counter(prefix, "response_rules_processed");
    c->st->metadata_added[REQ] = herald_counter(prefix, "request_metadata_added");
    c->st->metadata_added[RESP] = herald_counter(prefix, "response_metadata_added");
    c->st->header_not_found[REQ] = herald_counter(prefix, "request_header_not_found");
    c->st->header_not_found[RESP] = herald_counter(prefix, "response_header_not_found");
    c->st->base64_decode_failed = herald_counter(prefix, "base64_decode_failed");
    c->st->header_value_too_long = herald_counter(prefix, "header_value_too_long");
    c->st->regex_substitution_failed = herald_counter(prefix, "regex_substitution_failed");
}

static int create(const struct herald_cfg *n, const struct herald_filter_env *env, bool per_route, void **out,
                  char **err)
{
    struct conf *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    if (parse_rules(herald_cfg_get(n, "request_rules"), c, REQ, env, err) < 0 ||
        parse_rules(herald_cfg_get(n, "response_rules"), c, RESP, env, err) < 0) {
        conf_destroy(c);
        return -1;
    }
    if (per_route && !c->nrules[REQ] && !c->nrules[RESP]) {
        conf_destroy(c);
        return herald_cfg_errorf(n, err, "a per-route header_to_metadata config needs request_rules or "
                                 "response_rules");
    }
    const char *sp = herald_cfg_str(herald_cfg_get(n, "stat_prefix"), "");
    if (*sp)
        make_stats(c, sp);
    *out = c;
    return 0;
}

static int conf_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out, char **err)
{
    return create(n, env, false, out, err);
}

static int route_conf_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out,
                             char **err)
{
    return create(n, env, true, out, err);
}

/* ------------------------------------------------------------ the filter */

/* stats exist only with stat_prefix */
#define COUNT(c, field) do { if ((c)->st) herald_stat_inc((c)->st->field); } while (0)

/* Envoy's addMetadata: decode, type, set. */
static void add(struct session *ss, const struct conf *c, const struct kv *k, const char *value, int dir)
{
    size_t len = strlen(value);
    char *decoded = NULL;
    if (len >= MAX_VALUE_LEN) {
        HERALD_LOGF(HERALD_LOG_DEBUG, COMPONENT, "metadata value for %s is too long", k->key);
        COUNT(c, header_value_too_long);
        return;
    }
    if (k->base64) {
        if (h2m_base64_decode(value, len, &decoded, &len) < 0) {
            HERALD_LOGF(HERALD_LOG_DEBUG, COMPONENT, "base64 decode failed for %s", k->key);
            COUNT(c, base64_decode_failed);
            return;
        }
        value = decoded;
    }
    int rc = -1;
    switch (k->type) {
    case VT_STRING:
        rc = herald_http_stream_metadata_set(ss->s, k->ns, k->key, value);
        break;
    case VT_NUMBER: {
        /* Envoy trims, then wants the whole rest to be a decimal number */
        while (isspace((unsigned char)*value))
            value++;
        char buf[64];
        size_t n = strlen(value);
        while (n && isspace((unsigned char)value[n - 1]))
            n--;
        if (n && n < sizeof(buf) && !memchr(value, 'x', n) && !memchr(value, 'X', n)) {
            memcpy(buf, value, n);
            buf[n] = '\0';
            rc = herald_http_stream_metadata_set_typed(ss->s, k->ns, k->key, buf, HERALD_METADATA_NUMBER);
        }
        break;
    }
    case VT_PROTOBUF_VALUE: {
        enum h2m_kind kind;
        double num = 0;
        const char *str = NULL;
        size_t slen = 0;
        char nbuf[40];
        if (h2m_pb_value((const unsigned char *)value, len, &kind, &num, &str, &slen) < 0)
            break;
        if (kind == H2M_STRING) {
            char *sv = strndup(str, slen);
            if (!sv)
                abort();
            rc = herald_http_stream_metadata_set(ss->s, k->ns, k->key, sv);
            free(sv);
        } else if (kind == H2M_NUMBER) {
            snprintf(nbuf, sizeof(nbuf), "%.17g", num);
            rc = herald_http_stream_metadata_set_typed(ss->s, k->ns, k->key, nbuf, HERALD_METADATA_NUMBER);
        } else if (kind == H2M_BOOL) {
            rc = herald_http_stream_metadata_set_typed(ss->s, k->ns, k->key, num ? "true" : "false",
                                                       HERALD_METADATA_BOOL);
        } else if (kind == H2M_NULL) {
            rc = herald_http_stream_metadata_set_typed(ss->s, k->ns, k->key, NULL, HERALD_METADATA_NULL);
        } else {
            HERALD_LOGF(HERALD_LOG_DEBUG, COMPONENT, "%s: a protobuf Value of this kind (%d) is not added",
                        k->key, (int)kind);
        }
        break;
    }
    }
    free(decoded);
    if (rc < 0) {
        HERALD_LOGF(HERALD_LOG_DEBUG, COMPONENT, "value for %s not added (not of its type)", k->key);
        return;
    }
    COUNT(c, metadata_added[dir]);
}

/* Envoy's applyKeyValue. */
static void apply(struct session *ss, const struct conf *c, const struct rule *r, const struct kv *k,
                  const char *value, int dir)
{
    char *rewritten = NULL;
    if (k->value) {
        value = k->value;
    } else if (r->rewrite) {
        rewritten = herald_regex_subst_apply(r->rewrite, value);
        if (*value && !*rewritten)
            COUNT(c, regex_substitution_failed);
        value = rewritten;
    }
    if (*value)
        add(ss, c, k, value, dir);
    else
        HERALD_LOGF(HERALD_LOG_DEBUG, COMPONENT, "value for %s is empty, not adding metadata", k->key);
    free(rewritten);
}

static void run(struct session *ss, struct herald_headers *h, int dir)
{
    const struct conf *c = ss->eff;
    for (size_t i = 0; i < c->nrules[dir]; i++) {
        const struct rule *r = &c->rules[dir][i];
        char *v;
        if (r->header) {
            v = herald_headers_get_all(h, r->header);
            if (v && r->remove)
                herald_headers_remove(h, r->header);
        } else {
            v = herald_headers_cookie(h, r->cookie);
        }
        COUNT(c, rules_processed[dir]);
        if (v && r->present) {
            apply(ss, c, r, r->present, v, dir);
        } else if (!v && r->missing) {
            COUNT(c, header_not_found[dir]);
            apply(ss, c, r, r->missing, "", dir);
        }
        free(v);
    }
}

/* The most specific per-route config, else the filter's (Envoy resolves it
 * once per stream). */
static const struct conf *effective(struct session *ss)
{
    if (!ss->eff) {
        const struct conf *rc = herald_http_stream_route_config(ss->s, ss->conf);
        ss->eff = rc ? rc : ss->conf;
    }
    return ss->eff;
}

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
    free(p);
}

static enum herald_http_status decode_headers(void *p, struct herald_headers *headers, bool end_stream)
{
    (void)end_stream;
    struct session *ss = p;
    if (effective(ss)->nrules[REQ])
        run(ss, headers, REQ);
    return HERALD_HTTP_CONTINUE;
}

static enum herald_http_status encode_headers(void *p, struct herald_headers *headers, bool end_stream)
{
    (void)end_stream;
    struct session *ss = p;
    if (effective(ss)->nrules[RESP])
        run(ss, headers, RESP);
    return HERALD_HTTP_CONTINUE;
}

static const struct herald_http_filter_ops ops = {
    .size = sizeof(struct herald_http_filter_ops),
    .config_create = conf_create,
    .config_destroy = conf_destroy,
    .session_new = session_new,
    .session_destroy = session_destroy,
    .decode_headers = decode_headers,
    .encode_headers = encode_headers,
    .route_config_schema = &config_schema,
    .route_config_create = route_conf_create,
    .route_config_destroy = conf_destroy,
};

static const char *const type_urls[] = {
    "envoy.extensions.filters.http.header_to_metadata.v3.Config",
    "envoy.config.filter.http.header_to_metadata.v2.Config",
    NULL,
};

HERALD_PLUGIN(.name = "envoy.filters.http.header_to_metadata",
              .kind = HERALD_PLUGIN_HTTP_FILTER,
              .type_urls = type_urls,
              .version = "1.0.0",
              .description = "request and response headers (or cookies) into dynamic metadata, e.g. envoy.lb",
              .config_schema = &config_schema,
              .ops = &ops);
