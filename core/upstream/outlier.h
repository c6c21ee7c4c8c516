/* Outlier detection (cluster outlier_detection), Envoy's passive health
 * checking. Workers report each upstream result for a host: the response
 * status, or a local-origin event (connect failure, timeout, reset, connect
 * success). Reporting costs a few relaxed atomics on per-host counters, no
 * lock. A consecutive-error count reaching its threshold is posted to the main
 * thread, which ejects the host (HOST_FAILED_OUTLIER + cluster_health_changed)
 * within max_ejection_percent; every `interval` the main thread un-ejects
 * hosts whose time is up (base_ejection_time x ejections, capped at
 * max_ejection_time) and runs the success-rate and failure-percentage
 * detectors over the requests counted since the last sweep. */
#ifndef HERALD_CORE_UPSTREAM_OUTLIER_H
#define HERALD_CORE_UPSTREAM_OUTLIER_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>

struct herald_host;
struct cluster;

enum outlier_result {
    OUTLIER_CONNECT_FAILED = 0,    /* connect refused/failed, or reset before/while answering */
    OUTLIER_TIMEOUT,               /* connect timeout (or request timeout) */
    OUTLIER_CONNECT_SUCCESS,       /* connected; HTTP follows, whose status decides */
    OUTLIER_CONNECT_SUCCESS_FINAL, /* connected and that is the whole result (tcp_proxy) */
};

/* Main thread, after cluster_manager_init: a detector for each cluster with
 * outlier_detection, its interval timer on base. */
void outlier_init(struct event_base *base);
/* Main thread: stops the timers and frees the detectors (hosts keep their counters). */
void outlier_shutdown(void);

/* Any thread. No-ops for hosts of clusters without outlier_detection. */
void outlier_report_status(struct herald_host *h, int status);
void outlier_report_local(struct herald_host *h, enum outlier_result r);

/* /clusters: the host's external success rate at the last sweep (percent),
 * or -1 when it had too few requests to count. */
double outlier_host_success_rate(const struct herald_host *h);

/* Envoy's success-rate threshold over n rates (percent): mean - factor x
 * population standard deviation. Pure, for tests. */
double outlier_sr_threshold(const double *rates, size_t n, double stdev_factor, double *mean);

#endif
