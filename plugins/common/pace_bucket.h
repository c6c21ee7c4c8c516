/* A byte bucket for pacing (stream_pacer.h): limit_kbps KiB a second, never
 * more than one second's worth, starting full, as Envoy's StreamRateLimiter
 * bucket. Refilled lazily by whoever takes from it, under a mutex: a
 * bandwidth_limit config shares one between its streams on every worker,
 * and each taker comes at most once per fill interval. */
#ifndef HERALD_PLUGIN_COMMON_PACE_BUCKET_H
#define HERALD_PLUGIN_COMMON_PACE_BUCKET_H

#include <pthread.h>
#include <stdint.h>

struct pace_bucket {
    pthread_mutex_t mu;
    uint64_t rate;              /* bytes a second; also the most the bucket holds */
    double bytes;
    uint64_t last_ms;           /* the last refill, monotonic ms; 0: none yet */
};

void pace_bucket_init(struct pace_bucket *b, uint64_t limit_kbps);
void pace_bucket_destroy(struct pace_bucket *b);
/* Takes up to want bytes at monotonic time now_ms; returns how many it got. */
uint64_t pace_bucket_take(struct pace_bucket *b, uint64_t want, uint64_t now_ms);

#endif
