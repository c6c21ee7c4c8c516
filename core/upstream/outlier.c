/* Outlier detection: see outlier.h. Follows Envoy's DetectorImpl: the
 * consecutive detectors fire exactly when a count reaches its threshold
 * (the main thread then resets it), an ejection counts against
 * max_ejection_percent of the cluster's hosts, enforcing_* is the chance
 * that a detected outlier is really ejected, and the interval sweep
 * un-ejects and runs the success-rate and failure-percentage detectors over
 * the requests counted since the previous sweep. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "herald/stats.h"
#include "log.h"
#include "upstream/cluster.h"
#include "upstream/outlier.h"

#define COMP "outlier"

enum etype { E_5XX = 0, E_GW, E_LO, E_SR, E_FP, E_N };
static const char *const etype_names[E_N] = {
    "consecutive_5xx", "consecutive_gateway_failure", "consecutive_local_origin_failure", "success_rate",
    "failure_percentage",
};

/* h->outlier, made on first report (by whichever thread) and freed with the host. */
struct host_od {
    atomic_uint c5xx, cgw, clo;         /* consecutive counts */
    atomic_uint sr_total, sr_success;   /* external-origin requests since the last sweep */
    /* main thread only */
    uint32_t backoff;                   /* ejection-time multiplier */
    uint64_t last_eject_ms, last_uneject_ms, jitter_ms;
    bool ejected_by_us;
    double sr_last;                     /* percent at the last sweep, or -1 */
};

struct detector {
    struct cluster *cl;
    const struct outlier_cfg *cfg;
    struct event *timer;
    unsigned active;                    /* ejections_active */
    struct herald_stat *ejections_active, *ejections_total, *ejections_overflow, *ejections_enforced_total;
    struct herald_stat *enforced[E_N], *detected[E_N];
};

struct post {
    struct herald_host *h;              /* ref held */
    enum etype type;
    struct post *next;
};

