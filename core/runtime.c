/* Envoy's layered runtime. The main thread owns the layers (static, disk,
 * admin) and, whenever one changes, merges them into an immutable, sorted,
 * refcounted snapshot. Readers on any thread keep a thread-local reference
 * to the snapshot they last saw and compare a generation number (one atomic
 * load) before each read: the mutex is taken only when the main thread has
 * published a new snapshot since, to swap the reference. A worker therefore
 * holds at most one old snapshot, released on its next read or at exit.
 *
 * Disk layers are re-read when their symlink_root is replaced: an inotify
 * watch on the symlink's parent directory (as Envoy's watcher, which looks
 * for a move onto the symlink's name; a create or delete of that name also
 * counts, for `ln -sfn`), run on the main thread's event_base. */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "herald/runtime.h"
#include "herald/stats.h"
#include "log.h"
#include "runtime.h"

#define MAX_WALK_DEPTH 16            /* Envoy's DiskLayer limit */
#define MAX_FILE_BYTES (64 * 1024)

struct rt_entry {
    char *key;
    char *value;                     /* the raw string, as /runtime shows it */
    bool has_uint, has_double, has_bool, has_frac;
    uint64_t u;
    double d;
    bool b;
    uint64_t frac_num, frac_den;     /* a FractionalPercent object (static layer) */
};

struct rt_map {                      /* sorted by key, no duplicates */
    struct rt_entry *e;
    size_t n, cap;
};

struct rt_snapshot {
    struct refcount ref;
    struct rt_map m;
};

enum layer_kind { LAYER_STATIC, LAYER_DISK, LAYER_ADMIN };

struct layer {
    char *name;
    enum layer_kind kind;
    struct rt_map m;
    bool present;                    /* disk: the directory existed at the last load */
    char *path;                      /* disk: symlink_root/subdirectory[/service_cluster] */
    char *symlink_root;
};

struct watch {
    int wd;
    char *dir, *name;                /* parent directory and the symlink's name in it */
};

static struct {
    bool inited;
    struct layer *layers;
    size_t nlayers, cap;
    struct event_base *base;
    int ifd;
    struct event *iev, *reload_ev;
    struct watch *watches;
    size_t nwatches, wcap;
    struct herald_stat *load_success, *load_error, *num_keys, *num_layers, *admin_overrides_active,
        *override_dir_exists, *override_dir_not_exists, *deprecated_feature_use;
    int64_t g_num_keys, g_num_layers, g_admin_active;
} rt = {.ifd = -1};

static pthread_mutex_t snap_lock = PTHREAD_MUTEX_INITIALIZER;
static struct rt_snapshot *cur_snap;
static _Atomic uint64_t snap_gen;
static __thread struct rt_snapshot *tl_snap;
static __thread uint64_t tl_gen;

/* ------------------------------------------------------------------ entries */

static void entry_free(struct rt_entry *e)
{
    free(e->key);
    free(e->value);
}

static void map_free(struct rt_map *m)
{
    for (size_t i = 0; i < m->n; i++)
        entry_free(&m->e[i]);
    free(m->e);
    memset(m, 0, sizeof(*m));
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const struct rt_entry *)a)->key, ((const struct rt_entry *)b)->key);
}

static const struct rt_entry *map_find(const struct rt_map *m, const char *key)
{
    struct rt_entry k = {.key = (char *)key};
    return m->n ? bsearch(&k, m->e, m->n, sizeof(*m->e), entry_cmp) : NULL;
}

static struct rt_entry *map_find_mut(struct rt_map *m, const char *key)
{
    return (struct rt_entry *)map_find(m, key);
}

/* Envoy's setNumberValue: a number is also an integer (truncated, when not
 * negative) and, when integral, a boolean (non-zero). */
static void set_number(struct rt_entry *e, double d)
{
    e->has_double = true;
    e->d = d;
    if (d < INT_MAX && d > INT_MIN && d == (double)(int)d) {
        e->has_bool = true;
        e->b = d != 0;
    }
    if (d >= 0 && d < 18446744073709551616.0) {
        e->has_uint = true;
        e->u = (uint64_t)d;
    }
}

