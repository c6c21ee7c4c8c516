/* Stats store: per-thread slots merged exactly, handles, rendering. */
#include <event2/buffer.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "stats.h"
#include "tap.h"

#define NTHREADS 4
#define NINC 100000

static struct herald_stat *c_total, *g_active, *g_updown, *h_lat;
static pthread_barrier_t barrier;

static void *adder(void *arg)
{
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < NINC; i++) {
        herald_stat_inc(c_total);
        herald_gauge_add(g_active, 1);
    }
    /* an active count incremented and decremented on the same thread... */
    for (int i = 0; i < 1000; i++)
        herald_gauge_add(g_updown, 1);
    pthread_barrier_wait(&barrier); /* ...while the main thread reads in between */
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < 1000; i++)
        herald_gauge_add(g_updown, -1);
    if (arg)
        stats_thread_exit();
    return NULL;
}

/* Not calling stats_thread_exit: the thread-exit destructor must fold the values too. */
static void *plus_one(void *arg)
{
    herald_gauge_add(g_updown, 1);
    herald_stat_add(arg, 7);
    return NULL;
}

static void *minus_one(void *arg)
{
    herald_gauge_add(g_updown, -1);
    stats_thread_exit();
    return NULL;
}

static char *render(enum stats_format fmt, const char *filter, bool used_only)
{
    struct evbuffer *b = evbuffer_new();
    char *err = NULL;
    if (stats_render(b, fmt, filter, used_only, &err) != 0) {
        printf("# render failed: %s\n", err ? err : "?");
        free(err);
        evbuffer_free(b);
        return strdup("");
    }
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    evbuffer_free(b);
    return s;
}

static int64_t lookup(const char *name)
{
    bool found = false;
    int64_t v = stats_lookup(name, &found);
    return found ? v : -999;
}

/* The cumulative value of quantile `q` ("P50") on the text line of `name`. */
static double text_quantile(const char *text, const char *name, const char *q)
{
    char key[256];
    snprintf(key, sizeof(key), "\n%s:", name);
    const char *line = strstr(text, key);
    if (!line)
        return NAN;
    const char *eol = strchr(line + 1, '\n');
    snprintf(key, sizeof(key), " %s(", q);
    const char *p = strstr(line, key);
    if (!p || (eol && p > eol))
        return NAN;
    p = strchr(p, ',');
    return p ? strtod(p + 1, NULL) : NAN;
}

