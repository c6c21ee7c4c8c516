/* Checks a tree node against a declarative message table (herald/config.h)
 * and normalises it in place: single values where a list is expected become
 * lists of one, enum values take the table's spelling, camelCase keys
 * (protobuf JSON names) become snake_case, numeric strings in number fields
 * become numbers. "@type" beside a message's fields is skipped; a TYPED
 * field's content is left to its owner. Errors and warnings go to the diag. */
#ifndef HERALD_CORE_CONFIG_SCHEMA_H
#define HERALD_CORE_CONFIG_SCHEMA_H

#include "config/diag.h"
#include "herald/config.h"

/* Returns 0 when the node passed (warnings may have been added), -1 otherwise. */
int schema_check(struct herald_cfg *node, const struct herald_message *msg, struct cfg_diag *d);

/* Levenshtein-based: the closest field name of msg within distance 2 (or a
 * third of the name's length), or NULL. */
const char *schema_did_you_mean(const struct herald_message *msg, const char *name);

/* Parses a protobuf JSON duration ("1s", "0.25s", "-1s" refused). 0 / -1. */
int schema_parse_duration_ms(const char *s, uint64_t *ms);

/* The v3 name of a deprecated v2-era extension name ("envoy.router" ->
 * "envoy.filters.http.router"), or NULL. For the plugin loader's errors. */
const char *schema_v2_filter_hint(const char *name);

/* The table of the Envoy bootstrap (envoy.config.bootstrap.v3.Bootstrap) and
 * the messages under it that the core itself reads. */
extern const struct herald_message schema_bootstrap;
/* envoy.type.v3.Percent {value: 0 to 100}. */
extern const struct herald_message schema_percent;
/* envoy.type.matcher.v3.RegexMatcher (config/matcher_schema.c, with
 * herald_string_matcher_schema of the SDK) */
extern const struct herald_message schema_regex_matcher;

/* Cluster.load_balancing_policy's extensions herald has: the extension name,
 * the lb_policy it amounts to, its typed_config's message. */
struct lb_policy_ext {
    const char *name;
    const char *lb_policy;
    const struct herald_message *msg;
};
extern const struct lb_policy_ext schema_lb_policies[];
/* The one a policies[].typed_extension_config names (@type, else name), or NULL. */
const struct lb_policy_ext *schema_lb_policy_find(const struct herald_cfg *typed_extension_config);

/* A stats sink's typed_config (stats_sink.c). */
extern const struct herald_message schema_statsd_sink, schema_dog_statsd_sink;

#endif