/* Envoy reads disk and admin values as YAML: "numerator: 5, denominator: MILLION"
 * (braces or not) is a FractionalPercent. */
static void parse_fraction(struct rt_entry *e)
{
    const char *p = strstr(e->value, "numerator");
    if (!p)
        return;
    p += strlen("numerator");
    while (*p && !isdigit((unsigned char)*p))
        p++;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(p, &end, 10);
    if (end == p || errno || n > UINT32_MAX)
        return;
    e->has_frac = true;
    e->frac_num = n;
    e->frac_den = strstr(e->value, "MILLION") ? 1000000 : strstr(e->value, "TEN_THOUSAND") ? 10000 : 100;
}

/* Typed views of a string value, as Envoy's SnapshotImpl::createEntry. */
static void entry_parse(struct rt_entry *e)
{
    const char *s = e->value;
    char *end;
    if (*s) {
        errno = 0;
        double d = strtod(s, &end);
        while (isspace((unsigned char)*end))
            end++;
        if (errno == 0 && *end == '\0' && end != s && isfinite(d))
            set_number(e, d);
    }
    if (isdigit((unsigned char)*s)) {   /* exact, beyond a double's 53 bits */
        errno = 0;
        unsigned long long u = strtoull(s, &end, 10);
        if (errno == 0 && *end == '\0') {
            e->has_uint = true;
            e->u = u;
        }
    }
    if (strcasecmp(s, "true") == 0) {
        e->has_bool = true;
        e->b = true;
    } else if (strcasecmp(s, "false") == 0) {
        e->has_bool = true;
        e->b = false;
    }
    parse_fraction(e);
}

/* Adds or replaces key in an unsorted-append map; map_sort() afterwards. */
static struct rt_entry *map_add(struct rt_map *m, const char *key, const char *value)
{
    struct rt_entry *e = VEC_PUSH(m->e, m->n, m->cap);
    memset(e, 0, sizeof(*e));
    e->key = xstrdup(key);
    e->value = xstrdup(value);
    entry_parse(e);
    return e;
}

struct sort_item { const char *key; size_t pos; };

/* by key, then by position: equal keys stay in the order they were added */
static int sort_item_cmp(const void *a, const void *b)
{
    const struct sort_item *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : (x->pos > y->pos) - (x->pos < y->pos);
}

/* Sorts and drops earlier duplicates (the last one added wins). */
static void map_sort(struct rt_map *m)
{
    if (m->n < 2)
        return;
    struct sort_item *idx = xcalloc(m->n, sizeof(*idx));
    struct rt_entry *e = m->e;
    for (size_t i = 0; i < m->n; i++)
        idx[i] = (struct sort_item){e[i].key, i};
    qsort(idx, m->n, sizeof(*idx), sort_item_cmp);
    struct rt_entry *out = xcalloc(m->n, sizeof(*out));
    size_t n = 0;
    for (size_t i = 0; i < m->n; i++) {
        struct rt_entry *x = &e[idx[i].pos];
        if (n > 0 && strcmp(out[n - 1].key, x->key) == 0) {
            /* equal keys keep insertion order (stable), so the later replaces */
            entry_free(&out[n - 1]);
            out[n - 1] = *x;
        } else {
            out[n++] = *x;
        }
    }
    free(idx);
    free(m->e);
    m->e = out;
    m->n = n;
    m->cap = m->n;
}

/* ------------------------------------------------------------ static layer */

