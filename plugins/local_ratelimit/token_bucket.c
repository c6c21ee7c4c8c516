/* See token_bucket.h. The fills due since next_fill_ms are claimed with one
 * compare-and-swap on next_fill_ms, so each fill is added exactly once
 * whichever workers race for it; tokens are then added and taken with
 * compare-and-swap loops, capped at max_tokens. */
#include "token_bucket.h"

void token_bucket_init(struct token_bucket *b, uint32_t max_tokens, uint32_t tokens_per_fill,
                       uint64_t fill_interval_ms, uint64_t now_ms)
{
    b->max_tokens = max_tokens;
    b->tokens_per_fill = tokens_per_fill;
    b->fill_interval_ms = fill_interval_ms ? fill_interval_ms : 1;
    atomic_init(&b->tokens, max_tokens);
    atomic_init(&b->next_fill_ms, now_ms + b->fill_interval_ms);
}

static void refill(struct token_bucket *b, uint64_t now_ms)
{
    uint64_t next = atomic_load_explicit(&b->next_fill_ms, memory_order_relaxed);
    while (now_ms >= next) {
        uint64_t fills = (now_ms - next) / b->fill_interval_ms + 1;
        if (atomic_compare_exchange_weak_explicit(&b->next_fill_ms, &next, next + fills * b->fill_interval_ms,
                                                  memory_order_relaxed, memory_order_relaxed)) {
            uint64_t add = fills * b->tokens_per_fill;
            uint32_t cur = atomic_load_explicit(&b->tokens, memory_order_relaxed), val;
            do
                val = add >= b->max_tokens || cur + add > b->max_tokens ? b->max_tokens : (uint32_t)(cur + add);
            while (!atomic_compare_exchange_weak_explicit(&b->tokens, &cur, val, memory_order_relaxed,
                                                          memory_order_relaxed));
            return;
        }
    }
}

bool token_bucket_take(struct token_bucket *b, uint64_t now_ms)
{
    refill(b, now_ms);
    uint32_t cur = atomic_load_explicit(&b->tokens, memory_order_relaxed);
    while (cur > 0)
        if (atomic_compare_exchange_weak_explicit(&b->tokens, &cur, cur - 1, memory_order_relaxed,
                                                  memory_order_relaxed))
            return true;
    return false;
}

uint32_t token_bucket_remaining(struct token_bucket *b, uint64_t now_ms)
{
    refill(b, now_ms);
    return atomic_load_explicit(&b->tokens, memory_order_relaxed);
}

uint64_t token_bucket_ms_to_fill(struct token_bucket *b, uint64_t now_ms)
{
    uint64_t next = atomic_load_explicit(&b->next_fill_ms, memory_order_relaxed);
    return next > now_ms ? next - now_ms : 0;
}
