/* Outlier detection's success-rate math (Envoy's example) and the circuit
 * breakers' counts and gauges, also under concurrent workers. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "stats.h"
#include "tap.h"
#include "upstream/circuit_breaker.h"
#include "upstream/outlier.h"

#define NTHREADS 4
#define NLOOPS 20000

static struct circuit_breakers *shared;
static pthread_barrier_t barrier;

static void *churn(void *arg)
{
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < NLOOPS; i++) {
        if (cb_acquire(shared, CB_DEFAULT, CB_RQ))
            cb_release(shared, CB_DEFAULT, CB_RQ);
        cb_take(shared, CB_HIGH, CB_PENDING);
        cb_release(shared, CB_HIGH, CB_PENDING);
    }
    stats_thread_exit();
    return NULL;
}

static int64_t gauge(const char *name)
{
    return (int64_t)herald_stat_value(herald_gauge("cluster.c.circuit_breakers", name));
}

int main(void)
{
    stats_init();

    /* Envoy's documented example: {50, 100, 100, 100, 100}, factor 1.9:
     * mean 90, stdev 20, threshold 90 - 1.9 x 20 = 52 */
    double rates[] = { 50, 100, 100, 100, 100 };
    double mean = 0;
    double thr = outlier_sr_threshold(rates, 5, 1.9, &mean);
    ok(fabs(mean - 90) < 1e-9, "mean 90 (got %f)", mean);
    ok(fabs(thr - 52) < 1e-9, "threshold 52 (got %f)", thr);
    ok(rates[0] < thr && !(rates[1] < thr), "only the 50 %% host is below it");
    double same[] = { 99, 99, 99, 99, 99 };
    thr = outlier_sr_threshold(same, 5, 1.9, &mean);
    ok(fabs(thr - 99) < 1e-9, "no spread: threshold is the mean, nobody below it");
    thr = outlier_sr_threshold(rates, 0, 1.9, &mean);
    ok(thr == 0 && mean == 0, "no hosts: 0");

    /* circuit breakers */
    struct cluster_cfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.name = "c";
    cfg.thresholds[0] = (struct thresholds_cfg){ 2, 1, 2, 0 };
    cfg.thresholds[1] = (struct thresholds_cfg){ 1024, 1024, 1024, 3 };
    cfg.track_remaining[0] = true;
    struct circuit_breakers *cb = cb_new(&cfg);
    is_int(gauge("default.rq_open"), 0, "rq_open starts at 0");
    is_int(gauge("default.rq_retry_open"), 1, "max_retries 0: rq_retry_open from the start");
    is_int(gauge("default.remaining_rq"), 2, "remaining_rq = max_requests");
    ok(cb_acquire(cb, CB_DEFAULT, CB_RQ), "first request");
    is_int(gauge("default.remaining_rq"), 1, "remaining_rq 1");
    ok(cb_acquire(cb, CB_DEFAULT, CB_RQ), "second request");
    is_int(gauge("default.rq_open"), 1, "at max: rq_open 1");
    ok(!cb_acquire(cb, CB_DEFAULT, CB_RQ), "third overflows");
    ok(!cb_can_create(cb, CB_DEFAULT, CB_RQ), "can_create false at max");
    ok(cb_can_create(cb, CB_HIGH, CB_RQ), "HIGH has its own count");
    is_int(gauge("default.remaining_rq"), 0, "remaining_rq 0");
    cb_take(cb, CB_DEFAULT, CB_RQ); /* past max, as a bound request after the check */
    is_int(gauge("default.rq_open"), 1, "still open past max");
    cb_release(cb, CB_DEFAULT, CB_RQ);
    is_int(gauge("default.rq_open"), 1, "back at max: open");
    cb_release(cb, CB_DEFAULT, CB_RQ);
    is_int(gauge("default.rq_open"), 0, "below max: closed");
    is_int(gauge("default.remaining_rq"), 1, "remaining_rq 1 again");
    cb_release(cb, CB_DEFAULT, CB_RQ);
    is_int(gauge("default.remaining_rq"), 2, "remaining_rq back to max");
    ok(!cb_acquire(cb, CB_DEFAULT, CB_RETRY), "max_retries 0: no retry");
    is_int(gauge("default.rq_retry_open"), 1, "rq_retry_open stays 1");

    /* workers racing at the boundary keep the counts and gauges exact */
    shared = cb;
    pthread_t th[NTHREADS];
    pthread_barrier_init(&barrier, NULL, NTHREADS);
    for (int i = 0; i < NTHREADS; i++)
        pthread_create(&th[i], NULL, churn, NULL);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    is_int(atomic_load(&cb->level[0].count[CB_RQ]), 0, "DEFAULT rq count back to 0");
    is_int(atomic_load(&cb->level[1].count[CB_PENDING]), 0, "HIGH pending count back to 0");
    is_int(gauge("default.rq_open"), 0, "rq_open 0 after the race");
    is_int(gauge("default.remaining_rq"), 2, "remaining_rq 2 after the race");
    is_int(gauge("high.rq_pending_open"), 0, "HIGH rq_pending_open 0 after the race");
    cb_free(cb);
    return done_testing();
}
