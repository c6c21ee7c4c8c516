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
/* Stats sinks (stats_sink.c), on the main thread: one pass over every stat
 * under the registry lock, in creation order, counters first, then gauges,
 * then histograms, as Envoy's flush does. Counters that were ever used get
 * their growth since the previous stats_flush (0 included, like Envoy);
 * gauges that were ever used their value (negative sums read as 0); every
 * histogram bucket that gained values since the previous flush its
 * representative value and how many values it gained. Independent of
 * /reset_counters; counts imported from an old process after a reload are
 * left out (that process's sinks sent them). */
struct stats_flush_visitor {
    void (*counter)(void *arg, const char *name, uint64_t delta);
    void (*gauge)(void *arg, const char *name, uint64_t value);
    void (*histogram)(void *arg, const char *name, uint64_t value, uint64_t times);
};
void stats_flush(const struct stats_flush_visitor *v, void *arg);
/* Envoy's default tag extraction (the one /stats/prometheus applies): returns
 * the tag-extracted name ("cluster.upstream_rq_total") and sets *dog_tags to
 * its tags as DogStatsD writes them ("envoy.cluster_name:web", "" for none).
 * Both malloc'd. */
char *stats_tag_extract(const char *name, char **dog_tags);
/* For tests and --mode validate output. */
int64_t stats_lookup(const char *name, bool *found);

#endif
