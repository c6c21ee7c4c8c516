/* Envoy's HeaderValueOption (envoy.config.core.v3): header {key, value},
 * append_action (or the deprecated append), keep_empty_value. One
 * implementation for every list of them: routes, virtual hosts and route
 * configurations (request/response_headers_to_add), local_reply_config
 * mappers, health checks, and filters through the SDK.
 *
 * A value is Envoy's substitution format: literal text, "%%" for '%', and
 * the access log's %OPERATORS% (%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%,
 * %REQ(x)%, %START_TIME%, ...), checked at start-up like an access log's. A
 * value without '%' stays a plain string and costs nothing to apply. */
#include <string.h>
#include <strings.h>

#include "access_log.h"
#include "common.h"
#include "config/schema.h"
#include "config/tree.h"
#include "http/header_option.h"


enum action { APPEND_IF_EXISTS_OR_ADD = 0, ADD_IF_ABSENT, OVERWRITE_IF_EXISTS_OR_ADD, OVERWRITE_IF_EXISTS };

struct header_option {
    char *key;                          /* lower case */
    char *literal;                      /* the value when it has no operator */
    struct herald_access_log *format;   /* else its format */
    enum action action;
    bool keep_empty;
};

struct herald_header_options {
    size_t n;
    struct header_option e[];
};

/* ------------------------------------------------------------ parse */

/* For lists no schema checked (local_reply_config): what the schema would say. */
static int check_keys(const struct herald_cfg *n, const struct herald_field *fields, const char *what, char **err)
{
    if (herald_cfg_type(n) != HERALD_CFG_OBJECT)
        return herald_cfg_errorf(n, err, "%s must be a mapping", what);
    for (size_t i = 0; i < herald_cfg_len(n); i++) {
        const char *k = herald_cfg_key_at(n, i);
        const struct herald_field *f = fields;
        while (f->name && strcmp(f->name, k))
            f++;
        if (!f->name)
            return herald_cfg_errorf(herald_cfg_at(n, i), err, "unknown field '%s' in %s", k, what);
        if (f->flags & HERALD_F_UNSUPPORTED)
            return herald_cfg_errorf(herald_cfg_at(n, i), err, "not supported by herald: %s (%s)", k, f->hint);
    }
    return 0;
}

