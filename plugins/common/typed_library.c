/* See typed_library.h. */
#include <string.h>
#include <strings.h>

#include "typed_library.h"

static const struct herald_field *field_named(const struct herald_message *m, const char *name)
{
    for (const struct herald_field *f = m->fields; f->name; f++)
        if (!strcmp(f->name, name))
            return f;
    return NULL;
}

static const char *enum_spelling(const struct herald_field *f, const char *v)
{
    for (const char *const *e = f->enum_values; e && *e; e++)
        if (!strcasecmp(*e, v))
            return *e;
    return NULL;
}

int typed_library_check(const struct herald_cfg *n, const struct herald_message *schema, char **err)
{
    if (herald_cfg_type(n) != HERALD_CFG_OBJECT)
        return herald_cfg_errorf(n, err, "typed_config must be a mapping with \"@type\": %s", schema->name);
    const char *type = herald_cfg_str(herald_cfg_get(n, "@type"), "");
    const char *slash = strrchr(type, '/');
    if (strcmp(slash ? slash + 1 : type, schema->name))
        return herald_cfg_errorf(n, err, "\"@type\" must be type.googleapis.com/%s (herald has no other), not \"%s\"",
                                 schema->name, type);
    for (size_t i = 0; i < herald_cfg_len(n); i++) {
        const char *key = herald_cfg_key_at(n, i);
        const struct herald_cfg *v = herald_cfg_at(n, i);
        if (!strcmp(key, "@type"))
            continue;
        const struct herald_field *f = field_named(schema, key);
        if (!f)
            return herald_cfg_errorf(v, err, "unknown field \"%s\" in %s", key, schema->name);
        if (f->flags & HERALD_F_UNSUPPORTED)
            return herald_cfg_errorf(v, err, "%s is not supported by herald", key);
        enum herald_cfg_type t = herald_cfg_type(v);
        switch (f->kind) {
        case HERALD_FIELD_UINT:
            if ((t != HERALD_CFG_INT && t != HERALD_CFG_STRING) || herald_cfg_int(v, -1) < 0)
                return herald_cfg_errorf(v, err, "expected an unsigned integer");
            break;
        case HERALD_FIELD_BOOL:
            if (t != HERALD_CFG_BOOL)
                return herald_cfg_errorf(v, err, "expected true or false");
            break;
        case HERALD_FIELD_ENUM:
            if (t != HERALD_CFG_STRING || !enum_spelling(f, herald_cfg_str(v, "")))
                return herald_cfg_errorf(v, err, "expected one of the values of %s (%s)", key,
                                         f->help ? f->help : "see the man page");
            break;
        default:
            if (t != HERALD_CFG_STRING)
                return herald_cfg_errorf(v, err, "expected a string");
            break;
        }
    }
    return 0;
}

const char *typed_library_enum(const struct herald_cfg *n, const struct herald_message *schema, const char *field,
                               const char *dflt)
{
    const struct herald_field *f = field_named(schema, field);
    const char *v = herald_cfg_str(herald_cfg_get(n, field), NULL);
    const char *s = f && v ? enum_spelling(f, v) : NULL;
    return s ? s : dflt;
}

int typed_library_uint(const struct herald_cfg *n, const char *field, int64_t lo, int64_t hi, int64_t dflt,
                       int64_t *out, char **err)
{
    const struct herald_cfg *v = herald_cfg_get(n, field);
    *out = herald_cfg_int(v, dflt);
    if (*out < lo || *out > hi)
        return herald_cfg_errorf(v, err, "%s must be from %lld to %lld", field, (long long)lo, (long long)hi);
    return 0;
}

static const struct herald_field library_fields[] = {
    {.name = "name", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED,
     .help = "names the library in the stats"},
    {.name = "typed_config", .kind = HERALD_FIELD_TYPED, .flags = HERALD_F_REQUIRED,
     .help = "the library's config: envoy.extensions.compression.gzip's (the only library herald has)"},
    {.name = NULL},
};
const struct herald_message typed_library_schema = {
    "envoy.config.core.v3.TypedExtensionConfig", library_fields, NULL,
};