static uint64_t denominator_value(const struct herald_cfg *n, bool *ok)
{
    *ok = true;
    if (!n)
        return 100;
    if (herald_cfg_type(n) == HERALD_CFG_INT) {
        switch (herald_cfg_int(n, -1)) {
        case 0: return 100;
        case 1: return 10000;
        case 2: return 1000000;
        }
    } else if (herald_cfg_type(n) == HERALD_CFG_STRING) {
        const char *s = herald_cfg_str(n, "");
        if (strcasecmp(s, "HUNDRED") == 0)
            return 100;
        if (strcasecmp(s, "TEN_THOUSAND") == 0)
            return 10000;
        if (strcasecmp(s, "MILLION") == 0)
            return 1000000;
    }
    *ok = false;
    return 0;
}

static char *scalar_string(const struct herald_cfg *v)
{
    switch (herald_cfg_type(v)) {
    case HERALD_CFG_BOOL: return xstrdup(herald_cfg_bool(v, false) ? "true" : "false");
    case HERALD_CFG_INT: return xasprintf("%lld", (long long)herald_cfg_int(v, 0));
    case HERALD_CFG_REAL: {
        double d = herald_cfg_real(v, 0);
        if (d >= 0 && d < 1e19 && floor(d) == d)
            return xasprintf("%.0f", d);
        return xasprintf("%.15g", d);
    }
    case HERALD_CFG_STRING: return xstrdup(herald_cfg_str(v, ""));
    default: return NULL;
    }
}

/* Envoy's ProtoLayer::walkProtoValue: nested objects flatten with dots; an
 * empty object or one naming numerator/denominator is a FractionalPercent;
 * lists and nulls are errors. */
static int walk_static(struct rt_map *m, const struct herald_cfg *v, const char *key, struct cfg_diag *d)
{
    enum herald_cfg_type t = herald_cfg_type(v);
    if (t == HERALD_CFG_ARRAY || t == HERALD_CFG_NULL) {
        diag_error(d, v, "invalid runtime entry value for %s (a list or null)", key);
        return -1;
    }
    if (t != HERALD_CFG_OBJECT) {
        char *s = scalar_string(v);
        struct rt_entry *e = map_add(m, key, s);
        if (t == HERALD_CFG_BOOL) {
            e->has_bool = true;
            e->b = herald_cfg_bool(v, false);
        }
        free(s);
        return 0;
    }
    const struct herald_cfg *num = herald_cfg_get(v, "numerator"), *den = herald_cfg_get(v, "denominator");
    if (herald_cfg_len(v) == 0 || num || den) {
        bool ok;
        uint64_t dv = denominator_value(den, &ok);
        int64_t nv = herald_cfg_int(num, 0);
        if (!ok || nv < 0 || (num && herald_cfg_type(num) != HERALD_CFG_INT)) {
            diag_error(d, v, "invalid FractionalPercent for runtime key %s", key);
            return -1;
        }
        for (size_t i = 0; i < herald_cfg_len(v); i++) {
            const char *k = herald_cfg_key_at(v, i);
            if (strcmp(k, "numerator") != 0 && strcmp(k, "denominator") != 0) {
                diag_error(d, herald_cfg_at(v, i), "unknown FractionalPercent field '%s' in runtime key %s",
                           k, key);
                return -1;
            }
        }
        char *s = xasprintf("{\"numerator\":%lld,\"denominator\":%llu}", (long long)nv,
                            (unsigned long long)dv);
        struct rt_entry *e = map_add(m, key, s);
        free(s);
        e->has_frac = true;
        e->frac_num = (uint64_t)nv;
        e->frac_den = dv;
        return 0;
    }
    int rc = 0;
    for (size_t i = 0; i < herald_cfg_len(v); i++) {
        const char *k = herald_cfg_key_at(v, i);
        char *sub = *key ? xasprintf("%s.%s", key, k) : xstrdup(k);
        if (walk_static(m, herald_cfg_at(v, i), sub, d) < 0)
            rc = -1;
        free(sub);
    }
    return rc;
}

