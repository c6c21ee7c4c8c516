/* The stats store. A registry (name -> handle, under one mutex: creation is
 * rare) and per-thread slot tables: every thread writes only its own slots,
 * with relaxed loads and stores (no read-modify-write, no lock), and readers
 * add up all tables under the mutex. A table is an array of chunk pointers
 * filled on demand, so growing never moves memory a reader may be reading. */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <regex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "log.h"
#include "stats.h"

#define CHUNK_BITS 10
#define CHUNK_SLOTS (1u << CHUNK_BITS)
#define CHUNK_MASK (CHUNK_SLOTS - 1)
#define MAX_CHUNKS 8192u /* 8M slots */

/* Histogram buckets: 0..3 exactly, then 4 linear sub-buckets per power of
 * two up to 2^40; larger values land in the last bucket. Worst-case relative
 * error of a bucket is 25%; percentiles interpolate inside the bucket. */
#define HIST_SUB_BITS 2
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_MAX_EXP 40
#define HIST_BUCKETS (HIST_SUB + (HIST_MAX_EXP - HIST_SUB_BITS + 1) * HIST_SUB)
/* A histogram's slots (never split across chunks): count, sum, max, ~min
 * (so that 0 means "none" and both merge with max), then the buckets. */
enum { H_COUNT = 0, H_SUM, H_MAX, H_NMIN, H_BUCKETS, HIST_SLOTS = H_BUCKETS + HIST_BUCKETS };

struct herald_stat {
    uint32_t id;
    uint32_t slot;
    enum stat_kind kind;
    atomic_bool used;          /* ever changed (?usedonly) */
    uint64_t reset_base;       /* counter total at the last reset_counters (under lock) */
    uint64_t export_base;      /* value at the last stats_export_counters (under lock) */
    uint64_t sink_base;        /* counter: raw total at the last stats_flush (under lock) */
    uint64_t *sink_buckets;    /* histogram: bucket counts at the last stats_flush, or NULL */
    char *name;
    struct herald_stat *hnext; /* hash chain */
};

