/* A token bucket shared by every worker: Envoy's local rate limit bucket
 * (max_tokens, tokens_per_fill every fill_interval, starting full), refilled
 * lazily by whoever takes a token rather than by a timer, so that an idle
 * limiter costs nothing and no thread owns it. */
#ifndef HERALD_LOCAL_RATELIMIT_TOKEN_BUCKET_H
#define HERALD_LOCAL_RATELIMIT_TOKEN_BUCKET_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct token_bucket {
    uint32_t max_tokens, tokens_per_fill;
    uint64_t fill_interval_ms;
    _Atomic uint32_t tokens;
    _Atomic uint64_t next_fill_ms;         /* monotonic ms of the next fill due */
};

void token_bucket_init(struct token_bucket *b, uint32_t max_tokens, uint32_t tokens_per_fill,
                       uint64_t fill_interval_ms, uint64_t now_ms);
/* Takes one token at monotonic time now_ms; false: none left. */
bool token_bucket_take(struct token_bucket *b, uint64_t now_ms);
/* What is left, and the ms until the next fill (for x-ratelimit-*). */
uint32_t token_bucket_remaining(struct token_bucket *b, uint64_t now_ms);
uint64_t token_bucket_ms_to_fill(struct token_bucket *b, uint64_t now_ms);

#endif
