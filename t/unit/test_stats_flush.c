/* stats_flush (the stats sinks' view of the store): counter deltas between
 * flushes across threads, used-only counters and gauges, negative gauges,
 * histogram buckets with their value and count, imported counts left out,
 * /reset_counters not disturbing the deltas. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stats.h"
#include "tap.h"

#define MAXSEEN 256

struct seen {
    char name[96];
    char kind;               /* 'c' 'g' 'h' */
    unsigned long long value, times;
};
static struct seen seen[MAXSEEN];
static int nseen;

static void add(char kind, const char *name, uint64_t value, uint64_t times)
{
    if (nseen < MAXSEEN) {
        snprintf(seen[nseen].name, sizeof(seen[nseen].name), "%s", name);
        seen[nseen].kind = kind;
        seen[nseen].value = value;
        seen[nseen++].times = times;
    }
}
static void on_counter(void *arg, const char *name, uint64_t d) { (void)arg; add('c', name, d, 0); }
static void on_gauge(void *arg, const char *name, uint64_t v) { (void)arg; add('g', name, v, 0); }
static void on_hist(void *arg, const char *name, uint64_t v, uint64_t t) { (void)arg; add('h', name, v, t); }
static const struct stats_flush_visitor visitor = { on_counter, on_gauge, on_hist };

static void flush(void)
{
    nseen = 0;
    stats_flush(&visitor, NULL);
}

/* The index of the n-th entry for name, or -1. */
static int find(const char *name, int n)
{
    for (int i = 0; i < nseen; i++)
        if (strcmp(seen[i].name, name) == 0 && n-- == 0)
            return i;
    return -1;
}

static long long value_of(const char *name)
{
    int i = find(name, 0);
    return i < 0 ? -1 : (long long)seen[i].value;
}

static struct herald_stat *c_rq, *c_never, *g_active, *g_never, *g_neg, *h_ms;

static void *worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++)
        herald_stat_inc(c_rq);
    herald_gauge_add(g_active, 2);
    herald_histogram_record(h_ms, 3);
    herald_histogram_record(h_ms, 3);
    herald_histogram_record(h_ms, 100);
    return NULL;
}

int main(void)
{
    stats_init();
    c_rq = herald_counter("http.in", "downstream_rq_total");
    c_never = herald_counter("http.in", "downstream_rq_5xx");
    g_active = herald_gauge("http.in", "downstream_rq_active");
    g_never = herald_gauge("http.in", "downstream_cx_active");
    g_neg = herald_gauge("http.in", "odd");
    h_ms = herald_histogram("http.in", "downstream_rq_time");

    flush();
    is_int(nseen, 0, "nothing used: nothing flushed");

    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);   /* the threads exit: their slots fold into the totals */
    herald_gauge_add(g_neg, -5);
    flush();
    is_int(value_of("http.in.downstream_rq_total"), 3000, "counter: all three threads' counts");
    is_int(value_of("http.in.downstream_rq_active"), 6, "gauge: its value");
    is_int(value_of("http.in.odd"), 0, "a negative gauge reads 0 (a statsd '-5' would mean a decrement)");
    ok(find("http.in.downstream_rq_5xx", 0) < 0, "a counter never used is not sent");
    ok(find("http.in.downstream_cx_active", 0) < 0, "a gauge never used is not sent");
    ok(find("http.in.downstream_rq_total", 0) < find("http.in.downstream_rq_active", 0) &&
       find("http.in.downstream_rq_active", 0) < find("http.in.downstream_rq_time", 0),
       "counters, then gauges, then histograms");
    int h3 = find("http.in.downstream_rq_time", 0), h100 = find("http.in.downstream_rq_time", 1);
    ok(h3 >= 0 && h100 >= 0 && find("http.in.downstream_rq_time", 2) < 0, "a histogram line per bucket");
    if (h3 >= 0 && h100 >= 0) {
        is_int(seen[h3].value, 3, "exact value below 8");
        is_int(seen[h3].times, 6, "recorded six times");
        ok(seen[h100].value >= 96 && seen[h100].value < 112, "100 is in [96,112): %llu", seen[h100].value);
        is_int(seen[h100].times, 3, "recorded three times");
    }

    flush();
    is_int(value_of("http.in.downstream_rq_total"), 0, "nothing new: a used counter is sent with 0 (Envoy)");
    is_int(value_of("http.in.downstream_rq_active"), 6, "the gauge again");
    ok(find("http.in.downstream_rq_time", 0) < 0, "no new histogram values: no histogram line");

    herald_stat_add(c_rq, 7);
    herald_histogram_record(h_ms, 3);
    stats_reset_counters();
    flush();
    is_int(value_of("http.in.downstream_rq_total"), 7, "delta since the last flush, whatever /reset_counters did");
    h3 = find("http.in.downstream_rq_time", 0);
    ok(h3 >= 0 && seen[h3].times == 1 && find("http.in.downstream_rq_time", 1) < 0,
       "only the new histogram value");

    stats_import_counter("http.in.downstream_rq_total", 500);
    herald_stat_add(c_rq, 2);
    flush();
    is_int(value_of("http.in.downstream_rq_total"), 2, "counts imported from an old process are not resent");
    is_int(stats_lookup("http.in.downstream_rq_total", NULL), 500 + 2, "but /stats has them (since its reset)");

    herald_histogram_record(h_ms, (uint64_t)1 << 50);
    flush();
    h3 = find("http.in.downstream_rq_time", 0);
    ok(h3 >= 0 && seen[h3].value == (uint64_t)1 << 50, "the open-ended last bucket sends the max seen");

    char *tags = NULL, *bare = stats_tag_extract("cluster.web.upstream_rq_503", &tags);
    is_str(bare, "cluster.upstream_rq", "tag-extracted name");
    is_str(tags, "envoy.response_code:503,envoy.cluster_name:web", "DogStatsD tags");
    free(bare);
    free(tags);
    bare = stats_tag_extract("server.uptime", &tags);
    is_str(bare, "server.uptime", "no tags: the name");
    is_str(tags, "", "no tags: empty");
    free(bare);
    free(tags);
    return done_testing();
}