struct slot_table {
    _Atomic(_Atomic uint64_t *) chunks[MAX_CHUNKS];
    struct slot_table *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_key_t table_key;

/* Under lock. */
static struct herald_stat **all;
static size_t nall, all_cap;
static struct herald_stat **htab;
static size_t hcap;
static uint32_t next_slot;
static struct slot_table *tables;   /* live threads */
static struct slot_table retired;   /* folded values of threads that exited */

static __thread struct slot_table *my_table;

static void table_destructor(void *arg);

static void init_once(void)
{
    pthread_key_create(&table_key, table_destructor);
}

void stats_init(void)
{
    pthread_once(&once, init_once);
}

/* ------------------------------------------------------------------ hot path */

static _Atomic uint64_t *slot_ptr_slow(uint32_t slot);

static inline _Atomic uint64_t *slot_ptr(uint32_t slot)
{
    struct slot_table *t = my_table;
    if (__builtin_expect(t != NULL, 1)) {
        _Atomic uint64_t *c = atomic_load_explicit(&t->chunks[slot >> CHUNK_BITS], memory_order_relaxed);
        if (__builtin_expect(c != NULL, 1))
            return c + (slot & CHUNK_MASK);
    }
    return slot_ptr_slow(slot);
}

/* Only the owning thread writes a slot, so load + store is enough. */
static inline void slot_add(_Atomic uint64_t *p, uint64_t n)
{
    atomic_store_explicit(p, atomic_load_explicit(p, memory_order_relaxed) + n, memory_order_relaxed);
}

static inline void slot_max(_Atomic uint64_t *p, uint64_t v)
{
    if (v > atomic_load_explicit(p, memory_order_relaxed))
        atomic_store_explicit(p, v, memory_order_relaxed);
}

/* Reading first keeps the shared line clean after the first change. */
static inline void mark_used(struct herald_stat *s)
{
    if (__builtin_expect(!atomic_load_explicit(&s->used, memory_order_relaxed), 0))
        atomic_store_explicit(&s->used, true, memory_order_relaxed);
}

void herald_stat_add(struct herald_stat *s, uint64_t n)
{
    slot_add(slot_ptr(s->slot), n);
    mark_used(s);
}

void herald_gauge_add(struct herald_stat *s, int64_t delta)
{
    /* two's complement: per-thread deltas sum to the right signed value */
    slot_add(slot_ptr(s->slot), (uint64_t)delta);
    mark_used(s);
}

static inline unsigned hist_bucket(uint64_t v)
{
    if (v < HIST_SUB)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    if (e > HIST_MAX_EXP)
        return HIST_BUCKETS - 1;
    unsigned sub = (unsigned)((v >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1));
    return HIST_SUB + (e - HIST_SUB_BITS) * HIST_SUB + sub;
}

void herald_histogram_record(struct herald_stat *s, uint64_t value)
{
    if (s->kind != STAT_HISTOGRAM) {
        herald_stat_add(s, 1);
        return;
    }
    _Atomic uint64_t *h = slot_ptr(s->slot);
    slot_add(&h[H_BUCKETS + hist_bucket(value)], 1);
    slot_add(&h[H_SUM], value);
    slot_add(&h[H_COUNT], 1);
    slot_max(&h[H_MAX], value);
    slot_max(&h[H_NMIN], ~value);
    mark_used(s);
}

/* ------------------------------------------------------------------ thread tables */

static _Atomic uint64_t *chunk_get(struct slot_table *t, uint32_t ci)
{
    _Atomic uint64_t *c = atomic_load_explicit(&t->chunks[ci], memory_order_acquire);
    if (!c) {
        c = xcalloc(CHUNK_SLOTS, sizeof(*c));
        /* release: a reader that sees the pointer sees zeroed memory */
        atomic_store_explicit(&t->chunks[ci], c, memory_order_release);
    }
    return c;
}

static _Atomic uint64_t *slot_ptr_slow(uint32_t slot)
{
    if (!my_table) {
        stats_init();
        struct slot_table *t = xcalloc(1, sizeof(*t));
        pthread_mutex_lock(&lock);
        t->next = tables;
        tables = t;
        pthread_mutex_unlock(&lock);
        my_table = t;
        /* folds the values in if the thread exits without stats_thread_exit() */
        pthread_setspecific(table_key, t);
    }
    return chunk_get(my_table, slot >> CHUNK_BITS) + (slot & CHUNK_MASK);
}

/* Under lock. NULL when the table never touched that chunk. */
static _Atomic uint64_t *table_slots(struct slot_table *t, uint32_t slot)
{
    _Atomic uint64_t *c = atomic_load_explicit(&t->chunks[slot >> CHUNK_BITS], memory_order_acquire);
    return c ? c + (slot & CHUNK_MASK) : NULL;
}

static uint64_t rd(_Atomic uint64_t *p)
{
    return atomic_load_explicit(p, memory_order_relaxed);
}

/* Under lock: moves t's values into the retired totals and frees t. */
static void fold_table(struct slot_table *t)
{
    for (struct slot_table **pp = &tables; *pp; pp = &(*pp)->next) {
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    }
    for (size_t i = 0; i < nall; i++) {
        struct herald_stat *s = all[i];
        _Atomic uint64_t *src = table_slots(t, s->slot);
        if (!src)
            continue;
        _Atomic uint64_t *dst = chunk_get(&retired, s->slot >> CHUNK_BITS) + (s->slot & CHUNK_MASK);
        if (s->kind != STAT_HISTOGRAM) {
            slot_add(dst, rd(src));
            continue;
        }
        for (unsigned k = 0; k < HIST_SLOTS; k++) {
            if (k == H_MAX || k == H_NMIN)
                slot_max(&dst[k], rd(&src[k]));
            else
                slot_add(&dst[k], rd(&src[k]));
        }
    }
    for (uint32_t ci = 0; ci < MAX_CHUNKS; ci++)
        free((void *)atomic_load_explicit(&t->chunks[ci], memory_order_relaxed));
    free(t);
}

static void table_destructor(void *arg)
{
    struct slot_table *t = arg;
    pthread_mutex_lock(&lock);
    fold_table(t);
    pthread_mutex_unlock(&lock);
    my_table = NULL;
}

void stats_thread_exit(void)
{
    struct slot_table *t = my_table;
    if (!t)
        return;
    stats_init();
    pthread_setspecific(table_key, NULL);
    table_destructor(t);
}

/* ------------------------------------------------------------------ registry */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Under lock. */
static struct herald_stat *find_locked(const char *name)
{
    if (!hcap)
        return NULL;
    for (struct herald_stat *s = htab[hash_str(name) & (hcap - 1)]; s; s = s->hnext)
        if (strcmp(s->name, name) == 0)
            return s;
    return NULL;
}

static void hash_insert(struct herald_stat *s)
{
    if (nall * 4 >= hcap * 3) {
        size_t ncap = hcap ? hcap * 2 : 256;
        struct herald_stat **n = xcalloc(ncap, sizeof(*n));
        for (size_t i = 0; i < nall; i++) {
            struct herald_stat *o = all[i];
            if (o == s)
                continue;
            size_t b = hash_str(o->name) & (ncap - 1);
            o->hnext = n[b];
            n[b] = o;
        }
        free(htab);
        htab = n;
        hcap = ncap;
    }
    size_t b = hash_str(s->name) & (hcap - 1);
    s->hnext = htab[b];
    htab[b] = s;
}

static const char *kind_name(enum stat_kind k)
{
    return k == STAT_COUNTER ? "counter" : k == STAT_GAUGE ? "gauge" : "histogram";
}

static struct herald_stat *stat_get(const char *prefix, const char *name, enum stat_kind kind)
{
    char *full;
    if (!name || !*name)
        full = xstrdup(prefix ? prefix : "");
    else if (!prefix || !*prefix)
        full = xstrdup(name);
    else if (prefix[strlen(prefix) - 1] == '.')
        full = xasprintf("%s%s", prefix, name);
    else
        full = xasprintf("%s.%s", prefix, name);

