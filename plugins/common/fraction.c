/* See fraction.h. */
#include <stdlib.h>
#include <string.h>

#include "fraction.h"

static const char *const denominators[] = {"HUNDRED", "TEN_THOUSAND", "MILLION", NULL};

static const struct herald_field percent_fields[] = {
    {.name = "numerator", .kind = HERALD_FIELD_UINT},
    {.name = "denominator", .kind = HERALD_FIELD_ENUM, .enum_values = denominators,
     .help = "HUNDRED (default), TEN_THOUSAND or MILLION"},
    {.name = NULL},
};
const struct herald_message fraction_percent_schema = {
    "envoy.type.v3.FractionalPercent", percent_fields, NULL,
};

static const struct herald_field runtime_fields[] = {
    {.name = "default_value", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REQUIRED,
     .message = &fraction_percent_schema},
    {.name = "runtime_key", .kind = HERALD_FIELD_STRING, .help = "overrides default_value when set in the runtime"},
    {.name = NULL},
};
const struct herald_message fraction_runtime_schema = {
    "envoy.config.core.v3.RuntimeFractionalPercent", runtime_fields, NULL,
};

void fraction_parse_percent(const struct herald_cfg *n, struct fraction *f)
{
    if (!n)
        return;
    const char *den = herald_cfg_str(herald_cfg_get(n, "denominator"), "HUNDRED");
    f->set = true;
    f->numerator = (uint32_t)herald_cfg_int(herald_cfg_get(n, "numerator"), 0);
    f->denominator = !strcmp(den, "MILLION") ? 1000000 : !strcmp(den, "TEN_THOUSAND") ? 10000 : 100;
}

void fraction_parse(const struct herald_cfg *n, struct fraction *f)
{
    if (!n)
        return;
    fraction_parse_percent(herald_cfg_get(n, "default_value"), f);
    f->set = true;
    const char *key = herald_cfg_str(herald_cfg_get(n, "runtime_key"), "");
    if (*key && !(f->key = strdup(key)))
        abort();
}

bool fraction_on(const struct fraction *f, bool dflt)
{
    return f->set ? herald_runtime_feature_enabled(f->key, f->numerator, f->denominator) : dflt;
}

void fraction_free(struct fraction *f)
{
    free(f->key);
    f->key = NULL;
}
