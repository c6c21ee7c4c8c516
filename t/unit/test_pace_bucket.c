/* The pacing byte bucket (plugins/common/pace_bucket.c) that fault's
 * response_rate_limit and bandwidth_limit send bodies through: it starts
 * with one second's worth, refills at limit_kbps KiB a second up to that,
 * gives partial amounts, never runs time backwards when workers' clocks
 * differ, and two threads together never take more than it gave. */
#include <pthread.h>

#include "pace_bucket.h"
#include "tap.h"

static void test_rate(void)
{
    struct pace_bucket b;
    pace_bucket_init(&b, 16);                           /* 16 KiB/s = 16384 B/s */
    is_int((int)pace_bucket_take(&b, 100000, 1000), 16384, "starts with one second's worth, a partial take");
    is_int((int)pace_bucket_take(&b, 1, 1000), 0, "then nothing at the same moment");
    is_int((int)pace_bucket_take(&b, 100000, 1050), 819, "50 ms later: 16384 x 0.05 (819.2)");
    is_int((int)pace_bucket_take(&b, 100, 1100), 100, "a small take is whole ...");
    is_int((int)pace_bucket_take(&b, 100000, 1100), 719, "... and leaves the rest (819.4 - 100)");
    is_int((int)pace_bucket_take(&b, 100000, 900), 0, "an earlier clock adds nothing");
    is_int((int)pace_bucket_take(&b, 100000, 1150), 819, "and does not move the last refill back");
    is_int((int)pace_bucket_take(&b, 1 << 30, 60000), 16384, "a long idle refills one second's worth only");
    pace_bucket_destroy(&b);
}

struct racer {
    struct pace_bucket *b;
    uint64_t got;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    for (uint64_t ms = 1; ms <= 2000; ms++)
        for (int i = 0; i < 20; i++)
            r->got += pace_bucket_take(r->b, 64, ms);
    return NULL;
}

static void test_threads(void)
{
    /* 1 KiB/s over 2 s of (fake) time: 1024 at start, 1024 x 1.999 refilled */
    struct pace_bucket b;
    pace_bucket_init(&b, 1);
    struct racer r[2] = {{&b, 0}, {&b, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, race, &r[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    uint64_t total = r[0].got + r[1].got;
    ok(total <= 1024 + 2047 && total >= 1024 + 2040, "two threads together take what was refilled (%llu)",
       (unsigned long long)total);
    pace_bucket_destroy(&b);
}

int main(void)
{
    test_rate();
    test_threads();
    return done_testing();
}