    stats_init();
    pthread_mutex_lock(&lock);
    struct herald_stat *s = find_locked(full);
    if (s) {
        pthread_mutex_unlock(&lock);
        if (s->kind != kind)
            log_warn("stats", "stat '%s' is a %s; asked for a %s", full, kind_name(s->kind), kind_name(kind));
        free(full);
        return s;
    }
    uint32_t need = kind == STAT_HISTOGRAM ? HIST_SLOTS : 1;
    if ((next_slot & CHUNK_MASK) + need > CHUNK_SLOTS)
        next_slot = (next_slot | CHUNK_MASK) + 1;
    if ((uint64_t)next_slot + need > (uint64_t)MAX_CHUNKS * CHUNK_SLOTS) {
        pthread_mutex_unlock(&lock);
        log_error("stats", "out of stat slots creating '%s'", full);
        abort();
    }
    s = xcalloc(1, sizeof(*s));
    s->id = (uint32_t)nall;
    s->slot = next_slot;
    next_slot += need;
    s->kind = kind;
    s->name = full;
    atomic_init(&s->used, false);
    *VEC_PUSH(all, nall, all_cap) = s;
    hash_insert(s);
    pthread_mutex_unlock(&lock);
    return s;
}

struct herald_stat *herald_counter(const char *prefix, const char *name)
{
    return stat_get(prefix, name, STAT_COUNTER);
}

struct herald_stat *herald_gauge(const char *prefix, const char *name)
{
    return stat_get(prefix, name, STAT_GAUGE);
}

struct herald_stat *herald_histogram(const char *prefix, const char *name)
{
    return stat_get(prefix, name, STAT_HISTOGRAM);
}

/* ------------------------------------------------------------------ merging (under lock) */

static uint64_t raw_sum(uint32_t slot)
{
    uint64_t v = 0;
    _Atomic uint64_t *p = table_slots(&retired, slot);
    if (p)
        v += rd(p);
    for (struct slot_table *t = tables; t; t = t->next)
        if ((p = table_slots(t, slot)))
            v += rd(p);
    return v;
}

/* Counter: since the last reset; gauge: the signed sum as uint64; histogram: its count. */
static uint64_t merged_value(const struct herald_stat *s)
{
    switch (s->kind) {
    case STAT_COUNTER: return raw_sum(s->slot) - s->reset_base;
    case STAT_GAUGE: return raw_sum(s->slot);
    case STAT_HISTOGRAM: return raw_sum(s->slot + H_COUNT);
    }
    return 0;
}

struct hist_snap {
    uint64_t count, sum, max, min;
    uint64_t b[HIST_BUCKETS];
};

static void hist_merge_one(struct hist_snap *h, _Atomic uint64_t *p)
{
    if (!p)
        return;
    h->sum += rd(&p[H_SUM]);
    uint64_t mx = rd(&p[H_MAX]), nmin = rd(&p[H_NMIN]);
    if (mx > h->max)
        h->max = mx;
    if (nmin && ~nmin < h->min)
        h->min = ~nmin;
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        h->b[i] += rd(&p[H_BUCKETS + i]);
}

static void hist_merge(const struct herald_stat *s, struct hist_snap *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
    hist_merge_one(h, table_slots(&retired, s->slot));
    for (struct slot_table *t = tables; t; t = t->next)
        hist_merge_one(h, table_slots(t, s->slot));
    /* the count from the buckets themselves, so percentiles stay consistent */
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        h->count += h->b[i];
    if (!h->count)
        h->min = h->max = 0;
    else if (h->min > h->max)
        h->min = h->max;
}

/* [lo, hi) of bucket i; the last one is open-ended (up to the max seen). */
static void bucket_bounds(unsigned i, const struct hist_snap *h, double *lo, double *hi)
{
    if (i < HIST_SUB) {
        *lo = i;
        *hi = i + 1;
        return;
    }
    unsigned e = (i - HIST_SUB) / HIST_SUB + HIST_SUB_BITS, sub = (i - HIST_SUB) % HIST_SUB;
    double width = ldexp(1.0, (int)(e - HIST_SUB_BITS));
    *lo = ldexp(1.0, (int)e) + sub * width;
    *hi = *lo + width;
    if (i == HIST_BUCKETS - 1 && (double)h->max + 1 > *hi)
        *hi = (double)h->max + 1;
    /* nothing below the min or above the max: narrows the edge buckets */
    if (*lo < (double)h->min)
        *lo = (double)h->min;
    if (*hi > (double)h->max + 1)
        *hi = (double)h->max + 1;
}

static const double quantiles[] = {0, 0.25, 0.5, 0.75, 0.90, 0.95, 0.99, 0.995, 0.999, 1};
static const char *const quantile_names[] = {"P0", "P25", "P50", "P75", "P90", "P95", "P99", "P99.5",
                                             "P99.9", "P100"};
#define NQUANTILES ARRAY_SIZE(quantiles)

static double hist_quantile(const struct hist_snap *h, double q)
{
    if (!h->count)
        return NAN;
    if (q <= 0)
        return (double)h->min;
    if (q >= 1)
        return (double)h->max;
    double rank = q * (double)h->count, cum = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        if (!h->b[i])
            continue;
        double c = (double)h->b[i];
        if (cum + c >= rank) {
            double lo, hi;
            bucket_bounds(i, h, &lo, &hi);
            double v = lo + (hi - lo) * ((rank - cum) / c);
            if (v < (double)h->min)
                v = (double)h->min;
            if (v > (double)h->max)
                v = (double)h->max;
            return v;
        }
        cum += c;
    }
    return (double)h->max;
}

