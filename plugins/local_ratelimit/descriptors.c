/* See descriptors.h. A wildcard descriptor's buckets live in a chained hash
 * keyed by the request's values and an LRU list; both change under the
 * descriptor's mutex, and a token is taken under it too, so a bucket is
 * never freed while another worker uses it. */
#include <stdlib.h>
#include <string.h>

#include "descriptors.h"
#include "xalloc.h"

struct dyn_bucket {
    char *key;                         /* the request's values, each followed by '\0' */
    size_t klen;
    uint64_t hash;
    struct dyn_bucket *chain;          /* the next in its hash slot */
    struct dyn_bucket *prev, *next;    /* LRU */
    struct token_bucket bucket;
};

struct lrl_descriptor *lrl_descriptor_new(const char *const *keys, const char *const *values, size_t n,
                                          uint32_t max_tokens, uint32_t tokens_per_fill, uint64_t fill_interval_ms,
                                          size_t max_dynamic, uint64_t now_ms)
{
    struct lrl_descriptor *d = xcalloc(1, sizeof(*d));
    d->keys = xcalloc(n, sizeof(*d->keys));
    d->values = xcalloc(n, sizeof(*d->values));
    d->n = n;
    for (size_t i = 0; i < n; i++) {
        d->keys[i] = xstrdup(keys[i]);
        d->values[i] = values[i] && *values[i] ? xstrdup(values[i]) : NULL;
        d->wildcard |= d->values[i] == NULL;
    }
    d->max_tokens = max_tokens;
    d->tokens_per_fill = tokens_per_fill;
    d->fill_interval_ms = fill_interval_ms;
    token_bucket_init(&d->bucket, max_tokens, tokens_per_fill, fill_interval_ms, now_ms);
    if (d->wildcard) {
        d->max = max_dynamic ? max_dynamic : 1;
        d->table_size = 16;
        while (d->table_size < d->max * 2 && d->table_size < (1u << 20))
            d->table_size *= 2;
        d->table = xcalloc(d->table_size, sizeof(*d->table));
        pthread_mutex_init(&d->lock, NULL);
    }
    return d;
}

void lrl_descriptor_free(struct lrl_descriptor *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n; i++) {
        free(d->keys[i]);
        free(d->values[i]);
    }
    free(d->keys);
    free(d->values);
    if (d->wildcard) {
        for (struct dyn_bucket *b = d->lru_head, *next; b; b = next) {
            next = b->next;
            free(b->key);
            free(b);
        }
        free(d->table);
        pthread_mutex_destroy(&d->lock);
    }
    free(d);
}

static bool str_eq(const char *a, const char *b)
{
    return a == b || (a && b && !strcmp(a, b));
}

bool lrl_descriptor_same(const struct lrl_descriptor *a, const struct lrl_descriptor *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (!str_eq(a->keys[i], b->keys[i]) || !str_eq(a->values[i], b->values[i]))
            return false;
    return true;
}

void lrl_descriptors_add(struct lrl_descriptors *s, struct lrl_descriptor *d)
{
    struct lrl_descriptor **a = realloc(s->d, (s->n + 1) * sizeof(*a));
    if (!a)
        abort();
    a[s->n++] = d;
    s->d = a;
}

/* tokens per fill over the interval, compared without division */
static int stricter(const void *pa, const void *pb)
{
    const struct lrl_descriptor *a = *(const struct lrl_descriptor *const *)pa;
    const struct lrl_descriptor *b = *(const struct lrl_descriptor *const *)pb;
    unsigned __int128 ra = (unsigned __int128)a->tokens_per_fill * b->fill_interval_ms;
    unsigned __int128 rb = (unsigned __int128)b->tokens_per_fill * a->fill_interval_ms;
    return ra < rb ? -1 : ra > rb;
}

void lrl_descriptors_finish(struct lrl_descriptors *s)
{
    if (s->n > 1)
        qsort(s->d, s->n, sizeof(*s->d), stricter); /* qsort is not stable; equal rates have no order in Envoy either */
}

void lrl_descriptors_fini(struct lrl_descriptors *s)
{
    for (size_t i = 0; i < s->n; i++)
        lrl_descriptor_free(s->d[i]);
    free(s->d);
    s->d = NULL;
    s->n = 0;
}

bool lrl_descriptor_matches(const struct lrl_descriptor *d, const struct lrl_request_descriptor *r)
{
    if (d->n != r->n)
        return false;
    for (size_t i = 0; i < d->n; i++) {
        if (strcmp(d->keys[i], r->keys[i]))
            return false;
        if (d->values[i] && strcmp(d->values[i], r->values[i]))
            return false;
    }
    return true;
}

/* FNV-1a over the request's wildcard values */
static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211u;
    }
    return h;
}

static void lru_unlink(struct lrl_descriptor *d, struct dyn_bucket *b)
{
    if (b->prev)
        b->prev->next = b->next;
    else
        d->lru_head = b->next;
    if (b->next)
        b->next->prev = b->prev;
    else
        d->lru_tail = b->prev;
    b->prev = b->next = NULL;
}