int runtime_static_layer_parse(const struct herald_cfg *layer, struct runtime_map_view *out,
                               struct cfg_diag *d)
{
    struct rt_map m = {0};
    int rc = herald_cfg_type(layer) == HERALD_CFG_OBJECT ? walk_static(&m, layer, "", d) : 0;
    map_sort(&m);
    out->n = m.n;
    out->keys = xcalloc(m.n + 1, sizeof(char *));
    out->values = xcalloc(m.n + 1, sizeof(char *));
    for (size_t i = 0; i < m.n; i++) {
        out->keys[i] = xstrdup(m.e[i].key);
        out->values[i] = xstrdup(m.e[i].value);
    }
    map_free(&m);
    return rc;
}

void runtime_map_view_free(struct runtime_map_view *v)
{
    for (size_t i = 0; i < v->n; i++) {
        free(v->keys[i]);
        free(v->values[i]);
    }
    free(v->keys);
    free(v->values);
    memset(v, 0, sizeof(*v));
}

/* -------------------------------------------------------------- disk layer */

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* Envoy drops the lines that start with '#' (placeholder files hold only comments). */
static void strip_comments(char *buf)
{
    char *out = buf;
    for (char *line = buf; *line;) {
        char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) + 1 : strlen(line);
        if (line[0] != '#') {
            memmove(out, line, len);
            out += len;
        }
        line += len;
    }
    *out = '\0';
}

static int walk_disk(struct rt_map *m, const char *dir, const char *prefix, int depth)
{
    if (depth > MAX_WALK_DEPTH) {
        log_warn("runtime", "%s: deeper than %d directories; not read further", dir, MAX_WALK_DEPTH);
        return -1;
    }
    DIR *dh = opendir(dir);
    if (!dh) {
        log_warn("runtime", "cannot read directory %s: %s", dir, strerror(errno));
        return -1;
    }
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(dh)) != NULL) {
        /* hidden entries ('.', '..', editors' swap files, kubernetes' ..data) are not keys */
        if (de->d_name[0] == '.')
            continue;
        char *path = xasprintf("%s/%s", dir, de->d_name);
        char *key = *prefix ? xasprintf("%s.%s", prefix, de->d_name) : xstrdup(de->d_name);
        struct stat st;
        if (stat(path, &st) < 0) {
            log_warn("runtime", "cannot stat %s: %s", path, strerror(errno));
            rc = -1;
        } else if (S_ISDIR(st.st_mode)) {
            if (walk_disk(m, path, key, depth + 1) < 0)
                rc = -1;
        } else if (S_ISREG(st.st_mode)) {
            FILE *f = fopen(path, "re");
            if (!f) {
                log_warn("runtime", "cannot open %s: %s", path, strerror(errno));
                rc = -1;
            } else {
                char *buf = xmalloc(MAX_FILE_BYTES + 1);
                size_t n = fread(buf, 1, MAX_FILE_BYTES, f);
                bool err = ferror(f);
                buf[n] = '\0';
                fclose(f);
                if (err) {
                    log_warn("runtime", "cannot read %s", path);
                    rc = -1;
                } else if (n == MAX_FILE_BYTES) {
                    log_warn("runtime", "%s: larger than %d bytes; ignored", path, MAX_FILE_BYTES);
                    rc = -1;
                } else {
                    strip_comments(buf);
                    map_add(m, key, trim(buf));
                }
                free(buf);
            }
        }
        free(path);
        free(key);
    }
    closedir(dh);
    return rc;
}

/* ---------------------------------------------------------------- snapshots */

static void snap_put(struct rt_snapshot *s)
{
    if (s && ref_put(&s->ref)) {
        map_free(&s->m);
        free(s);
    }
}

static void gauge_set(struct herald_stat *g, int64_t *last, int64_t v)
{
    if (g)
        herald_gauge_add(g, v - *last);
    *last = v;
}

static bool admin_has_values(void)
{
    for (size_t i = 0; i < rt.nlayers; i++)
        if (rt.layers[i].kind == LAYER_ADMIN && rt.layers[i].m.n > 0)
            return true;
    return false;
}