/* Values in the histogram <= x, interpolating inside the bucket that holds x
 * (values are integers, so a bucket [lo,hi) holds hi-lo possible values). */
static double hist_count_le(const struct hist_snap *h, double x)
{
    double n = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        if (!h->b[i])
            continue;
        double lo, hi;
        bucket_bounds(i, h, &lo, &hi);
        if (hi - 1 <= x)
            n += (double)h->b[i];
        else if (lo <= x)
            n += (double)h->b[i] * (floor(x) - lo + 1) / (hi - lo);
    }
    return n;
}

/* ------------------------------------------------------------------ public reads */

uint64_t herald_stat_value(const struct herald_stat *s)
{
    pthread_mutex_lock(&lock);
    uint64_t v = merged_value(s);
    pthread_mutex_unlock(&lock);
    return v;
}

int64_t stats_lookup(const char *name, bool *found)
{
    stats_init();
    pthread_mutex_lock(&lock);
    struct herald_stat *s = find_locked(name);
    int64_t v = s ? (int64_t)merged_value(s) : 0;
    pthread_mutex_unlock(&lock);
    if (found)
        *found = s != NULL;
    return v;
}

void stats_export_counters(struct evbuffer *out)
{
    stats_init();
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < nall; i++) {
        struct herald_stat *s = all[i];
        if (s->kind != STAT_COUNTER || strpbrk(s->name, "\t\n"))
            continue;
        uint64_t v = merged_value(s), since = v > s->export_base ? v - s->export_base : 0;
        s->export_base = v;
        if (since)
            evbuffer_add_printf(out, "%s\t%llu\n", s->name, (unsigned long long)since);
    }
    pthread_mutex_unlock(&lock);
}

void stats_import_counter(const char *name, uint64_t v)
{
    struct herald_stat *s = stat_get(NULL, name, STAT_COUNTER);
    if (s->kind != STAT_COUNTER || !v)
        return;
    herald_stat_add(s, v);
    /* the old process's sinks report what it counted: not these again */
    pthread_mutex_lock(&lock);
    s->sink_base += v;
    pthread_mutex_unlock(&lock);
}