int main(void)
{
    stats_init();

    /* handles */
    c_total = herald_counter("cluster.backend", "upstream_cx_total");
    ok(c_total != NULL, "counter created");
    ok(herald_counter("cluster.backend", "upstream_cx_total") == c_total, "same name, same handle");
    ok(herald_counter("cluster", "backend.upstream_cx_total") == c_total,
       "different prefix split, same handle");
    ok(herald_counter(NULL, "cluster.backend.upstream_cx_total") == c_total, "NULL prefix, same handle");
    ok(herald_counter("cluster.backend.", "upstream_cx_total") == c_total, "prefix with a trailing dot");
    g_active = herald_gauge("cluster.backend", "upstream_cx_active");
    g_updown = herald_gauge("http.ingress", "downstream_rq_active");
    ok(g_active != c_total && g_updown != g_active, "distinct handles");

    /* 4 threads x 100,000 */
    pthread_t th[NTHREADS];
    pthread_barrier_init(&barrier, NULL, NTHREADS + 1);
    for (int i = 0; i < NTHREADS; i++)
        pthread_create(&th[i], NULL, adder, (i % 2) ? (void *)1 : NULL);
    pthread_barrier_wait(&barrier);
    pthread_barrier_wait(&barrier);
    is_int(herald_stat_value(g_updown), NTHREADS * 1000, "gauge while threads hold it up");
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    is_int(herald_stat_value(c_total), NTHREADS * NINC, "counter merged exactly over 4 threads");
    is_int((int64_t)herald_stat_value(g_active), NTHREADS * NINC, "gauge merged exactly over 4 threads");
    is_int((int64_t)herald_stat_value(g_updown), 0, "gauge +1/-1 per thread returns to 0");
    is_int(lookup("cluster.backend.upstream_cx_total"), NTHREADS * NINC, "values survive thread exit");

    /* +1 on one thread, -1 on another */
    struct herald_stat *c_other = herald_counter("tcp.db", "downstream_cx_total");
    pthread_t a, b;
    pthread_create(&a, NULL, plus_one, c_other);
    pthread_join(a, NULL);
    is_int((int64_t)herald_stat_value(g_updown), 1, "+1 from an exited thread (no explicit exit call)");
    pthread_create(&b, NULL, minus_one, NULL);
    pthread_join(b, NULL);
    is_int((int64_t)herald_stat_value(g_updown), 0, "-1 from another thread: back to 0");
    is_int(lookup("tcp.db.downstream_cx_total"), 7, "counter from an exited thread");

    /* main thread too */
    herald_stat_add(c_total, 5);
    is_int(lookup("cluster.backend.upstream_cx_total"), NTHREADS * NINC + 5, "main thread adds");
    is_int(lookup("no.such.stat"), -999, "lookup of an unknown name");
    herald_gauge_add(herald_gauge("server", "live"), -3);
    is_int(lookup("server.live"), -3, "negative gauge");

    /* an untouched stat */
    herald_counter("cluster.backend", "upstream_cx_connect_fail");
    struct herald_stat *rq2xx = herald_counter("cluster.backend", "upstream_rq_2xx");
    herald_stat_add(rq2xx, 3);

    /* histogram 1..1000 */
    h_lat = herald_histogram("cluster.backend", "upstream_cx_connect_ms");
    for (uint64_t v = 1; v <= 1000; v++)
        herald_histogram_record(h_lat, v);
    herald_histogram("cluster.backend", "upstream_cx_length_ms"); /* empty */
    is_int(herald_stat_value(h_lat), 1000, "histogram count");

    /* text */
    char *t = render(STATS_TEXT, NULL, false);
    like(t, "cluster.backend.upstream_cx_total: 400005\n", "text counter");
    like(t, "cluster.backend.upstream_cx_active: 400000\n", "text gauge");
    like(t, "server.live: -3\n", "text negative gauge");
    like(t, "cluster.backend.upstream_cx_connect_fail: 0\n", "text untouched counter");
    like(t, "cluster.backend.upstream_cx_length_ms: No recorded values\n", "text empty histogram");
    {
        /* sorted: counters and gauges by name, then histograms */
        const char *names[] = {"cluster.backend.upstream_cx_active:",
                               "cluster.backend.upstream_cx_connect_fail:",
                               "cluster.backend.upstream_cx_total:", "cluster.backend.upstream_rq_2xx:",
                               "http.ingress.downstream_rq_active:", "server.live:",
                               "tcp.db.downstream_cx_total:", "cluster.backend.upstream_cx_connect_ms:",
                               "cluster.backend.upstream_cx_length_ms:"};
        const char *prev = t;
        bool sorted = true;
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            const char *p = strstr(t, names[i]);
            if (!p || p < prev) {
                printf("# out of order or missing: %s\n", names[i]);
                sorted = false;
            } else {
                prev = p;
            }
        }
        ok(sorted, "text output sorted by name, histograms last");
    }
    {
        char *tt = malloc(strlen(t) + 2);
        tt[0] = '\n';
        strcpy(tt + 1, t);
        const char *qs[] = {"P0", "P25", "P50", "P75", "P90", "P95", "P99", "P99.5", "P99.9", "P100"};
        const double want[] = {1, 250, 500, 750, 900, 950, 990, 995, 999, 1000};
        for (size_t i = 0; i < 10; i++) {
            double got = text_quantile(tt, "cluster.backend.upstream_cx_connect_ms", qs[i]);
            ok(!isnan(got) && fabs(got - want[i]) <= want[i] * 0.25 + 1, "histogram %s = %g (want ~%g)",
               qs[i], got, want[i]);
        }
        is_int((long long)text_quantile(tt, "cluster.backend.upstream_cx_connect_ms", "P0"), 1,
               "P0 is the min");
        is_int((long long)text_quantile(tt, "cluster.backend.upstream_cx_connect_ms", "P100"), 1000,
               "P100 is the max");
        free(tt);
    }
    free(t);

    /* used only */
    t = render(STATS_TEXT, NULL, true);
    ok(strstr(t, "upstream_cx_connect_fail") == NULL, "usedonly hides an untouched counter");
    ok(strstr(t, "upstream_cx_length_ms") == NULL, "usedonly hides an empty histogram");
    like(t, "cluster.backend.upstream_cx_total: 400005\n", "usedonly keeps a used counter");
    like(t, "http.ingress.downstream_rq_active: 0\n", "usedonly keeps a gauge that went back to 0");
    like(t, "cluster.backend.upstream_cx_connect_ms: P0(", "usedonly keeps a histogram with values");
    free(t);

    /* filter */
    t = render(STATS_TEXT, "^cluster\\.backend\\.upstream_cx_(total|active)$", false);
    like(t, "cluster.backend.upstream_cx_total: ", "filter keeps a match");
    like(t, "cluster.backend.upstream_cx_active: ", "filter keeps the other match");
    ok(strstr(t, "tcp.db") == NULL && strstr(t, "connect_fail") == NULL && strstr(t, "connect_ms") == NULL,
       "filter drops the rest");
    free(t);
    {
        struct evbuffer *eb = evbuffer_new();
        char *err = NULL;
        ok(stats_render(eb, STATS_TEXT, "(unclosed", false, &err) == -1 && err, "bad regex is an error");
        free(err);
        evbuffer_free(eb);
    }

    /* JSON */
    t = render(STATS_JSON, NULL, false);
    json_error_t jerr;
    json_t *j = json_loads(t, 0, &jerr);
    ok(j != NULL, "JSON parses");
    json_t *arr = json_object_get(j, "stats");
    ok(json_is_array(arr), "JSON has a stats array");
    bool found_total = false, found_live = false, found_hist = false;
    size_t i;
    json_t *it;
    json_array_foreach(arr, i, it) {
        const char *name = json_string_value(json_object_get(it, "name"));
        json_int_t v = json_integer_value(json_object_get(it, "value"));
        if (name && strcmp(name, "cluster.backend.upstream_cx_total") == 0 && v == 400005)
            found_total = true;
        if (name && strcmp(name, "server.live") == 0 && v == -3)
            found_live = true;
        json_t *h = json_object_get(it, "histograms");
        if (h) {
            json_t *cq = json_object_get(h, "computed_quantiles");
            size_t k;
            json_t *q;
            json_array_foreach(cq, k, q) {
                const char *hn = json_string_value(json_object_get(q, "name"));
                json_t *vals = json_object_get(q, "values");
                if (hn && strcmp(hn, "cluster.backend.upstream_cx_connect_ms") == 0 &&
                    json_array_size(vals) == 10) {
                    double p50 = json_number_value(json_object_get(json_array_get(vals, 2), "cumulative"));
                    found_hist = fabs(p50 - 500) < 125;
                }
            }
            ok(json_array_size(json_object_get(h, "supported_quantiles")) == 10, "JSON supported_quantiles");
        }
    }
    ok(found_total, "JSON has the counter value");
    ok(found_live, "JSON has the negative gauge");
    ok(found_hist, "JSON has the histogram P50");
    json_decref(j);
    free(t);

    /* Prometheus */
    t = render(STATS_PROMETHEUS, NULL, false);
    like(t, "# TYPE envoy_cluster_upstream_cx_total counter\n", "prometheus TYPE line");
    like(t, "envoy_cluster_upstream_cx_total{envoy_cluster_name=\"backend\"} 400005\n",
         "prometheus cluster tag");
    like(t, "# TYPE envoy_cluster_upstream_cx_active gauge\n", "prometheus gauge TYPE");
    like(t, "envoy_tcp_downstream_cx_total{envoy_tcp_prefix=\"db\"} 7\n", "prometheus tcp tag");
    like(t, "envoy_http_downstream_rq_active{envoy_http_conn_manager_prefix=\"ingress\"} 0\n",
         "prometheus http tag");
    like(t,
         "envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"2\",envoy_cluster_name=\"backend\"} 3\n",
         "prometheus response code class");
    like(t, "envoy_server_live{} -3\n", "prometheus untagged name");
    like(t, "# TYPE envoy_cluster_upstream_cx_connect_ms histogram\n", "prometheus histogram TYPE");
    like(t, "envoy_cluster_upstream_cx_connect_ms_bucket{envoy_cluster_name=\"backend\",le=\"1000\"} 1000\n",
         "prometheus bucket le=1000");
    like(t, "envoy_cluster_upstream_cx_connect_ms_bucket{envoy_cluster_name=\"backend\",le=\"5\"} 5\n",
         "prometheus bucket le=5");
    like(t, "envoy_cluster_upstream_cx_connect_ms_bucket{envoy_cluster_name=\"backend\",le=\"+Inf\"} 1000\n",
         "prometheus bucket +Inf");
    like(t, "envoy_cluster_upstream_cx_connect_ms_sum{envoy_cluster_name=\"backend\"} 500500\n",
         "prometheus sum");
    like(t, "envoy_cluster_upstream_cx_connect_ms_count{envoy_cluster_name=\"backend\"} 1000\n",
         "prometheus count");
    {
        /* one TYPE line per metric even with several series */
        herald_stat_add(herald_counter("cluster.other", "upstream_cx_total"), 1);
        free(t);
        t = render(STATS_PROMETHEUS, NULL, false);
        const char *p = strstr(t, "# TYPE envoy_cluster_upstream_cx_total counter");
        ok(p && !strstr(p + 1, "# TYPE envoy_cluster_upstream_cx_total counter"), "one TYPE line per metric");
        like(t, "envoy_cluster_upstream_cx_total{envoy_cluster_name=\"other\"} 1\n", "second series");
    }
    free(t);
    herald_stat_add(herald_counter("listener.0.0.0.0_10000", "downstream_cx_total"), 2);
    herald_stat_add(herald_counter("listener.admin", "downstream_cx_total"), 1);
    herald_stat_add(herald_counter("listener.127.0.0.1_80.http.ingress", "downstream_rq_503"), 1);
    herald_stat_add(herald_counter("mysql.db", "queries_parsed"), 4);
    herald_stat_add(herald_counter("mongo.m.cmd.insert", "total"), 1);
    t = render(STATS_PROMETHEUS, NULL, true);
    like(t, "envoy_listener_downstream_cx_total{envoy_listener_address=\"0.0.0.0_10000\"} 2\n",
         "listener tag");
    like(t, "envoy_listener_admin_downstream_cx_total{} 1\n", "listener.admin has no address tag");
    like(t, "envoy_listener_http_downstream_rq{envoy_response_code=\"503\",envoy_listener_address="
            "\"127.0.0.1_80\",envoy_http_conn_manager_prefix=\"ingress\"} 1\n",
         "listener + http prefix + response code");
    like(t, "envoy_mysql_queries_parsed{envoy_mysql_prefix=\"db\"} 4\n", "mysql tag");
    like(t, "envoy_mongo_cmd_total{envoy_mongo_prefix=\"m\",envoy_mongo_cmd=\"insert\"} 1\n", "mongo tags");
    ok(strstr(t, "connect_fail") == NULL, "prometheus usedonly");
    free(t);

    /* reset */
    stats_reset_counters();
    is_int(lookup("cluster.backend.upstream_cx_total"), 0, "reset_counters zeroes counters");
    is_int(lookup("cluster.backend.upstream_cx_active"), NTHREADS * NINC, "reset_counters keeps gauges");
    herald_stat_inc(c_total);
    is_int(lookup("cluster.backend.upstream_cx_total"), 1, "counts again after a reset");

    stats_thread_exit();
    is_int(lookup("cluster.backend.upstream_cx_total"), 1, "main thread's values survive its own exit call");
    herald_stat_inc(c_total);
    is_int(lookup("cluster.backend.upstream_cx_total"), 2, "and it can count again afterwards");
    return done_testing();
}
