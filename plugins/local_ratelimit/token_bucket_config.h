/* envoy.type.v3.TokenBucket in the local rate limit filters' configs: the
 * schema both filters use, and a bucket from a node that passed it.
 * (token_bucket.c itself knows nothing of configs: its unit test links it alone.) */
#ifndef HERALD_LOCAL_RATELIMIT_TOKEN_BUCKET_CONFIG_H
#define HERALD_LOCAL_RATELIMIT_TOKEN_BUCKET_CONFIG_H

#include "herald/herald.h"
#include "token_bucket.h"

/* max_tokens >= 1, tokens_per_fill >= 1 (default 1), fill_interval >= 50ms, as Envoy */
extern const struct herald_message token_bucket_schema;
void token_bucket_from_cfg(struct token_bucket *b, const struct herald_cfg *n, uint64_t now_ms);

#endif