void stats_reset_counters(void)
{
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < nall; i++)
        if (all[i]->kind == STAT_COUNTER)
            all[i]->reset_base = raw_sum(all[i]->slot);
    pthread_mutex_unlock(&lock);
}

/* ------------------------------------------------------------------ sink flush */

/* The middle of bucket i, as an integer: exact below 8, within 12.5% above. */
static uint64_t bucket_value(unsigned i)
{
    if (i < HIST_SUB)
        return i;
    unsigned e = (i - HIST_SUB) / HIST_SUB + HIST_SUB_BITS, sub = (i - HIST_SUB) % HIST_SUB;
    uint64_t width = 1ull << (e - HIST_SUB_BITS);
    uint64_t lo = (1ull << e) + sub * width;
    return lo + (width - 1) / 2;
}

static void flush_histogram(struct herald_stat *s, const struct stats_flush_visitor *v, void *arg)
{
    struct hist_snap h;
    hist_merge(s, &h);
    if (!h.count)
        return;
    if (!s->sink_buckets)
        s->sink_buckets = xcalloc(HIST_BUCKETS, sizeof(*s->sink_buckets));
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        uint64_t gained = h.b[i] - s->sink_buckets[i];
        s->sink_buckets[i] = h.b[i];
        if (!gained)
            continue;
        /* the open-ended last bucket: the largest value seen says more than its floor */
        uint64_t value = i == HIST_BUCKETS - 1 ? h.max : bucket_value(i);
        v->histogram(arg, s->name, value, gained);
    }
}

void stats_flush(const struct stats_flush_visitor *v, void *arg)
{
    stats_init();
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < nall; i++) {
        struct herald_stat *s = all[i];
        if (s->kind != STAT_COUNTER || !atomic_load_explicit(&s->used, memory_order_relaxed))
            continue;
        uint64_t total = raw_sum(s->slot);
        v->counter(arg, s->name, total - s->sink_base);
        s->sink_base = total;
    }
    for (size_t i = 0; i < nall; i++) {
        struct herald_stat *s = all[i];
        if (s->kind != STAT_GAUGE || !atomic_load_explicit(&s->used, memory_order_relaxed))
            continue;
        int64_t value = (int64_t)raw_sum(s->slot);
        v->gauge(arg, s->name, value < 0 ? 0 : (uint64_t)value);
    }
    for (size_t i = 0; i < nall; i++)
        if (all[i]->kind == STAT_HISTOGRAM && atomic_load_explicit(&all[i]->used, memory_order_relaxed))
            flush_histogram(all[i], v, arg);
    pthread_mutex_unlock(&lock);
}

/* ------------------------------------------------------------------ rendering */

static int by_name(const void *a, const void *b)
{
    return strcmp((*(struct herald_stat *const *)a)->name, (*(struct herald_stat *const *)b)->name);
}

/* A double without trailing zeros: 12, 12.5, 0.25. */
static void fmt_double(char *out, size_t size, double v)
{
    if (isnan(v)) {
        snprintf(out, size, "nan");
        return;
    }
    snprintf(out, size, "%.4f", v);
    char *dot = strchr(out, '.');
    if (dot) {
        char *e = out + strlen(out) - 1;
        while (e > dot && *e == '0')
            *e-- = '\0';
        if (e == dot)
            *e = '\0';
    }
}

static void render_hist_text(struct evbuffer *out, const struct herald_stat *s, const struct hist_snap *h)
{
    evbuffer_add_printf(out, "%s:", s->name);
    if (!h->count) {
        evbuffer_add_printf(out, " No recorded values\n");
        return;
    }
    /* interval values need periodic flushes, which herald does not do: nan like Envoy without them */
    for (size_t q = 0; q < NQUANTILES; q++) {
        char v[64];
        fmt_double(v, sizeof(v), hist_quantile(h, quantiles[q]));
        evbuffer_add_printf(out, " %s(nan,%s)", quantile_names[q], v);
    }
    evbuffer_add_printf(out, "\n");
}