/* Merges the present layers (later wins) into a new snapshot and publishes it. */
static void publish(void)
{
    struct rt_snapshot *s = xcalloc(1, sizeof(*s));
    ref_init(&s->ref);
    size_t nlayers = 0;
    for (size_t i = 0; i < rt.nlayers; i++) {
        const struct layer *l = &rt.layers[i];
        if (!l->present)
            continue;
        nlayers++;
        for (size_t j = 0; j < l->m.n; j++) {
            const struct rt_entry *src = &l->m.e[j];
            struct rt_entry *e = VEC_PUSH(s->m.e, s->m.n, s->m.cap);
            *e = *src;
            e->key = xstrdup(src->key);
            e->value = xstrdup(src->value);
        }
    }
    map_sort(&s->m);
    pthread_mutex_lock(&snap_lock);
    struct rt_snapshot *old = cur_snap;
    cur_snap = s;
    atomic_fetch_add_explicit(&snap_gen, 1, memory_order_release);
    pthread_mutex_unlock(&snap_lock);
    snap_put(old);
    gauge_set(rt.num_keys, &rt.g_num_keys, (int64_t)s->m.n);
    gauge_set(rt.num_layers, &rt.g_num_layers, (int64_t)nlayers);
    gauge_set(rt.admin_overrides_active, &rt.g_admin_active, admin_has_values() ? 1 : 0);
}

/* Any thread: the snapshot current as of this call (or NULL before init). */
static const struct rt_snapshot *snapshot(void)
{
    uint64_t g = atomic_load_explicit(&snap_gen, memory_order_acquire);
    if (g == tl_gen)
        return tl_snap;
    pthread_mutex_lock(&snap_lock);
    struct rt_snapshot *s = cur_snap;
    if (s)
        ref_get(&s->ref);
    tl_gen = atomic_load_explicit(&snap_gen, memory_order_relaxed);
    pthread_mutex_unlock(&snap_lock);
    struct rt_snapshot *old = tl_snap;
    tl_snap = s;
    snap_put(old);
    return s;
}

void runtime_thread_exit(void)
{
    snap_put(tl_snap);
    tl_snap = NULL;
    tl_gen = 0;
}

static const struct rt_entry *lookup(const char *key)
{
    const struct rt_snapshot *s = snapshot();
    return s && key && *key ? map_find(&s->m, key) : NULL;
}

uint64_t runtime_get_uint(const char *key, uint64_t dflt)
{
    const struct rt_entry *e = lookup(key);
    return e && e->has_uint ? e->u : dflt;
}

bool runtime_get_bool(const char *key, bool dflt)
{
    const struct rt_entry *e = lookup(key);
    return e && e->has_bool ? e->b : dflt;
}

double runtime_get_double(const char *key, double dflt)
{
    const struct rt_entry *e = lookup(key);
    return e && e->has_double ? e->d : dflt;
}

bool runtime_fraction_eval(uint64_t numerator, uint64_t denominator, uint64_t random)
{
    if (denominator == 0)
        return false;
    return random % denominator < numerator;
}

bool runtime_fraction_enabled(const char *key, uint32_t numerator, uint32_t denominator, uint64_t random)
{
    const struct rt_entry *e = lookup(key);
    uint64_t num = numerator, den = denominator;
    if (e && e->has_frac) {
        num = e->frac_num;
        den = e->frac_den;
    } else if (e && e->has_uint) {
        /* Envoy: an integer value is a percentage, over 100 always on */
        if (e->u > 100)
            return true;
        num = e->u;
        den = 100;
    }
    return runtime_fraction_eval(num, den, random);
}

/* ----------------------------------------------------------------- the SDK */

/* Per thread: a random draw for featureEnabled needs no quality beyond an
 * even spread. */
static uint64_t thread_random(void)
{
    static __thread uint64_t s;
    if (!s) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&s;
        if (!s)
            s = 0x9e3779b97f4a7c15ull;
    }
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

bool herald_runtime_feature_enabled(const char *key, uint32_t numerator, uint32_t denominator)
{
    return runtime_fraction_enabled(key && *key ? key : NULL, numerator, denominator, thread_random());
}

