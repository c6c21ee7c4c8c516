/* The local rate limit's descriptors (envoy.extensions.common.ratelimit.v3.
 * LocalRateLimitDescriptor): each a list of (key, value) entries with its own
 * token bucket, shared by every worker. A request's descriptors (made by the
 * rate_limits of its route, virtual host or the filter) match one whose
 * entries have the same keys and values, in order. An entry without a value
 * is a wildcard: every distinct value gets a bucket of its own (a limit per
 * client address, per user header, ...), the most recently used
 * max_dynamic_descriptors of them kept.
 *
 * Knows nothing of configs or the core beyond the SDK's descriptor type,
 * so t/unit/test_local_ratelimit.c links it with token_bucket.c alone. */
#ifndef HERALD_LOCAL_RATELIMIT_DESCRIPTORS_H
#define HERALD_LOCAL_RATELIMIT_DESCRIPTORS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "token_bucket.h"

struct dyn_bucket;

struct lrl_descriptor {
    char **keys, **values;             /* values[i] NULL: a wildcard */
    size_t n;
    bool wildcard;
    uint32_t max_tokens, tokens_per_fill;
    uint64_t fill_interval_ms;
    struct token_bucket bucket;        /* not a wildcard */
    /* a wildcard: buckets by the request's values, in a hash and an LRU list */
    pthread_mutex_t lock;
    struct dyn_bucket **table;
    size_t table_size, count, max;
    struct dyn_bucket *lru_head, *lru_tail;   /* head: most recently used */
};

struct lrl_descriptors {
    struct lrl_descriptor **d;         /* strictest (fewest tokens a second) first, as Envoy takes them */
    size_t n;
};

/* A request's descriptor: keys and values (as the SDK's herald_rl_descriptor). */
struct lrl_request_descriptor {
    const char *const *keys, *const *values;
    size_t n;
};

struct lrl_descriptor *lrl_descriptor_new(const char *const *keys, const char *const *values, size_t n,
                                          uint32_t max_tokens, uint32_t tokens_per_fill, uint64_t fill_interval_ms,
                                          size_t max_dynamic, uint64_t now_ms);
void lrl_descriptor_free(struct lrl_descriptor *d);
/* Whether two descriptors have the same entries (a configuration mistake). */
bool lrl_descriptor_same(const struct lrl_descriptor *a, const struct lrl_descriptor *b);

void lrl_descriptors_add(struct lrl_descriptors *s, struct lrl_descriptor *d); /* takes d */
/* Orders them strictest first; call once after the last add. */
void lrl_descriptors_finish(struct lrl_descriptors *s);
void lrl_descriptors_fini(struct lrl_descriptors *s);

bool lrl_descriptor_matches(const struct lrl_descriptor *d, const struct lrl_request_descriptor *r);

/* Envoy's rule: every configured descriptor that one of the request's
 * matches gives a token, strictest first; the first that has none limits
 * the request. *matched: whether any matched (the filter's default bucket
 * is then taken only if always_consume_default_token_bucket). */
bool lrl_take(struct lrl_descriptors *s, const struct lrl_request_descriptor *req, size_t nreq, uint64_t now_ms,
              bool *matched);
/* The bucket's size, what is left and the ms to its next fill for the first
 * configured descriptor that a request descriptor matches; false: none does. */
bool lrl_state(struct lrl_descriptors *s, const struct lrl_request_descriptor *req, size_t nreq, uint64_t now_ms,
               uint32_t *max_tokens, uint32_t *remaining, uint64_t *ms_to_fill);
/* How many distinct-value buckets a wildcard descriptor holds now. */
size_t lrl_descriptor_dynamic_count(struct lrl_descriptor *d);

#endif