static void lru_push_front(struct lrl_descriptor *d, struct dyn_bucket *b)
{
    b->next = d->lru_head;
    b->prev = NULL;
    if (d->lru_head)
        d->lru_head->prev = b;
    d->lru_head = b;
    if (!d->lru_tail)
        d->lru_tail = b;
}

static void table_remove(struct lrl_descriptor *d, struct dyn_bucket *b)
{
    struct dyn_bucket **pp = &d->table[b->hash & (d->table_size - 1)];
    while (*pp && *pp != b)
        pp = &(*pp)->chain;
    if (*pp)
        *pp = b->chain;
}

/* The bucket of these values, made (and the least recently used one
 * dropped when full) if need be; called with d->lock held. */
static struct dyn_bucket *dyn_get(struct lrl_descriptor *d, const struct lrl_request_descriptor *r, uint64_t now_ms)
{
    size_t klen = 0;
    for (size_t i = 0; i < d->n; i++)
        if (!d->values[i])
            klen += strlen(r->values[i]) + 1;
    char stack[256], *key = klen <= sizeof(stack) ? stack : xcalloc(1, klen);
    char *p = key;
    for (size_t i = 0; i < d->n; i++)
        if (!d->values[i]) {
            size_t l = strlen(r->values[i]) + 1;
            memcpy(p, r->values[i], l);
            p += l;
        }
    uint64_t h = hash_bytes(key, klen);
    struct dyn_bucket *b = d->table[h & (d->table_size - 1)];
    while (b && !(b->hash == h && b->klen == klen && !memcmp(b->key, key, klen)))
        b = b->chain;
    if (b) {
        lru_unlink(d, b);
        lru_push_front(d, b);
    } else {
        if (d->count >= d->max) {
            struct dyn_bucket *old = d->lru_tail;
            lru_unlink(d, old);
            table_remove(d, old);
            free(old->key);
            free(old);
            d->count--;
        }
        b = xcalloc(1, sizeof(*b));
        b->key = xcalloc(1, klen);
        memcpy(b->key, key, klen);
        b->klen = klen;
        b->hash = h;
        token_bucket_init(&b->bucket, d->max_tokens, d->tokens_per_fill, d->fill_interval_ms, now_ms);
        b->chain = d->table[h & (d->table_size - 1)];
        d->table[h & (d->table_size - 1)] = b;
        lru_push_front(d, b);
        d->count++;
    }
    if (key != stack)
        free(key);
    return b;
}

static bool take_one(struct lrl_descriptor *d, const struct lrl_request_descriptor *r, uint64_t now_ms)
{
    if (!d->wildcard)
        return token_bucket_take(&d->bucket, now_ms);
    pthread_mutex_lock(&d->lock);
    bool ok = token_bucket_take(&dyn_get(d, r, now_ms)->bucket, now_ms);
    pthread_mutex_unlock(&d->lock);
    return ok;
}

bool lrl_take(struct lrl_descriptors *s, const struct lrl_request_descriptor *req, size_t nreq, uint64_t now_ms,
              bool *matched)
{
    *matched = false;
    for (size_t i = 0; i < s->n; i++) {
        for (size_t j = 0; j < nreq; j++) {
            if (!lrl_descriptor_matches(s->d[i], &req[j]))
                continue;
            *matched = true;
            if (!take_one(s->d[i], &req[j], now_ms))
                return false;
            break;
        }
    }
    return true;
}

bool lrl_state(struct lrl_descriptors *s, const struct lrl_request_descriptor *req, size_t nreq, uint64_t now_ms,
               uint32_t *max_tokens, uint32_t *remaining, uint64_t *ms_to_fill)
{
    for (size_t j = 0; j < nreq; j++) {
        for (size_t i = 0; i < s->n; i++) {
            struct lrl_descriptor *d = s->d[i];
            if (!lrl_descriptor_matches(d, &req[j]))
                continue;
            *max_tokens = d->max_tokens;
            if (!d->wildcard) {
                *remaining = token_bucket_remaining(&d->bucket, now_ms);
                *ms_to_fill = token_bucket_ms_to_fill(&d->bucket, now_ms);
            } else {
                pthread_mutex_lock(&d->lock);
                struct dyn_bucket *b = dyn_get(d, &req[j], now_ms);
                *remaining = token_bucket_remaining(&b->bucket, now_ms);
                *ms_to_fill = token_bucket_ms_to_fill(&b->bucket, now_ms);
                pthread_mutex_unlock(&d->lock);
            }
            return true;
        }
    }
    return false;
}

size_t lrl_descriptor_dynamic_count(struct lrl_descriptor *d)
{
    if (!d->wildcard)
        return 0;
    pthread_mutex_lock(&d->lock);
    size_t n = d->count;
    pthread_mutex_unlock(&d->lock);
    return n;
}
