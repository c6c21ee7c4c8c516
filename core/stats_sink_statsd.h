/* Envoy's statsd (envoy.stat_sinks.statsd) and DogStatsD
 * (envoy.stat_sinks.dog_statsd) sinks: the wire format and the UDP or TCP
 * transport. Internal to stats_sink.c, main thread only. */
#ifndef HERALD_CORE_STATS_SINK_STATSD_H
#define HERALD_CORE_STATS_SINK_STATSD_H

#include <event2/event.h>
#include <stdint.h>

#include "config/bootstrap.h"
#include "config/diag.h"

struct statsd_sink;

/* tc: a typed_config that schema_check() accepted (schema_statsd_sink or,
 * with dog, schema_dog_statsd_sink). base NULL: only checks. NULL on error. */
struct statsd_sink *statsd_sink_new(const struct herald_cfg *tc, bool dog, const struct bootstrap *b,
                                    struct event_base *base, struct cfg_diag *d);
void statsd_sink_free(struct statsd_sink *s);

/* One flush: begin, then a line per stat, then end (which sends). */
void statsd_sink_begin(struct statsd_sink *s);
void statsd_sink_counter(struct statsd_sink *s, const char *name, uint64_t delta);
void statsd_sink_gauge(struct statsd_sink *s, const char *name, uint64_t value);
void statsd_sink_histogram(struct statsd_sink *s, const char *name, uint64_t value, uint64_t times);
void statsd_sink_end(struct statsd_sink *s);

#endif
