/* local_ratelimit (network): envoy.filters.network.local_ratelimit. Each new
 * connection takes a token from a bucket shared by all workers (and by every
 * filter config with the same share_key); a connection that finds none is
 * closed before any byte is read, and counted in Envoy's
 * local_rate_limit.<stat_prefix>.rate_limited. runtime_enabled (a runtime
 * flag) switches the filter off. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/herald.h"
#include "token_bucket_config.h"

/* Buckets by share_key: config_create and config_destroy run on the main
 * thread, but a reload may build the next configs while the last ones live. */
struct shared_bucket {
    struct shared_bucket *next;
    char *key;
    unsigned refs;
    struct token_bucket bucket;
};

static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;
static struct shared_bucket *shared;

struct conf {
    struct token_bucket own;
    struct shared_bucket *sb;          /* share_key: the bucket is this one's */
    struct token_bucket *bucket;
    bool has_flag;                     /* runtime_enabled */
    bool flag_default;
    char *flag_key;
    struct herald_stat *st_rate_limited;
};

struct session {
    struct conf *conf;
    struct herald_conn *c;
};

/* ------------------------------------------------------------ schema */

static const struct herald_field feature_flag_fields[] = {
    {.name = "default_value", .kind = HERALD_FIELD_BOOL, .flags = HERALD_F_REQUIRED},
    {.name = "runtime_key", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED},
    {.name = NULL},
};
static const struct herald_message feature_flag_msg = {
    "envoy.config.core.v3.RuntimeFeatureFlag", feature_flag_fields, NULL,
};

static const struct herald_field nlrl_fields[] = {
    {.name = "stat_prefix", .kind = HERALD_FIELD_STRING, .flags = HERALD_F_REQUIRED,
     .help = "stats under local_rate_limit.<stat_prefix>."},
    {.name = "token_bucket", .kind = HERALD_FIELD_MESSAGE, .flags = HERALD_F_REQUIRED,
     .message = &token_bucket_schema, .help = "a token per new connection; shared by all workers"},
    {.name = "runtime_enabled", .kind = HERALD_FIELD_MESSAGE, .message = &feature_flag_msg,
     .help = "the filter is on while the runtime key (default_value when unset) is true; unset: on"},
    {.name = "share_key", .kind = HERALD_FIELD_STRING,
     .help = "filters with the same key and the same token_bucket share one bucket"},
    {.name = NULL},
};
static const struct herald_message nlrl_schema = {
    "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit", nlrl_fields, NULL,
};

/* ------------------------------------------------------------ config */

static char *xdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d)
        abort();
    return d;
}

/* The bucket of share_key and this token_bucket, made on first use: as in
 * Envoy, configs share a bucket when both their key and their bucket are the
 * same (a key given with another token_bucket gets a bucket of its own). */
static struct shared_bucket *bucket_share(const char *key, const struct herald_cfg *token_bucket)
{
    struct token_bucket want;
    token_bucket_from_cfg(&want, token_bucket, herald_now_ms());
    pthread_mutex_lock(&shared_lock);
    struct shared_bucket *sb;
    for (sb = shared; sb; sb = sb->next)
        if (!strcmp(sb->key, key) && sb->bucket.max_tokens == want.max_tokens &&
            sb->bucket.tokens_per_fill == want.tokens_per_fill && sb->bucket.fill_interval_ms == want.fill_interval_ms)
            break;
    if (!sb) {
        sb = calloc(1, sizeof(*sb));
        if (!sb)
            abort();
        sb->key = xdup(key);
        token_bucket_from_cfg(&sb->bucket, token_bucket, herald_now_ms());
        sb->next = shared;
        shared = sb;
    }
    sb->refs++;
    pthread_mutex_unlock(&shared_lock);
    return sb;
}

static void bucket_unshare(struct shared_bucket *sb)
{
    pthread_mutex_lock(&shared_lock);
    if (--sb->refs == 0) {
        for (struct shared_bucket **p = &shared; *p; p = &(*p)->next)
            if (*p == sb) {
                *p = sb->next;
                break;
            }
        free(sb->key);
        free(sb);
    }
    pthread_mutex_unlock(&shared_lock);
}

static void conf_destroy(void *p)
{
    struct conf *c = p;
    if (!c)
        return;
    if (c->sb)
        bucket_unshare(c->sb);
    free(c->flag_key);
    free(c);
}

static int conf_create(const struct herald_cfg *n, const struct herald_filter_env *env, void **out, char **err)
{
    (void)env;
    (void)err;
    struct conf *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    const struct herald_cfg *tb = herald_cfg_get(n, "token_bucket");
    const char *key = herald_cfg_str(herald_cfg_get(n, "share_key"), "");
    if (*key) {
        c->sb = bucket_share(key, tb);
        c->bucket = &c->sb->bucket;
    } else {
        token_bucket_from_cfg(&c->own, tb, herald_now_ms());
        c->bucket = &c->own;
    }
    const struct herald_cfg *rf = herald_cfg_get(n, "runtime_enabled");
    if (rf) {
        c->has_flag = true;
        c->flag_default = herald_cfg_bool(herald_cfg_get(rf, "default_value"), true);
        c->flag_key = xdup(herald_cfg_str(herald_cfg_get(rf, "runtime_key"), ""));
    }
    char prefix[256];
    snprintf(prefix, sizeof(prefix), "local_rate_limit.%s", herald_cfg_str(herald_cfg_get(n, "stat_prefix"), ""));
    c->st_rate_limited = herald_counter(prefix, "rate_limited");
    *out = c;
    return 0;
}

/* ------------------------------------------------------------ the filter */

static void *session_new(void *conf, void *wstate, struct herald_conn *c)
{
    (void)wstate;
    struct session *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->conf = conf;
    s->c = c;
    return s;
}

static void session_destroy(void *p)
{
    free(p);
}

static enum herald_status on_new_connection(void *p)
{
    struct session *s = p;
    struct conf *c = s->conf;
    if (c->has_flag && !herald_runtime_bool(c->flag_key, c->flag_default))
        return HERALD_CONTINUE;
    if (token_bucket_take(c->bucket, herald_now_ms()))
        return HERALD_CONTINUE;
    herald_stat_inc(c->st_rate_limited);
    HERALD_LOGF(HERALD_LOG_DEBUG, "local_ratelimit", "[C%llu] no token: closing",
                (unsigned long long)herald_conn_id(s->c));
    return HERALD_CLOSE;
}

static const struct herald_network_filter_ops ops = {
    .size = sizeof(struct herald_network_filter_ops),
    .config_create = conf_create,
    .config_destroy = conf_destroy,
    .session_new = session_new,
    .session_destroy = session_destroy,
    .on_new_connection = on_new_connection,
};

static const char *const type_urls[] = {
    "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit",
    NULL,
};

HERALD_PLUGIN(.name = "envoy.filters.network.local_ratelimit",
              .kind = HERALD_PLUGIN_NETWORK_FILTER,
              .type_urls = type_urls,
              .version = "1.0.0",
              .description = "a token bucket per process: connections over it closed at once",
              .config_schema = &nlrl_schema,
              .ops = &ops);
