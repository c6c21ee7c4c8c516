/* Rate limit descriptors: envoy.config.route.v3.RateLimit lists (a route's,
 * a virtual host's, or a rate limit filter's own) and the descriptors they
 * make for one request, as Envoy's populateDescriptors does. Each RateLimit
 * makes at most one descriptor: its actions' entries in order; an action
 * that has nothing to say (a missing header without skip_if_absent, headers
 * that do not match as expected) drops the whole descriptor. The filters
 * that use them (local_ratelimit) match descriptors against their own.
 *
 * rate_limit.c is the config side (the route table links it alone, in its
 * unit test too); rate_limit_request.c reads requests. The SDK functions
 * are declared in herald/http.h. */
#ifndef HERALD_CORE_HTTP_RATE_LIMIT_H
#define HERALD_CORE_HTTP_RATE_LIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herald/herald.h"

/* The compiled lists (shared by rate_limit.c and rate_limit_request.c only). */
enum rl_action_kind { RL_SOURCE_CLUSTER, RL_DESTINATION_CLUSTER, RL_REQUEST_HEADER, RL_QUERY_PARAMETER, RL_REMOTE_ADDRESS,
                      RL_MASKED_REMOTE_ADDRESS, RL_GENERIC_KEY, RL_HEADER_VALUE_MATCH };

struct rl_action {
    enum rl_action_kind kind;
    char *key;                         /* the entry's key */
    char *value;                       /* GENERIC_KEY, HEADER_VALUE_MATCH */
    char *name;                        /* REQUEST_HEADER (lower-case), QUERY_PARAMETER */
    bool skip_if_absent;
    bool expect_match;
    unsigned v4_mask, v6_mask;
    struct herald_header_matcher **hm; size_t nhm;
};

struct rl_rate_limit {
    uint32_t stage;
    char *disable_key;                 /* the runtime key, ready made */
    struct rl_action *actions; size_t nactions;
};

struct herald_rate_limits {
    struct rl_rate_limit *e; size_t n;
};

struct herald_rl_descriptors {
    struct herald_rl_descriptor *d; size_t n, cap;
};

#endif
