/* Active health checking (Envoy's core.v3.HealthCheck): one checker per
 * cluster with health_checks, one session per host, all on the main thread's
 * event loop. A session's result sets or clears the host's
 * HOST_FAILED_ACTIVE_HC / HOST_PENDING_ACTIVE_HC bits and, when they change,
 * calls cluster_health_changed() so that the workers get a new snapshot.
 * Hosts that DNS adds or removes get or lose their session through the
 * cluster manager's membership callback. */
#ifndef HERALD_UPSTREAM_HEALTH_CHECK_H
#define HERALD_UPSTREAM_HEALTH_CHECK_H

#include <event2/event.h>

#include "config/bootstrap.h"
#include "config/diag.h"

/* The request_headers_to_add of every HTTP health check, parsed once to put
 * a bad one (an unknown %OPERATOR%) in d at start-up and in validate mode. */
void health_checks_validate(const struct bootstrap *boot, struct cfg_diag *d);

/* Main thread, after cluster_manager_start(). 0 = OK. */
int health_check_start(struct event_base *base);
/* Main thread, before cluster_manager_shutdown(): stops every check and
 * drops the sessions' host references. */
void health_check_shutdown(void);

#endif
