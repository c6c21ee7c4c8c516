/* Stats store. SDK handles (herald_counter/gauge/histogram) are entries in a
 * registry; every thread adds into its own slot array (no atomics beyond
 * relaxed loads/stores), and readers merge all threads' slots. */
#ifndef HERALD_CORE_STATS_H
#define HERALD_CORE_STATS_H

#include <event2/buffer.h>
#include <stdbool.h>
#include <stdint.h>

#include "herald/stats.h"

enum stat_kind { STAT_COUNTER = 0, STAT_GAUGE, STAT_HISTOGRAM };

void stats_init(void);
/* Called by a thread before it exits: folds its slots into the totals. */
void stats_thread_exit(void);

/* Rendering for the admin endpoints. filter: a POSIX extended regex or NULL. */
enum stats_format { STATS_TEXT = 0, STATS_JSON, STATS_PROMETHEUS };
int stats_render(struct evbuffer *out, enum stats_format fmt, const char *filter, bool used_only, char **err);
void stats_reset_counters(void);
/* Reload hand-over (reload.c): what every counter counted since the last
 * export (the first: all of it) as "name\tcount\n", and the other side
 * adding such a count to its own counter of that name. */
void stats_export_counters(struct evbuffer *out);
void stats_import_counter(const char *name, uint64_t v);
/* For tests and --mode validate output. */
int64_t stats_lookup(const char *name, bool *found);

#endif
