/* The bootstrap's stats_sinks: every stats_flush_interval (default 5 s) the
 * main thread merges the workers' stats once (stats_flush) and hands the
 * result to each sink. Herald has Envoy's statsd and DogStatsD sinks
 * (stats_sink_statsd.c). Workers are not involved: they only count. */
#ifndef HERALD_CORE_STATS_SINK_H
#define HERALD_CORE_STATS_SINK_H

#include <event2/event.h>

#include "config/bootstrap.h"
#include "config/diag.h"

/* Checks stats_sinks (errors in d) and, when base is not NULL (not under
 * --mode validate), opens the sinks' sockets. After cluster_manager_init:
 * a TCP statsd sink sends to one of a cluster's hosts. 0 / -1. */
int stats_sinks_init(const struct bootstrap *b, struct event_base *base, struct cfg_diag *d);
/* Starts the flush timer (nothing to do without sinks). */
void stats_sinks_start(struct event_base *base);
/* One flush now (the timer's, or an admin request's with stats_flush_on_admin). */
void stats_sinks_flush(void);
/* Whether stats_flush_on_admin asks the admin's stats requests to flush. */
bool stats_sinks_flush_on_admin(void);
/* Main thread, after the loop returned and the workers stopped: a last
 * flush (unless stats_flush_on_admin), then closes the sinks. */
void stats_sinks_shutdown(void);

#endif