static json_t *render_json(struct herald_stat **v, size_t n, bool used_only)
{
    json_t *stats = json_array();
    json_t *computed = json_array();
    for (size_t i = 0; i < n; i++) {
        struct herald_stat *s = v[i];
        if (s->kind == STAT_HISTOGRAM)
            continue;
        uint64_t val = merged_value(s);
        json_int_t jv = s->kind == STAT_GAUGE ? (json_int_t)(int64_t)val : (json_int_t)val;
        json_array_append_new(stats, json_pack("{s:s, s:I}", "name", s->name, "value", jv));
    }
    for (size_t i = 0; i < n; i++) {
        struct herald_stat *s = v[i];
        if (s->kind != STAT_HISTOGRAM)
            continue;
        struct hist_snap h;
        hist_merge(s, &h);
        if (used_only && !h.count)
            continue;
        json_t *vals = json_array();
        for (size_t q = 0; q < NQUANTILES; q++) {
            double x = hist_quantile(&h, quantiles[q]);
            json_array_append_new(vals, json_pack("{s:n, s:o}", "interval", "cumulative",
                                                  isnan(x) ? json_null() : json_real(x)));
        }
        json_array_append_new(computed, json_pack("{s:s, s:o}", "name", s->name, "values", vals));
    }
    if (json_array_size(computed)) {
        json_t *sq = json_array();
        for (size_t q = 0; q < NQUANTILES; q++)
            json_array_append_new(sq, json_real(quantiles[q] * 100));
        json_array_append_new(stats, json_pack("{s:{s:o, s:o}}", "histograms", "supported_quantiles", sq,
                                               "computed_quantiles", computed));
    } else {
        json_decref(computed);
    }
    return json_pack("{s:o}", "stats", stats);
}

/* --- Prometheus: Envoy's default tag extraction, then envoy_ + sanitized name. */

#define MAX_TAGS 8

struct tag { const char *name; char *value; };

struct prom_entry {
    struct herald_stat *s;
    char *metric;          /* envoy_... */
    char *labels;          /* `a="x",b="y"` or "" */
};

static void add_tag(struct tag *tags, int *ntags, const char *name, const char *v, size_t len)
{
    if (*ntags < MAX_TAGS)
        tags[(*ntags)++] = (struct tag){name, xstrndup(v, len)};
}

/* Removes n[from, from+len) in place. */
static void cut(char *n, size_t from, size_t len)
{
    memmove(n + from, n + from + len, strlen(n + from + len) + 1);
}

/* "<lead><seg>." at the start of n: tags seg and removes "seg.". */
static bool extract_prefix(char *n, const char *lead, const char *tag, struct tag *tags, int *ntags)
{
    size_t ll = strlen(lead);
    if (strncmp(n, lead, ll) != 0)
        return false;
    char *dot = strchr(n + ll, '.');
    if (!dot)
        return false;
    add_tag(tags, ntags, tag, n + ll, (size_t)(dot - (n + ll)));
    cut(n, ll, (size_t)(dot - (n + ll)) + 1);
    return true;
}

/* "<mid><seg>." anywhere after the first segment (mongo cmd/collection/callsite). */
static void extract_inner(char *n, const char *mid, const char *tag, struct tag *tags, int *ntags)
{
    char *p = strstr(n, mid);
    if (!p)
        return;
    char *seg = p + strlen(mid);
    char *dot = strchr(seg, '.');
    if (!dot)
        return;
    add_tag(tags, ntags, tag, seg, (size_t)(dot - seg));
    cut(n, (size_t)(seg - n), (size_t)(dot - seg) + 1);
}

static bool in_set(char c, const char *set)
{
    return c && strchr(set, c) != NULL;
}

/* ^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.) */
static bool extract_listener(char *n, struct tag *tags, int *ntags)
{
    static const char *const sets[] = {"_.0123456789", "_[]aAbBcCdDeEfF0123456789"};
    if (strncmp(n, "listener.", 9) != 0)
        return false;
    const char *a = n + 9;
    for (size_t k = 0; k < ARRAY_SIZE(sets); k++) {
        size_t run = 0;
        while (in_set(a[run], sets[k]))
            run++;
        /* the greedy run backs off to the last '.' that ends it */
        for (size_t end = run + 1; end-- > 0;) {
            if (a[end] == '.') {
                add_tag(tags, ntags, "envoy_listener_address", a, end);
                cut(n, 9, end + 1);
                return true;
            }
        }
    }
    return false;
}

