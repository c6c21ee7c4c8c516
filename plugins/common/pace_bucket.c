/* See pace_bucket.h. */
#include "pace_bucket.h"

void pace_bucket_init(struct pace_bucket *b, uint64_t limit_kbps)
{
    pthread_mutex_init(&b->mu, NULL);
    b->rate = limit_kbps * 1024;
    b->bytes = (double)b->rate;
    b->last_ms = 0;
}

void pace_bucket_destroy(struct pace_bucket *b)
{
    pthread_mutex_destroy(&b->mu);
}

uint64_t pace_bucket_take(struct pace_bucket *b, uint64_t want, uint64_t now_ms)
{
    pthread_mutex_lock(&b->mu);
    /* workers read the clock at different moments: time never runs back */
    if (b->last_ms && now_ms > b->last_ms) {
        b->bytes += (double)(now_ms - b->last_ms) * (double)b->rate / 1000.0;
        if (b->bytes > (double)b->rate)
            b->bytes = (double)b->rate;
    }
    if (now_ms > b->last_ms)
        b->last_ms = now_ms;
    uint64_t got = b->bytes >= (double)want ? want : (uint64_t)b->bytes;
    b->bytes -= (double)got;
    pthread_mutex_unlock(&b->mu);
    return got;
}