uint64_t herald_runtime_uint(const char *key, uint64_t dflt)
{
    return key && *key ? runtime_get_uint(key, dflt) : dflt;
}

bool herald_runtime_bool(const char *key, bool dflt)
{
    return key && *key ? runtime_get_bool(key, dflt) : dflt;
}

/* ----------------------------------------------------------------- reloads */

/* Re-reads every disk layer (Envoy reloads the whole snapshot). */
static void load_disk_layers(void)
{
    unsigned errors = 0, disk_layers = 0;
    for (size_t i = 0; i < rt.nlayers; i++) {
        struct layer *l = &rt.layers[i];
        if (l->kind != LAYER_DISK)
            continue;
        map_free(&l->m);
        struct stat st;
        l->present = stat(l->path, &st) == 0 && S_ISDIR(st.st_mode);
        if (!l->present)
            continue;
        disk_layers++;
        if (walk_disk(&l->m, l->path, "", 1) < 0)
            errors++;
        map_sort(&l->m);
    }
    if (errors == 0)
        herald_stat_inc(rt.load_success);
    else
        herald_stat_inc(rt.load_error);
    /* Envoy's rule: an "override" directory exists when more than one disk layer loaded */
    if (disk_layers > 1)
        herald_stat_inc(rt.override_dir_exists);
    else
        herald_stat_inc(rt.override_dir_not_exists);
}

static void reload_cb(evutil_socket_t fd, short what, void *arg)
{
    load_disk_layers();
    publish();
    log_info("runtime", "disk layers reloaded: %zu keys", cur_snap ? cur_snap->m.n : (size_t)0);
}

static void inotify_cb(evutil_socket_t fd, short what, void *arg)
{
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool hit = false;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0)
            break;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            for (size_t i = 0; i < rt.nwatches; i++)
                if (rt.watches[i].wd == ev->wd && ev->len > 0 && strcmp(ev->name, rt.watches[i].name) == 0)
                    hit = true;
            p += sizeof(*ev) + ev->len;
        }
    }
    if (hit && rt.reload_ev) {
        /* a short delay coalesces the create+move pairs of one swap */
        struct timeval tv = {0, 20000};
        evtimer_add(rt.reload_ev, &tv);
    }
}

static void watch_symlink(const char *symlink_root)
{
    char *copy = xstrdup(symlink_root);
    size_t n = strlen(copy);
    while (n > 1 && copy[n - 1] == '/')
        copy[--n] = '\0';
    char *slash = strrchr(copy, '/');
    char *dir, *name;
    if (!slash) {
        dir = xstrdup(".");
        name = xstrdup(copy);
    } else {
        dir = slash == copy ? xstrdup("/") : xstrndup(copy, (size_t)(slash - copy));
        name = xstrdup(slash + 1);
    }
    free(copy);
    int wd = inotify_add_watch(rt.ifd, dir, IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MOVED_FROM);
    if (wd < 0) {
        log_warn("runtime", "cannot watch %s for runtime changes: %s", dir, strerror(errno));
        free(dir);
        free(name);
        return;
    }
    struct watch *w = VEC_PUSH(rt.watches, rt.nwatches, rt.wcap);
    w->wd = wd;
    w->dir = dir;
    w->name = name;
}

/* ------------------------------------------------------------------- setup */