static int parse_one(struct header_option *o, const struct herald_cfg *n, char **err)
{
    if (check_keys(n, header_option_fields, "envoy.config.core.v3.HeaderValueOption", err) < 0 ||
        header_option_check(n, err) < 0)
        return -1;
    const struct herald_cfg *hv = herald_cfg_get(n, "header");
    if (check_keys(hv, header_option_value_fields, "envoy.config.core.v3.HeaderValue", err) < 0)
        return -1;
    o->key = xstrdup(herald_cfg_str(herald_cfg_get(hv, "key"), ""));
    for (char *p = o->key; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    const struct herald_cfg *val = herald_cfg_get(hv, "value");
    const char *v = herald_cfg_str(val, "");
    if (!strchr(v, '%'))
        o->literal = xstrdup(v);
    else if (!(o->format = access_log_header_value_create(v, val, err)))
        return -1;
    const struct herald_cfg *append = herald_cfg_get(n, "append"), *aa = herald_cfg_get(n, "append_action");
    o->action = APPEND_IF_EXISTS_OR_ADD;
    if (append)
        o->action = herald_cfg_bool(append, true) ? APPEND_IF_EXISTS_OR_ADD : OVERWRITE_IF_EXISTS_OR_ADD;
    if (aa) {
        const char *a = herald_cfg_str(aa, "");
        size_t i = 0;
        while (header_option_actions[i] && strcmp(header_option_actions[i], a))
            i++;
        if (!header_option_actions[i])
            return herald_cfg_errorf(aa, err, "append_action must be APPEND_IF_EXISTS_OR_ADD, ADD_IF_ABSENT, "
                                     "OVERWRITE_IF_EXISTS_OR_ADD or OVERWRITE_IF_EXISTS");
        o->action = (enum action)i;
    }
    o->keep_empty = herald_cfg_bool(herald_cfg_get(n, "keep_empty_value"), false);
    return 0;
}

HERALD_EXPORT int herald_header_options_new(const struct herald_cfg *list, struct herald_header_options **out,
                                            char **err)
{
    *out = NULL;
    if (!list || herald_cfg_type(list) == HERALD_CFG_NULL)
        return 0;
    if (herald_cfg_type(list) != HERALD_CFG_ARRAY)
        return herald_cfg_errorf(list, err, "a list of envoy.config.core.v3.HeaderValueOption is expected");
    size_t n = herald_cfg_len(list);
    if (!n)
        return 0;
    struct herald_header_options *o = xcalloc(1, sizeof(*o) + n * sizeof(o->e[0]));
    for (size_t i = 0; i < n; i++) {
        o->n = i + 1;      /* so that a failure frees what is there */
        if (parse_one(&o->e[i], herald_cfg_at(list, i), err) < 0) {
            herald_header_options_free(o);
            return -1;
        }
    }
    *out = o;
    return 0;
}

HERALD_EXPORT void herald_header_options_free(struct herald_header_options *o)
{
    if (!o)
        return;
    for (size_t i = 0; i < o->n; i++) {
        free(o->e[i].key);
        free(o->e[i].literal);
        herald_access_log_destroy(o->e[i].format);
    }
    free(o);
}

size_t header_options_count(const struct herald_header_options *o)
{
    return o ? o->n : 0;
}

/* ------------------------------------------------------------ apply */

static const char *no_field(void *ctx, const char *op, const char *arg, char *scratch, size_t len)
{
    (void)ctx, (void)op, (void)arg, (void)scratch, (void)len;
    return NULL;
}

void header_options_apply_with(const struct herald_header_options *o, struct herald_headers *h,
                               herald_log_field_cb field, void *ctx)
{
    if (!o || !h)
        return;
    for (size_t i = 0; i < o->n; i++) {
        const struct header_option *e = &o->e[i];
        char *rendered = NULL;
        const char *v = e->literal;
        if (e->format) {
            size_t len;
            v = rendered = access_log_render(e->format, field ? field : no_field, ctx, &len);
        }
        if (*v || e->keep_empty) {
            bool present = e->action == APPEND_IF_EXISTS_OR_ADD || e->action == OVERWRITE_IF_EXISTS_OR_ADD
                               ? false
                               : herald_headers_get(h, e->key) != NULL;
            switch (e->action) {
            case APPEND_IF_EXISTS_OR_ADD:
                herald_headers_add(h, e->key, v);
                break;
            case ADD_IF_ABSENT:
                if (!present)
                    herald_headers_add(h, e->key, v);
                break;
            case OVERWRITE_IF_EXISTS_OR_ADD:
                herald_headers_set(h, e->key, v);
                break;
            case OVERWRITE_IF_EXISTS:
                if (present)
                    herald_headers_set(h, e->key, v);
                break;
            }
        }
        free(rendered);
    }
}

void herald_header_options_apply_fields(const struct herald_header_options *o, struct herald_headers *h,
                                        herald_log_field_cb field, void *ctx)
{
    header_options_apply_with(o, h, field, ctx);
}

/* ------------------------------------------------------------ herald_format */

struct herald_format *herald_format_new(const struct herald_cfg *n, char **err)
{
    return (struct herald_format *)access_log_header_value_create(herald_cfg_str(n, ""), n, err);
}

char *herald_format_render(const struct herald_format *f, herald_log_field_cb field, void *ctx)
{
    size_t len;
    return access_log_render((const struct herald_access_log *)f, field ? field : no_field, ctx, &len);
}

void herald_format_free(struct herald_format *f)
{
    herald_access_log_destroy((struct herald_access_log *)f);
}

