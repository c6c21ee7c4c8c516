/* Envoy's FractionalPercent and RuntimeFractionalPercent for the plugins
 * whose configs hold them (local_ratelimit, cors, fault): one schema, one
 * parser, one featureEnabled() over the SDK's runtime. Compiled into each
 * plugin that uses it (plugins keep no shared library of their own). */
#ifndef HERALD_PLUGIN_COMMON_FRACTION_H
#define HERALD_PLUGIN_COMMON_FRACTION_H

#include <stdbool.h>
#include <stdint.h>

#include "herald/herald.h"

struct fraction {
    bool set;
    char *key;                         /* runtime_key; NULL: the default alone */
    uint32_t numerator, denominator;   /* denominator 100, 10000 or 1000000 */
};

extern const struct herald_message fraction_percent_schema;   /* envoy.type.v3.FractionalPercent */
extern const struct herald_message fraction_runtime_schema;   /* ...core.v3.RuntimeFractionalPercent */

/* A FractionalPercent node into f (no key); f untouched when n is NULL. */
void fraction_parse_percent(const struct herald_cfg *n, struct fraction *f);
/* A RuntimeFractionalPercent node into f; f untouched when n is NULL. */
void fraction_parse(const struct herald_cfg *n, struct fraction *f);
/* Envoy's featureEnabled with a fresh draw; dflt when f was never set. */
bool fraction_on(const struct fraction *f, bool dflt);
void fraction_free(struct fraction *f);

#endif