static void extract_tags(char *n, struct tag *tags, int *ntags)
{
    size_t len = strlen(n);
    /* _rq_(\d)xx$ -> upstream_rq_xx; _rq(_(\d{3}))$ -> upstream_rq */
    if (len >= 7 && strcmp(n + len - 2, "xx") == 0 && n[len - 3] >= '0' && n[len - 3] <= '9' &&
        strncmp(n + len - 7, "_rq_", 4) == 0) {
        add_tag(tags, ntags, "envoy_response_code_class", n + len - 3, 1);
        cut(n, len - 3, 1);
    } else if (len >= 7 && strncmp(n + len - 7, "_rq_", 4) == 0 && in_set(n[len - 3], "0123456789") &&
               in_set(n[len - 2], "0123456789") && in_set(n[len - 1], "0123456789")) {
        add_tag(tags, ntags, "envoy_response_code", n + len - 3, 3);
        n[len - 4] = '\0';
    }
    if (extract_prefix(n, "cluster.", "envoy_cluster_name", tags, ntags))
        return;
    if (extract_listener(n, tags, ntags)) {
        extract_prefix(n, "listener.http.", "envoy_http_conn_manager_prefix", tags, ntags);
        return;
    }
    if (extract_prefix(n, "http.", "envoy_http_conn_manager_prefix", tags, ntags))
        return;
    if (extract_prefix(n, "tcp.", "envoy_tcp_prefix", tags, ntags))
        return;
    if (extract_prefix(n, "mysql.", "envoy_mysql_prefix", tags, ntags))
        return;
    if (extract_prefix(n, "mongo.", "envoy_mongo_prefix", tags, ntags)) {
        extract_inner(n, ".cmd.", "envoy_mongo_cmd", tags, ntags);
        extract_inner(n, ".collection.", "envoy_mongo_collection", tags, ntags);
        extract_inner(n, ".callsite.", "envoy_mongo_callsite", tags, ntags);
    }
}

char *stats_tag_extract(const char *name, char **dog_tags)
{
    char *n = xstrdup(name);
    struct tag tags[MAX_TAGS];
    int ntags = 0;
    extract_tags(n, tags, &ntags);
    struct evbuffer *b = evbuffer_new();
    for (int i = 0; i < ntags; i++) {
        /* Envoy's tag names are "envoy.cluster_name"; Prometheus sees them as envoy_cluster_name */
        evbuffer_add_printf(b, "%senvoy.%s:%s", i ? "," : "", tags[i].name + strlen("envoy_"), tags[i].value);
        free(tags[i].value);
    }
    size_t len = evbuffer_get_length(b);
    *dog_tags = xmalloc(len + 1);
    evbuffer_remove(b, *dog_tags, len);
    (*dog_tags)[len] = '\0';
    evbuffer_free(b);
    return n;
}

