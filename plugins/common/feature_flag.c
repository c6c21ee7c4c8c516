/* See feature_flag.h. */
#include <stdlib.h>
#include <string.h>

#include "feature_flag.h"

static const struct herald_field flag_fields[] = {
    {.name = "default_value", .kind = HERALD_FIELD_BOOL, .flags = HERALD_F_REQUIRED,
     .help = "the flag when the runtime does not set runtime_key"},
    {.name = "runtime_key", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED,
     .help = "a runtime key (true/false) that overrides default_value"},
    {.name = NULL},
};
const struct herald_message feature_flag_schema = {
    "envoy.config.core.v3.RuntimeFeatureFlag", flag_fields, NULL,
};

void feature_flag_parse(const struct herald_cfg *n, bool dflt, struct feature_flag *f)
{
    f->dflt = n ? herald_cfg_bool(herald_cfg_get(n, "default_value"), dflt) : dflt;
    f->key = NULL;
    const char *key = herald_cfg_str(herald_cfg_get(n, "runtime_key"), "");
    if (*key && !(f->key = strdup(key)))
        abort();
}

bool feature_flag_on(const struct feature_flag *f)
{
    return f->key ? herald_runtime_bool(f->key, f->dflt) : f->dflt;
}

void feature_flag_free(struct feature_flag *f)
{
    free(f->key);
    f->key = NULL;
}
