/* herald SDK: reading Envoy's layered runtime (bootstrap layered_runtime:
 * static, disk and admin layers), for filters whose config names runtime
 * keys, as Envoy's RuntimeFractionalPercent and RuntimeUInt32 do. (1.6) */
#ifndef HERALD_RUNTIME_H
#define HERALD_RUNTIME_H

#include <stdbool.h>
#include <stdint.h>

#include "herald/version.h"

/* Envoy's featureEnabled(key, default FractionalPercent): the key's runtime
 * value (a percentage, over 100 always on, or a FractionalPercent) or else
 * numerator / denominator (100, 10000 or 1000000), against a fresh random
 * draw. key NULL or "": the default alone. Any thread. */
HERALD_EXPORT bool herald_runtime_feature_enabled(const char *key, uint32_t numerator, uint32_t denominator);
/* The key's value as an unsigned integer, or dflt when it is absent or not
 * one (Envoy's RuntimeUInt32 with its default_value). Any thread. */
HERALD_EXPORT uint64_t herald_runtime_uint(const char *key, uint64_t dflt);
/* The key's value as a boolean (true/false), or dflt: Envoy's
 * RuntimeFeatureFlag with its default_value. Any thread. */
HERALD_EXPORT bool herald_runtime_bool(const char *key, bool dflt);

#endif
