/* The local rate limit's token bucket (plugins/local_ratelimit): it starts
 * full, each fill_interval adds tokens_per_fill up to max_tokens, fills that
 * fell due while nobody asked are all added at once, and two threads racing
 * for tokens never take more than there are. */
#include <pthread.h>

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

int main(void)
{
    test_fill();
    test_fills_add_up();
    test_threads();
    return done_testing();
}