static struct detector *dets;
static size_t ndets;
static struct event *post_ev;
static pthread_mutex_t post_lock = PTHREAD_MUTEX_INITIALIZER;
static struct post *post_head;
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next_random(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* ------------------------------------------------------------ any thread */

static struct host_od *od_of(struct herald_host *h)
{
    struct host_od *o = __atomic_load_n((struct host_od **)&h->outlier, __ATOMIC_ACQUIRE);
    if (o || !h->cluster || !h->cluster->cfg->outlier.enabled)
        return o;
    struct host_od *n = xcalloc(1, sizeof(*n));
    atomic_init(&n->c5xx, 0);
    atomic_init(&n->cgw, 0);
    atomic_init(&n->clo, 0);
    atomic_init(&n->sr_total, 0);
    atomic_init(&n->sr_success, 0);
    n->sr_last = -1;
    void *expected = NULL;
    if (__atomic_compare_exchange_n(&h->outlier, &expected, n, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return n;
    free(n);
    return expected;
}

static void post(struct herald_host *h, enum etype type)
{
    struct post *p = xcalloc(1, sizeof(*p));
    host_get(h);
    p->h = h;
    p->type = type;
    pthread_mutex_lock(&post_lock);
    struct event *ev = post_ev;
    if (ev) {
        p->next = post_head;
        post_head = p;
        event_active(ev, EV_READ, 0); /* under the lock: outlier_shutdown may free it */
    }
    pthread_mutex_unlock(&post_lock);
    if (!ev) {
        host_put(h);
        free(p);
    }
}

/* Stores 0 only when needed, so that a healthy host's counters stay shared-clean. */
static inline void reset(atomic_uint *c)
{
    if (atomic_load_explicit(c, memory_order_relaxed))
        atomic_store_explicit(c, 0, memory_order_relaxed);
}

static void put_status(struct herald_host *h, struct host_od *o, int status)
{
    const struct outlier_cfg *c = &h->cluster->cfg->outlier;
    atomic_fetch_add_explicit(&o->sr_total, 1, memory_order_relaxed);
    if (status >= 500 && status <= 599) {
        if (status >= 502 && status <= 504) {
            unsigned n = atomic_fetch_add_explicit(&o->cgw, 1, memory_order_relaxed) + 1;
            if (n == c->consecutive_gateway_failure)
                post(h, E_GW);
        } else {
            reset(&o->cgw);
        }
        if (atomic_fetch_add_explicit(&o->c5xx, 1, memory_order_relaxed) + 1 == c->consecutive_5xx)
            post(h, E_5XX);
        return;
    }
    atomic_fetch_add_explicit(&o->sr_success, 1, memory_order_relaxed);
    reset(&o->c5xx);
    reset(&o->cgw);
}

void outlier_report_status(struct herald_host *h, int status)
{
    if (status < 200)
        return; /* informational: the final answer decides */
    struct host_od *o = od_of(h);
    if (o)
        put_status(h, o, status);
}

void outlier_report_local(struct herald_host *h, enum outlier_result r)
{
    struct host_od *o = od_of(h);
    if (!o)
        return;
    const struct outlier_cfg *c = &h->cluster->cfg->outlier;
    if (!c->split_external_local_origin_errors) {
        /* Envoy maps local-origin results onto HTTP codes; a bare connect success
         * (HTTP follows) does not count */
        switch (r) {
        case OUTLIER_CONNECT_FAILED: put_status(h, o, 503); break;
        case OUTLIER_TIMEOUT: put_status(h, o, 504); break;
        case OUTLIER_CONNECT_SUCCESS_FINAL: put_status(h, o, 200); break;
        case OUTLIER_CONNECT_SUCCESS: break;
        }
        return;
    }
    switch (r) {
    case OUTLIER_CONNECT_FAILED:
    case OUTLIER_TIMEOUT:
        if (atomic_fetch_add_explicit(&o->clo, 1, memory_order_relaxed) + 1 ==
            c->consecutive_local_origin_failure)
            post(h, E_LO);
        break;
    case OUTLIER_CONNECT_SUCCESS:
    case OUTLIER_CONNECT_SUCCESS_FINAL:
        reset(&o->clo);
        break;
    }
}

double outlier_host_success_rate(const struct herald_host *h)
{
    const struct host_od *o = __atomic_load_n((struct host_od *const *)&h->outlier, __ATOMIC_ACQUIRE);
    return o ? o->sr_last : -1;
}

double outlier_sr_threshold(const double *rates, size_t n, double stdev_factor, double *mean)
{
    if (!n) {
        *mean = 0;
        return 0;
    }
    double sum = 0, var = 0;
    for (size_t i = 0; i < n; i++)
        sum += rates[i];
    double m = sum / (double)n;
    for (size_t i = 0; i < n; i++)
        var += (rates[i] - m) * (rates[i] - m);
    var /= (double)n;
    *mean = m;
    return m - stdev_factor * sqrt(var);
}

/* ------------------------------------------------------------ main thread */

static struct detector *detector_of(const struct cluster *cl)
{
    for (size_t i = 0; i < ndets; i++)
        if (dets[i].cl == cl)
            return &dets[i];
    return NULL;
}

static bool in_current(const struct cluster *cl, const struct herald_host *h)
{
    const struct host_set *hs = cl->current;
    for (size_t i = 0; hs && i < hs->nhosts; i++)
        if (hs->hosts[i] == h)
            return true;
    return false;
}

static uint32_t enforcing(const struct outlier_cfg *c, enum etype t)
{
    switch (t) {
    case E_5XX: return c->enforcing_consecutive_5xx;
    case E_GW: return c->enforcing_consecutive_gateway_failure;
    case E_LO: return c->enforcing_consecutive_local_origin_failure;
    case E_SR: return c->enforcing_success_rate;
    case E_FP: return c->enforcing_failure_percentage;
    case E_N: break;
    }
    return 0;
}

static void eject(struct detector *d, struct herald_host *h, struct host_od *o, enum etype t, uint64_t now)
{
    const struct outlier_cfg *c = d->cfg;
    size_t n = d->cl->current ? d->cl->current->nhosts : 0;
    double pct = n ? 100.0 * (double)(d->active + 1) / (double)n : 100.0;
    if (!(pct <= (double)c->max_ejection_percent || (c->always_eject_one_host && d->active == 0))) {
        herald_stat_inc(d->ejections_overflow);
        log_debug(COMP, "cluster '%s': %s not ejected (%s): max_ejection_percent %u reached",
                  d->cl->cfg->name, h->addr_str, etype_names[t], c->max_ejection_percent);
        return;
    }
    if (t == E_5XX || t == E_SR)
        herald_stat_inc(d->ejections_total); /* deprecated, as Envoy still keeps it */
    if (next_random() % 100 >= enforcing(c, t))
        return;
    d->active++;
    herald_gauge_add(d->ejections_active, 1);
    herald_stat_inc(d->ejections_enforced_total);
    herald_stat_inc(d->enforced[t]);
    atomic_fetch_or_explicit(&h->health, HOST_FAILED_OUTLIER, memory_order_relaxed);
    o->ejected_by_us = true;
    /* the multiplier grows while base x multiplier is below max_ejection_time */
    if (o->backoff == 0 || c->base_ejection_time_ms * o->backoff < c->max_ejection_time_ms)
        o->backoff++;
    o->last_eject_ms = now;
    o->jitter_ms = c->max_ejection_time_jitter_ms ? next_random() % (c->max_ejection_time_jitter_ms + 1) : 0;
    log_info(COMP, "cluster '%s': ejected %s (%s) for %llu ms", d->cl->cfg->name, h->addr_str, etype_names[t],
             (unsigned long long)(c->base_ejection_time_ms * o->backoff < c->max_ejection_time_ms
                                  ? c->base_ejection_time_ms * o->backoff : c->max_ejection_time_ms));
    cluster_health_changed(d->cl);
}

static void on_posts(evutil_socket_t fd, short what, void *arg)
{
    pthread_mutex_lock(&post_lock);
    struct post *list = post_head;
    post_head = NULL;
    pthread_mutex_unlock(&post_lock);
    /* oldest first */
    struct post *rev = NULL;
    while (list) {
        struct post *next = list->next;
        list->next = rev;
        rev = list;
        list = next;
    }
    uint64_t now = mono_ms();
    for (struct post *p = rev, *next; p; p = next) {
        next = p->next;
        struct herald_host *h = p->h;
        struct detector *d = detector_of(h->cluster);
        struct host_od *o = h->outlier;
        /* the host may have left the cluster, or be ejected already */
        if (d && o && in_current(d->cl, h) &&
            !(atomic_load_explicit(&h->health, memory_order_relaxed) & HOST_FAILED_OUTLIER)) {
            herald_stat_inc(d->detected[p->type]);
            atomic_store_explicit(p->type == E_5XX ? &o->c5xx : p->type == E_GW ? &o->cgw : &o->clo, 0,
                                  memory_order_relaxed);
            eject(d, h, o, p->type, now);
        }
        host_put(h);
        free(p);
    }
}

struct sr_sample {
    struct herald_host *h;
    struct host_od *o;
    uint64_t total;
    double rate;
};

static void sweep(struct detector *d, uint64_t now)
{
    const struct outlier_cfg *c = d->cfg;
    const struct host_set *hs = d->cl->current;
    size_t n = hs ? hs->nhosts : 0;
    struct sr_sample *s = n ? xcalloc(n, sizeof(*s)) : NULL;
    size_t ns = 0;
    bool changed = false;
    for (size_t i = 0; i < n; i++) {
        struct herald_host *h = hs->hosts[i];
        struct host_od *o = od_of(h);
        if (!o)
            continue;
        bool ejected = atomic_load_explicit(&h->health, memory_order_relaxed) & HOST_FAILED_OUTLIER;
        if (ejected && o->ejected_by_us) {
            uint64_t t = c->base_ejection_time_ms * o->backoff;
            if (t > c->max_ejection_time_ms)
                t = c->max_ejection_time_ms;
            if (now - o->last_eject_ms >= t + o->jitter_ms) {
                atomic_fetch_and_explicit(&h->health, ~HOST_FAILED_OUTLIER, memory_order_relaxed);
                o->ejected_by_us = false;
                d->active--;
                herald_gauge_add(d->ejections_active, -1);
                /* so that a few new errors do not eject it again at once */
                atomic_store_explicit(&o->c5xx, 0, memory_order_relaxed);
                atomic_store_explicit(&o->cgw, 0, memory_order_relaxed);
                atomic_store_explicit(&o->clo, 0, memory_order_relaxed);
                o->last_uneject_ms = now;
                changed = true;
                ejected = false;
                log_info(COMP, "cluster '%s': %s back from ejection", d->cl->cfg->name, h->addr_str);
            }
        } else if (!ejected && o->backoff && o->last_uneject_ms &&
                   now - o->last_uneject_ms >= c->base_ejection_time_ms) {
            /* healthy for a while: the next ejection is shorter again */
            o->backoff--;
            o->last_uneject_ms = now;
        }
        uint64_t total = atomic_exchange_explicit(&o->sr_total, 0, memory_order_relaxed);
        uint64_t ok = atomic_exchange_explicit(&o->sr_success, 0, memory_order_relaxed);
        if (ok > total)
            ok = total;
        o->sr_last = -1;
        if (ejected || !total)
            continue;
        double rate = 100.0 * (double)ok / (double)total;
        if (total >= c->success_rate_request_volume)
            o->sr_last = rate;
        s[ns++] = (struct sr_sample){ h, o, total, rate };
    }
    /* an ejected host that left the cluster (re-resolution) no longer counts */
    unsigned active = 0;
    for (size_t i = 0; i < n; i++) {
        const struct host_od *o = hs->hosts[i]->outlier;
        active += o && o->ejected_by_us;
    }
    /* this publishes a new host set and may free hs: the hosts live on in the new one */
    if (changed)
        cluster_health_changed(d->cl);
    hs = NULL;
    if (active != d->active) {
        herald_gauge_add(d->ejections_active, (int64_t)active - (int64_t)d->active);
        d->active = active;
    }

    /* success rate: hosts with enough requests, when enough hosts have them */
    double *rates = ns ? xcalloc(ns, sizeof(*rates)) : NULL;
    size_t nr = 0;
    for (size_t i = 0; i < ns; i++)
        if (s[i].total >= c->success_rate_request_volume)
            rates[nr++] = s[i].rate;
    if (nr > 0 && nr >= c->success_rate_minimum_hosts) {
        double mean;
        double thr = outlier_sr_threshold(rates, nr, c->success_rate_stdev_factor / 1000.0, &mean);
        for (size_t i = 0; i < ns; i++)
            if (s[i].total >= c->success_rate_request_volume && s[i].rate < thr &&
                !(atomic_load_explicit(&s[i].h->health, memory_order_relaxed) & HOST_FAILED_OUTLIER)) {
                herald_stat_inc(d->detected[E_SR]);
                eject(d, s[i].h, s[i].o, E_SR, now);
            }
    }
    /* failure percentage */
    size_t nf = 0;
    for (size_t i = 0; i < ns; i++)
        nf += s[i].total >= c->failure_percentage_request_volume;
    if (nf > 0 && nf >= c->failure_percentage_minimum_hosts)
        for (size_t i = 0; i < ns; i++)
            if (s[i].total >= c->failure_percentage_request_volume &&
                100.0 - s[i].rate >= (double)c->failure_percentage_threshold &&
                !(atomic_load_explicit(&s[i].h->health, memory_order_relaxed) & HOST_FAILED_OUTLIER)) {
                herald_stat_inc(d->detected[E_FP]);
                eject(d, s[i].h, s[i].o, E_FP, now);
            }
    free(rates);
    free(s);
}

static void arm(struct detector *d)
{
    uint64_t ms = d->cfg->interval_ms ? d->cfg->interval_ms : 10000;
    struct timeval tv = { .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000 };
    evtimer_add(d->timer, &tv);
}

static void on_interval(evutil_socket_t fd, short what, void *arg)
{
    struct detector *d = arg;
    sweep(d, mono_ms());
    arm(d);
}

void outlier_init(struct event_base *base)
{
    size_t n = cluster_manager_count();
    dets = n ? xcalloc(n, sizeof(*dets)) : NULL;
    ndets = 0;
    rng ^= mono_ms() * 0x2545f4914f6cdd1dull;
    if (!rng)
        rng = 1;
    for (size_t i = 0; i < n; i++) {
        struct cluster *cl = cluster_manager_at(i);
        if (!cl->cfg->outlier.enabled)
            continue;
        struct detector *d = &dets[ndets++];
        d->cl = cl;
        d->cfg = &cl->cfg->outlier;
        char *p = xasprintf("cluster.%s.outlier_detection", cl->cfg->name);
        d->ejections_active = herald_gauge(p, "ejections_active");
        d->ejections_total = herald_counter(p, "ejections_total");
        d->ejections_overflow = herald_counter(p, "ejections_overflow");
        d->ejections_enforced_total = herald_counter(p, "ejections_enforced_total");
        for (int t = 0; t < E_N; t++) {
            char name[96];
            snprintf(name, sizeof(name), "ejections_enforced_%s", etype_names[t]);
            d->enforced[t] = herald_counter(p, name);
            snprintf(name, sizeof(name), "ejections_detected_%s", etype_names[t]);
            d->detected[t] = herald_counter(p, name);
        }
        free(p);
        d->timer = evtimer_new(base, on_interval, d);
        arm(d);
    }
    pthread_mutex_lock(&post_lock);
    post_ev = ndets ? event_new(base, -1, 0, on_posts, NULL) : NULL;
    pthread_mutex_unlock(&post_lock);
}

void outlier_shutdown(void)
{
    pthread_mutex_lock(&post_lock);
    struct event *ev = post_ev;
    struct post *list = post_head;
    post_ev = NULL;
    post_head = NULL;
    pthread_mutex_unlock(&post_lock);
    while (list) {
        struct post *next = list->next;
        host_put(list->h);
        free(list);
        list = next;
    }
    if (ev)
        event_free(ev);
    for (size_t i = 0; i < ndets; i++)
        event_free(dets[i].timer);
    free(dets);
    dets = NULL;
    ndets = 0;
}
