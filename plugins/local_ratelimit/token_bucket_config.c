/* See token_bucket_config.h. */
#include "token_bucket_config.h"

static int token_bucket_check(const struct herald_cfg *n, char **err)
{
    const struct herald_cfg *mt = herald_cfg_get(n, "max_tokens");
    if (herald_cfg_int(mt, 0) <= 0 || herald_cfg_int(mt, 0) > UINT32_MAX)
        return herald_cfg_errorf(mt ? mt : n, err, "max_tokens must be from 1 to 4294967295");
    const struct herald_cfg *tpf = herald_cfg_get(n, "tokens_per_fill");
    if (tpf && (herald_cfg_int(tpf, 0) <= 0 || herald_cfg_int(tpf, 0) > UINT32_MAX))
        return herald_cfg_errorf(tpf, err, "tokens_per_fill must be from 1 to 4294967295");
    const struct herald_cfg *fi = herald_cfg_get(n, "fill_interval");
    if (herald_cfg_duration_ms(fi, 0) < 50)
        return herald_cfg_errorf(fi ? fi : n, err, "fill_interval must be at least 50ms (as in Envoy)");
    return 0;
}

static const struct herald_field token_bucket_fields[] = {
    {.name = "max_tokens", .kind = HERALD_FIELD_UINT, .flags = HERALD_F_REQUIRED,
     .help = "the bucket's size, and what it holds at start"},
    {.name = "tokens_per_fill", .kind = HERALD_FIELD_UINT, .help = "default 1"},
    {.name = "fill_interval", .kind = HERALD_FIELD_DURATION, .flags = HERALD_F_REQUIRED,
     .help = "at least 50ms"},
    {.name = NULL},
};
const struct herald_message token_bucket_schema = {
    "envoy.type.v3.TokenBucket", token_bucket_fields, token_bucket_check,
};

void token_bucket_from_cfg(struct token_bucket *b, const struct herald_cfg *n, uint64_t now_ms)
{
    token_bucket_init(b, (uint32_t)herald_cfg_int(herald_cfg_get(n, "max_tokens"), 1),
                      (uint32_t)herald_cfg_int(herald_cfg_get(n, "tokens_per_fill"), 1),
                      herald_cfg_duration_ms(herald_cfg_get(n, "fill_interval"), 1000), now_ms);
}
