/* herald SDK: stats. Names are Envoy's dotted names, created on the main
 * thread (in config_create) and updated from any thread without locks: each
 * thread counts into its own slots and readers (admin, sinks) add them up. */
#ifndef HERALD_STATS_H
#define HERALD_STATS_H

#include <stdint.h>

#include "herald/version.h"

#ifdef __cplusplus
extern "C" {
#endif

struct herald_stat; /* a counter, gauge or histogram handle; lives as long as the process */

/* Finds or creates a stat named prefix + "." + name (prefix may be NULL or ""). */
HERALD_EXPORT struct herald_stat *herald_counter(const char *prefix, const char *name);
HERALD_EXPORT struct herald_stat *herald_gauge(const char *prefix, const char *name);
HERALD_EXPORT struct herald_stat *herald_histogram(const char *prefix, const char *name);

HERALD_EXPORT void herald_stat_add(struct herald_stat *s, uint64_t n);      /* counter */
HERALD_EXPORT void herald_gauge_add(struct herald_stat *s, int64_t delta);  /* gauge */
HERALD_EXPORT void herald_histogram_record(struct herald_stat *s, uint64_t value);
HERALD_EXPORT uint64_t herald_stat_value(const struct herald_stat *s); /* merged; main thread */

static inline void herald_stat_inc(struct herald_stat *s) { herald_stat_add(s, 1); }

#ifdef __cplusplus
}
#endif
#endif