static void prom_entry_init(struct prom_entry *e, struct herald_stat *s)
{
    char *n = xstrdup(s->name);
    struct tag tags[MAX_TAGS];
    int ntags = 0;
    extract_tags(n, tags, &ntags);

    e->s = s;
    e->metric = xasprintf("envoy_%s", n);
    for (char *p = e->metric; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_'))
            *p = '_';
    free(n);

    struct evbuffer *b = evbuffer_new();
    for (int i = 0; i < ntags; i++) {
        evbuffer_add_printf(b, "%s%s=\"", i ? "," : "", tags[i].name);
        for (const char *p = tags[i].value; *p; p++) {
            if (*p == '\\' || *p == '"')
                evbuffer_add_printf(b, "\\%c", *p);
            else if (*p == '\n')
                evbuffer_add(b, "\\n", 2);
            else
                evbuffer_add(b, p, 1);
        }
        evbuffer_add(b, "\"", 1);
        free(tags[i].value);
    }
    size_t len = evbuffer_get_length(b);
    e->labels = xmalloc(len + 1);
    evbuffer_remove(b, e->labels, len);
    e->labels[len] = '\0';
    evbuffer_free(b);
}

static int prom_cmp(const void *a, const void *b)
{
    const struct prom_entry *x = a, *y = b;
    if (x->s->kind != y->s->kind)
        return (int)x->s->kind - (int)y->s->kind;
    int c = strcmp(x->metric, y->metric);
    return c ? c : strcmp(x->labels, y->labels);
}

/* Envoy's default histogram buckets. */
static const double prom_buckets[] = {0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
                                      30000, 60000, 300000, 600000, 1800000, 3600000};

static void render_prometheus(struct evbuffer *out, struct herald_stat **v, size_t n, bool used_only)
{
    struct prom_entry *e = xcalloc(n ? n : 1, sizeof(*e));
    size_t ne = 0;
    for (size_t i = 0; i < n; i++)
        prom_entry_init(&e[ne++], v[i]);
    qsort(e, ne, sizeof(*e), prom_cmp);

    for (size_t i = 0; i < ne; i++) {
        struct herald_stat *s = e[i].s;
        const char *lb = e[i].labels;
        const char *comma = *lb ? "," : "";
        struct hist_snap h;
        if (s->kind == STAT_HISTOGRAM) {
            hist_merge(s, &h);
            if (used_only && !h.count)
                continue;
        }
        if (i == 0 || e[i - 1].s->kind != s->kind || strcmp(e[i - 1].metric, e[i].metric) != 0)
            evbuffer_add_printf(out, "# TYPE %s %s\n", e[i].metric, kind_name(s->kind));
        if (s->kind == STAT_COUNTER) {
            evbuffer_add_printf(out, "%s{%s} %" PRIu64 "\n", e[i].metric, lb, merged_value(s));
        } else if (s->kind == STAT_GAUGE) {
            evbuffer_add_printf(out, "%s{%s} %" PRId64 "\n", e[i].metric, lb, (int64_t)merged_value(s));
        } else {
            for (size_t k = 0; k < ARRAY_SIZE(prom_buckets); k++)
                evbuffer_add_printf(out, "%s_bucket{%s%sle=\"%g\"} %.0f\n", e[i].metric, lb, comma,
                                    prom_buckets[k], floor(hist_count_le(&h, prom_buckets[k])));
            evbuffer_add_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", e[i].metric, lb, comma,
                                h.count);
            /* the sum is read separately from the buckets; fine for monitoring */
            evbuffer_add_printf(out, "%s_sum{%s} %" PRIu64 "\n", e[i].metric, lb, raw_sum(s->slot + H_SUM));
            evbuffer_add_printf(out, "%s_count{%s} %" PRIu64 "\n", e[i].metric, lb, h.count);
        }
    }
    for (size_t i = 0; i < ne; i++) {
        free(e[i].metric);
        free(e[i].labels);
    }
    free(e);
}

int stats_render(struct evbuffer *out, enum stats_format fmt, const char *filter, bool used_only, char **err)
{
    regex_t re;
    bool have_re = filter && *filter;
    if (have_re) {
        int rc = regcomp(&re, filter, REG_EXTENDED | REG_NOSUB);
        if (rc != 0) {
            char msg[256];
            regerror(rc, &re, msg, sizeof(msg));
            if (err)
                *err = xasprintf("invalid regex '%s': %s", filter, msg);
            return -1;
        }
    }
    stats_init();
    pthread_mutex_lock(&lock);
    struct herald_stat **v = xmalloc((nall ? nall : 1) * sizeof(*v));
    size_t n = 0;
    for (size_t i = 0; i < nall; i++) {
        struct herald_stat *s = all[i];
        if (used_only && s->kind != STAT_HISTOGRAM && !atomic_load_explicit(&s->used, memory_order_relaxed))
            continue;
        if (have_re && regexec(&re, s->name, 0, NULL, 0) != 0)
            continue;
        v[n++] = s;
    }
    qsort(v, n, sizeof(*v), by_name);

    if (fmt == STATS_TEXT) {
        for (size_t i = 0; i < n; i++) {
            struct herald_stat *s = v[i];
            if (s->kind == STAT_COUNTER)
                evbuffer_add_printf(out, "%s: %" PRIu64 "\n", s->name, merged_value(s));
            else if (s->kind == STAT_GAUGE)
                evbuffer_add_printf(out, "%s: %" PRId64 "\n", s->name, (int64_t)merged_value(s));
        }
        for (size_t i = 0; i < n; i++) {
            if (v[i]->kind != STAT_HISTOGRAM)
                continue;
            struct hist_snap h;
            hist_merge(v[i], &h);
            if (!used_only || h.count)
                render_hist_text(out, v[i], &h);
        }
    } else if (fmt == STATS_JSON) {
        json_t *j = render_json(v, n, used_only);
        char *txt = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(10));
        evbuffer_add_printf(out, "%s\n", txt ? txt : "{}");
        free(txt);
        json_decref(j);
    } else {
        render_prometheus(out, v, n, used_only);
    }
    pthread_mutex_unlock(&lock);
    free(v);
    if (have_re)
        regfree(&re);
    return 0;
}