int runtime_init(const struct herald_cfg *layered_runtime, struct event_base *base, struct cfg_diag *d)
{
    if (rt.inited)
        runtime_shutdown();
    rt.inited = true;
    rt.base = base;
    rt.load_success = herald_counter("runtime", "load_success");
    rt.load_error = herald_counter("runtime", "load_error");
    rt.num_keys = herald_gauge("runtime", "num_keys");
    rt.num_layers = herald_gauge("runtime", "num_layers");
    rt.admin_overrides_active = herald_gauge("runtime", "admin_overrides_active");
    rt.override_dir_exists = herald_counter("runtime", "override_dir_exists");
    rt.override_dir_not_exists = herald_counter("runtime", "override_dir_not_exists");
    rt.deprecated_feature_use = herald_counter("runtime", "deprecated_feature_use");

    const struct herald_cfg *root = layered_runtime ? layered_runtime->parent : NULL;
    const struct herald_cfg *node = herald_cfg_get(root, "node");
    const char *service_cluster = herald_cfg_str(herald_cfg_get(node, "cluster"), NULL);
    const struct herald_cfg *layers = herald_cfg_get(layered_runtime, "layers");
    int rc = 0;
    size_t nadmin = 0;
    for (size_t i = 0; i < herald_cfg_len(layers); i++) {
        const struct herald_cfg *ln = herald_cfg_at(layers, i);
        const char *name = herald_cfg_str(herald_cfg_get(ln, "name"), "");
        for (size_t j = 0; j < rt.nlayers; j++)
            if (strcmp(rt.layers[j].name, name) == 0) {
                diag_error(d, ln, "duplicate runtime layer name '%s'", name);
                rc = -1;
            }
        struct layer *l = VEC_PUSH(rt.layers, rt.nlayers, rt.cap);
        memset(l, 0, sizeof(*l));
        l->name = xstrdup(name);
        l->present = true;
        const struct herald_cfg *sl = herald_cfg_get(ln, "static_layer");
        const struct herald_cfg *dl = herald_cfg_get(ln, "disk_layer");
        if (sl) {
            l->kind = LAYER_STATIC;
            if (herald_cfg_type(sl) == HERALD_CFG_OBJECT && walk_static(&l->m, sl, "", d) < 0)
                rc = -1;
            map_sort(&l->m);
        } else if (dl) {
            l->kind = LAYER_DISK;
            const char *root_path = herald_cfg_str(herald_cfg_get(dl, "symlink_root"), "");
            const char *sub = herald_cfg_str(herald_cfg_get(dl, "subdirectory"), "");
            if (!*root_path) {
                diag_error(d, dl, "disk_layer.symlink_root is required");
                rc = -1;
            }
            l->symlink_root = xstrdup(root_path);
            l->path = *sub ? xasprintf("%s/%s", root_path, sub) : xstrdup(root_path);
            if (herald_cfg_bool(herald_cfg_get(dl, "append_service_cluster"), false)) {
                char *p = xasprintf("%s/%s", l->path, service_cluster ? service_cluster : "");
                free(l->path);
                l->path = p;
            }
        } else if (herald_cfg_get(ln, "admin_layer")) {
            l->kind = LAYER_ADMIN;
            if (++nadmin > 1) {
                diag_error(d, ln, "too many admin layers specified in layered_runtime, "
                           "at most one may be specified");
                rc = -1;
            }
        } else {
            diag_error(d, ln, "runtime layer '%s' needs one of static_layer, disk_layer or admin_layer",
                       name);
            rc = -1;
        }
    }
    if (rc < 0)
        return -1;

    load_disk_layers();
    publish();

    if (base) {
        rt.reload_ev = evtimer_new(base, reload_cb, NULL);
        for (size_t i = 0; i < rt.nlayers; i++) {
            if (rt.layers[i].kind != LAYER_DISK)
                continue;
            if (rt.ifd < 0) {
                rt.ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
                if (rt.ifd < 0) {
                    log_warn("runtime", "inotify: %s; disk layers will not be reloaded", strerror(errno));
                    break;
                }
                rt.iev = event_new(base, rt.ifd, EV_READ | EV_PERSIST, inotify_cb, NULL);
                event_add(rt.iev, NULL);
            }
            watch_symlink(rt.layers[i].symlink_root);
        }
    }
    return 0;
}

