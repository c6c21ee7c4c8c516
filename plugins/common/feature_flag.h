/* Envoy's RuntimeFeatureFlag (envoy.config.core.v3.RuntimeFeatureFlag) for
 * the plugins whose configs hold one (compressor, decompressor): a boolean
 * default_value that the runtime key, when set, overrides per request. */
#ifndef HERALD_PLUGIN_COMMON_FEATURE_FLAG_H
#define HERALD_PLUGIN_COMMON_FEATURE_FLAG_H

#include <stdbool.h>

#include "herald/herald.h"

struct feature_flag {
    bool dflt;
    char *key;                         /* runtime_key; NULL: dflt alone */
};

extern const struct herald_message feature_flag_schema;

/* n may be NULL: then the flag is dflt with no key. */
void feature_flag_parse(const struct herald_cfg *n, bool dflt, struct feature_flag *f);
bool feature_flag_on(const struct feature_flag *f);
void feature_flag_free(struct feature_flag *f);

#endif
