/* The local rate limit's token bucket (plugins/local_ratelimit): it starts
 * full, each fill_interval adds tokens_per_fill up to max_tokens, fills that
 * fell due while nobody asked are all added at once, and two threads racing
 * for tokens never take more than there are; and its descriptors
 * (descriptors.c): matching, strictest first, wildcard buckets per value with
 * an LRU bound. */
#include <pthread.h>

#include <string.h>

#include "descriptors.h"
#include "tap.h"
#include "token_bucket.h"

static void test_fill(void)
{
    struct token_bucket b;
    token_bucket_init(&b, 3, 2, 1000, 5000);
    int taken = 0;
    while (token_bucket_take(&b, 5000))
        taken++;
    is_int(taken, 3, "starts full: max_tokens");
    ok(!token_bucket_take(&b, 5999), "no fill before fill_interval");
    is_int(token_bucket_ms_to_fill(&b, 5999), 1, "1 ms to the fill");
    ok(token_bucket_take(&b, 6000), "a fill at fill_interval ...");
    ok(token_bucket_take(&b, 6000), "... of tokens_per_fill (2) ...");
    ok(!token_bucket_take(&b, 6000), "... and no more");
    is_int(token_bucket_remaining(&b, 7500), 2, "the next fill at 7000");
    is_int(token_bucket_remaining(&b, 60000), 3, "long idle: capped at max_tokens");
    is_int(token_bucket_ms_to_fill(&b, 60000), 1000, "fills stay on their grid (61000 next)");
}

static void test_fills_add_up(void)
{
    struct token_bucket b;
    token_bucket_init(&b, 100, 5, 100, 0);
    for (int i = 0; i < 100; i++)
        token_bucket_take(&b, 0);
    is_int(token_bucket_remaining(&b, 0), 0, "emptied");
    is_int(token_bucket_remaining(&b, 350), 15, "three fills due at once: 15 tokens");
}

#define PER_THREAD 200000
struct racer { struct token_bucket *b; int got; };

static void *race(void *arg)
{
    struct racer *r = arg;
    for (int i = 0; i < PER_THREAD; i++)
        r->got += token_bucket_take(r->b, 10 + (uint64_t)i / 1000);
    return NULL;
}

static void test_threads(void)
{
    /* 2 x 200000 attempts over 200 ms of (fake) time: 1000 at start plus one
     * fill of 10 per ms, 199 fills: 2990 tokens in all */
    struct token_bucket b;
    token_bucket_init(&b, 1000, 10, 1, 10);
    struct racer r[2] = {{&b, 0}, {&b, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, race, &r[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    is_int(r[0].got + r[1].got, 2990, "two threads together take exactly what was filled");
}

static struct lrl_request_descriptor rq(const char *const *keys, const char *const *values, size_t n)
{
    return (struct lrl_request_descriptor){.keys = keys, .values = values, .n = n};
}

static void test_descriptors(void)
{
    struct lrl_descriptors s = {0};
    const char *k1[] = {"path"}, *v1[] = {"/slow"};
    const char *k2[] = {"client", "path"}, *v2[] = {"", "/slow"};  /* a wildcard client */
    const char *k3[] = {"path"}, *v3[] = {"/x"};
    lrl_descriptors_add(&s, lrl_descriptor_new(k3, v3, 1, 100, 100, 1000, 20, 0));      /* 100/s */
    lrl_descriptors_add(&s, lrl_descriptor_new(k1, v1, 1, 5, 1, 1000, 20, 0));          /* 1/s */
    lrl_descriptors_add(&s, lrl_descriptor_new(k2, v2, 2, 2, 1, 2000, 2, 0));           /* 0.5/s, 2 clients kept */
    lrl_descriptors_finish(&s);
    ok(s.d[0]->wildcard && s.d[2]->tokens_per_fill == 100, "strictest first, the loosest last");
    struct lrl_descriptor *dup = lrl_descriptor_new(k1, v1, 1, 9, 9, 100, 20, 0);
    ok(lrl_descriptor_same(dup, s.d[0]) || lrl_descriptor_same(dup, s.d[1]), "a duplicate is recognised");
    lrl_descriptor_free(dup);

    const char *rk[] = {"path"}, *rv[] = {"/slow"};
    const char *ck[] = {"client", "path"}, *ca[] = {"10.0.0.1", "/slow"}, *cb[] = {"10.0.0.2", "/slow"};
    const char *cc[] = {"10.0.0.3", "/slow"}, *cx[] = {"10.0.0.1", "/fast"};
    struct lrl_request_descriptor a[2] = {rq(rk, rv, 1), rq(ck, ca, 2)};
    bool matched;

    ok(lrl_take(&s, a, 2, 0, &matched) && matched, "both match, both give a token");
    ok(lrl_take(&s, a, 2, 0, &matched), "client a's second");
    ok(!lrl_take(&s, a, 2, 0, &matched) && matched,
       "client a's third: its bucket (2) is empty (and, taken first, it spared /slow's)");
    struct lrl_request_descriptor b[2] = {rq(rk, rv, 1), rq(ck, cb, 2)};
    ok(lrl_take(&s, b, 2, 0, &matched), "client b has a bucket of its own");
    is_int((int)lrl_descriptor_dynamic_count(s.d[0]), 2, "two client buckets");
    struct lrl_request_descriptor c1[1] = {rq(ck, cc, 2)};
    ok(lrl_take(&s, c1, 1, 0, &matched), "client c: a third bucket ...");
    is_int((int)lrl_descriptor_dynamic_count(s.d[0]), 2, "... and the least recently used one (a) dropped");
    ok(lrl_take(&s, &a[1], 1, 0, &matched), "so a starts again with a full bucket");
    struct lrl_request_descriptor x[1] = {rq(ck, cx, 2)};
    ok(lrl_take(&s, x, 1, 0, &matched) && !matched, "another path: no descriptor matches");
    const char *pk[] = {"path"}, *pv[] = {"/slow", "?"};
    struct lrl_request_descriptor p1[1] = {rq(pk, pv, 1)};
    int n = 0;
    while (lrl_take(&s, p1, 1, 0, &matched))
        n++;
    is_int(n, 2, "the /slow bucket (5) gave 3 above (a, a, b): 2 left");
    uint32_t max, left;
    uint64_t to_fill;
    ok(lrl_state(&s, p1, 1, 500, &max, &left, &to_fill) && max == 5 && left == 0 && to_fill == 500,
       "its state: 5, 0 left, 500 ms to the fill");
    ok(lrl_take(&s, p1, 1, 1000, &matched), "a token after the fill");
    const char *lk[] = {"client"}, *lv[] = {"10.0.0.1"};
    struct lrl_request_descriptor l1[1] = {rq(lk, lv, 1)};
    ok(!lrl_state(&s, l1, 1, 0, &max, &left, &to_fill), "a different number of entries never matches");
    lrl_descriptors_fini(&s);
}

int main(void)
{
    test_fill();
    test_fills_add_up();
    test_threads();
    test_descriptors();
    return done_testing();
}
