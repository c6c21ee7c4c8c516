/* See header_option.h. */
#include <stdlib.h>
#include <string.h>

#include "header_option.h"

static const struct herald_field header_fields[] = {
    {.name = "key", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED},
    {.name = "value", .kind = HERALD_FIELD_STRING},
    {.name = "raw_value", .kind = HERALD_FIELD_ANY, .flags = HERALD_F_UNSUPPORTED},
    {.name = NULL},
};
static const struct herald_message header_msg = {
    "envoy.config.core.v3.HeaderValue", header_fields, NULL,
};

static const char *const actions[] = {
    "APPEND_IF_EXISTS_OR_ADD", "ADD_IF_ABSENT", "OVERWRITE_IF_EXISTS_OR_ADD", "OVERWRITE_IF_EXISTS", NULL,
};

static int option_check(const struct herald_cfg *n, char **err)
{
    const char *key = herald_cfg_str(herald_cfg_get(herald_cfg_get(n, "header"), "key"), "");
    if (!*key)
        return herald_cfg_errorf(n, err, "header.key must not be empty");
    for (const char *p = key; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == ':' || (unsigned char)*p >= 0x7f)
            return herald_cfg_errorf(herald_cfg_get(n, "header"), err, "'%s' is not a header name one may add",
                                     key);
    if (herald_cfg_get(n, "append") && herald_cfg_get(n, "append_action"))
        return herald_cfg_errorf(herald_cfg_get(n, "append"), err, "append and append_action cannot both be set");
    return 0;
}

static const struct herald_field option_fields[] = {
    {.name = "header", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REQUIRED, .message = &header_msg},
    {.name = "append", .kind = HERALD_FIELD_BOOL, .flags = HERALD_F_DEPRECATED, .hint = "use append_action"},
    {.name = "append_action", .kind = HERALD_FIELD_ENUM, .enum_values = actions,
     .help = "APPEND_IF_EXISTS_OR_ADD (default), ADD_IF_ABSENT, OVERWRITE_IF_EXISTS_OR_ADD or OVERWRITE_IF_EXISTS"},
    {.name = "keep_empty_value", .kind = HERALD_FIELD_BOOL, .help = "default false: an empty value is not added"},
    {.name = NULL},
};
const struct herald_message header_option_msg = {
    "envoy.config.core.v3.HeaderValueOption", option_fields, option_check,
};

static char *xdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d)
        abort();
    return d;
}

struct header_option *header_options_parse(const struct herald_cfg *list, size_t *n)
{
    *n = herald_cfg_len(list);
    if (!*n)
        return NULL;
    struct header_option *o = calloc(*n, sizeof(*o));
    if (!o)
        abort();
    for (size_t i = 0; i < *n; i++) {
        const struct herald_cfg *e = herald_cfg_at(list, i), *h = herald_cfg_get(e, "header"), *v;
        char *key = xdup(herald_cfg_str(herald_cfg_get(h, "key"), ""));
        for (char *p = key; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
        o[i].key = key;
        o[i].value = xdup(herald_cfg_str(herald_cfg_get(h, "value"), ""));
        o[i].keep_empty_value = herald_cfg_bool(herald_cfg_get(e, "keep_empty_value"), false);
        o[i].action = APPEND_IF_EXISTS_OR_ADD;
        if ((v = herald_cfg_get(e, "append")))      /* the old bool: false overwrites */
            o[i].action = herald_cfg_bool(v, true) ? APPEND_IF_EXISTS_OR_ADD : OVERWRITE_IF_EXISTS_OR_ADD;
        const char *a = herald_cfg_str(herald_cfg_get(e, "append_action"), NULL);
        for (size_t k = 0; a && actions[k]; k++)
            if (!strcmp(a, actions[k]))
                o[i].action = (enum header_action)k;
    }
    return o;
}

void header_options_free(struct header_option *o, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(o[i].key);
        free(o[i].value);
    }
    free(o);
}

void header_options_apply(const struct header_option *o, size_t n, struct herald_headers *h)
{
    for (size_t i = 0; i < n; i++) {
        if (!*o[i].value && !o[i].keep_empty_value)
            continue;
        bool present = herald_headers_get(h, o[i].key) != NULL;
        switch (o[i].action) {
        case APPEND_IF_EXISTS_OR_ADD:
            herald_headers_add(h, o[i].key, o[i].value);
            break;
        case ADD_IF_ABSENT:
            if (!present)
                herald_headers_add(h, o[i].key, o[i].value);
            break;
        case OVERWRITE_IF_EXISTS_OR_ADD:
            herald_headers_set(h, o[i].key, o[i].value);
            break;
        case OVERWRITE_IF_EXISTS:
            if (present)
                herald_headers_set(h, o[i].key, o[i].value);
            break;
        }
    }
}