void runtime_shutdown(void)
{
    if (rt.iev)
        event_free(rt.iev);
    if (rt.reload_ev)
        event_free(rt.reload_ev);
    if (rt.ifd >= 0)
        close(rt.ifd);
    for (size_t i = 0; i < rt.nwatches; i++) {
        free(rt.watches[i].dir);
        free(rt.watches[i].name);
    }
    free(rt.watches);
    for (size_t i = 0; i < rt.nlayers; i++) {
        free(rt.layers[i].name);
        free(rt.layers[i].path);
        free(rt.layers[i].symlink_root);
        map_free(&rt.layers[i].m);
    }
    free(rt.layers);
    runtime_thread_exit();
    pthread_mutex_lock(&snap_lock);
    struct rt_snapshot *s = cur_snap;
    cur_snap = NULL;
    atomic_fetch_add_explicit(&snap_gen, 1, memory_order_release);
    pthread_mutex_unlock(&snap_lock);
    snap_put(s);
    rt.layers = NULL;
    rt.watches = NULL;
    rt.nlayers = rt.cap = rt.nwatches = rt.wcap = 0;
    rt.iev = rt.reload_ev = NULL;
    rt.ifd = -1;
    rt.inited = false;
}

/* ------------------------------------------------------------------- admin */

void runtime_dump(struct evbuffer *out)
{
    json_t *names = json_array(), *entries = json_object();
    const struct layer *present[64];
    size_t np = 0;
    for (size_t i = 0; i < rt.nlayers && np < ARRAY_SIZE(present); i++)
        if (rt.layers[i].present) {
            present[np++] = &rt.layers[i];
            json_array_append_new(names, json_string(rt.layers[i].name));
        }
    pthread_mutex_lock(&snap_lock);
    struct rt_snapshot *s = cur_snap;
    if (s)
        ref_get(&s->ref);
    pthread_mutex_unlock(&snap_lock);
    for (size_t k = 0; s && k < s->m.n; k++) {
        const struct rt_entry *e = &s->m.e[k];
        json_t *lv = json_array();
        for (size_t i = 0; i < np; i++) {
            const struct rt_entry *x = map_find(&present[i]->m, e->key);
            json_array_append_new(lv, json_string(x ? x->value : ""));
        }
        json_object_set_new(entries, e->key,
                            json_pack("{s:s, s:o}", "final_value", e->value, "layer_values", lv));
    }
    snap_put(s);
    json_t *j = json_pack("{s:o, s:o}", "layers", names, "entries", entries);
    char *txt = json_dumps(j, JSON_INDENT(1) | JSON_SORT_KEYS);
    evbuffer_add_printf(out, "%s\n", txt ? txt : "{}");
    free(txt);
    json_decref(j);
}

static struct layer *admin_layer(void)
{
    for (size_t i = 0; i < rt.nlayers; i++)
        if (rt.layers[i].kind == LAYER_ADMIN)
            return &rt.layers[i];
    return NULL;
}

static int admin_apply(struct layer *l, const char *key, const char *value)
{
    struct rt_entry *e = map_find_mut(&l->m, key);
    if (value && *value) {
        if (e) {
            free(e->value);
            char *k = e->key;
            memset(e, 0, sizeof(*e));
            e->key = k;
            e->value = xstrdup(value);
            entry_parse(e);
        } else {
            map_add(&l->m, key, value);
            map_sort(&l->m);
        }
    } else if (e) {
        size_t i = (size_t)(e - l->m.e);
        entry_free(e);
        memmove(&l->m.e[i], &l->m.e[i + 1], (l->m.n - i - 1) * sizeof(*e));
        l->m.n--;
    }
    return 0;
}

int runtime_admin_set_many(const char *const *keys, const char *const *values, size_t n, char **err)
{
    struct layer *l = admin_layer();
    if (!l) {
        if (err)
            *err = xstrdup("No admin layer specified");
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (keys[i] && *keys[i])
            admin_apply(l, keys[i], values[i]);
    publish();
    return 0;
}

int runtime_admin_set(const char *key, const char *value, char **err)
{
    return runtime_admin_set_many(&key, &value, 1, err);
}
