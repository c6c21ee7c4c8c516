/* rbac: the unified matcher tree (xds.type.matcher.v3.Matcher) that an RBAC
 * filter's `matcher` / `shadow_matcher` holds instead of policies: predicates
 * over inputs (a request header, a query parameter, the connection's
 * addresses, ports, SNI, transport, the peer certificate's names) lead to an
 * envoy.config.rbac.v3.Action {name, ALLOW | DENY | LOG}.
 *
 * Pure like matcher.c (libc and PCRE2 only; t/unit/test_rbac.c links it):
 * xmatcher_config.c builds these structures from the config tree. */
#ifndef HERALD_PLUGIN_RBAC_XMATCHER_H
#define HERALD_PLUGIN_RBAC_XMATCHER_H

#include "matcher.h"

/* What a single predicate looks at. The value is a string, or absent (the
 * predicate then does not match, as Envoy's "no data"). */
enum rbac_input_kind {
    RBAC_IN_REQUEST_HEADER = 0,   /* all values joined with "," (HTTP only) */
    RBAC_IN_QUERY_PARAM,          /* the first value, percent-decoded (HTTP only) */
    RBAC_IN_DESTINATION_IP,
    RBAC_IN_DESTINATION_PORT,
    RBAC_IN_SOURCE_IP,            /* HTTP: the client as the connection manager decided it */
    RBAC_IN_SOURCE_PORT,
    RBAC_IN_DIRECT_SOURCE_IP,     /* the socket's peer */
    RBAC_IN_SOURCE_TYPE,          /* "local" (loopback or the destination's own address), else absent */
    RBAC_IN_SERVER_NAME,          /* SNI */
    RBAC_IN_TRANSPORT_PROTOCOL,   /* "tls" or "raw_buffer" */
    RBAC_IN_URI_SAN,              /* the peer certificate's URI SANs joined with "," */
    RBAC_IN_DNS_SAN,
    RBAC_IN_SUBJECT,
};

struct rbac_input {
    enum rbac_input_kind kind;
    char *arg;                    /* header name (lower-case) or query parameter */
};

/* The input's value, malloc'd, or NULL when absent. */
char *rbac_input_value(const struct rbac_input *in, const struct rbac_ctx *ctx);
/* Whether the input needs an HTTP request (the network filter refuses those). */
bool rbac_input_is_http(enum rbac_input_kind kind);

/* xds.type.matcher.v3.Matcher.MatcherList.Predicate */
enum rbac_pred_kind { RBAC_PRED_SINGLE = 0, RBAC_PRED_OR, RBAC_PRED_AND, RBAC_PRED_NOT };

struct rbac_pred {
    enum rbac_pred_kind kind;
    /* SINGLE: the input and either a string matcher (value_match) or CIDR
     * ranges (custom_match envoy.extensions.matching.input_matchers.ip.v3.Ip) */
    struct rbac_input in;
    bool is_ip;
    struct rbac_str_matcher str;
    struct rbac_cidr *cidrs;
    size_t ncidrs;
    struct rbac_pred **subs;      /* OR, AND (two or more), NOT (one) */
    size_t nsubs;
};

struct rbac_xmatcher;

/* xds.type.matcher.v3.Matcher.OnMatch: an action or a nested matcher. */
struct rbac_on_match {
    bool set;
    struct rbac_xmatcher *matcher;
    char *action_name;            /* Action.name: the "effective policy" of a match */
    enum rbac_action action;
    bool keep_matching;           /* the action is skipped and matching goes on */
};

enum rbac_xm_kind {
    RBAC_XM_LIST = 0,             /* matcher_list: the first predicate that matches */
    RBAC_XM_EXACT,                /* matcher_tree.exact_match_map on one input */
    RBAC_XM_PREFIX,               /* matcher_tree.prefix_match_map: the longest prefix first */
    RBAC_XM_NONE,                 /* only on_no_match */
};

struct rbac_xm_field {
    struct rbac_pred *pred;
    struct rbac_on_match on_match;
};

struct rbac_xm_entry {
    char *key;
    struct rbac_on_match on_match;
};

struct rbac_xmatcher {
    enum rbac_xm_kind kind;
    struct rbac_xm_field *fields; /* LIST */
    size_t nfields;
    struct rbac_input in;         /* EXACT, PREFIX */
    struct rbac_xm_entry *entries;/* PREFIX: sorted longest key first */
    size_t nentries;
    struct rbac_on_match on_no_match;
};

struct rbac_pred *rbac_pred_new(enum rbac_pred_kind kind);
void rbac_pred_add(struct rbac_pred *p, struct rbac_pred *sub); /* takes sub */
void rbac_pred_free(struct rbac_pred *p);
bool rbac_pred_match(const struct rbac_pred *p, const struct rbac_ctx *ctx);

struct rbac_xmatcher *rbac_xmatcher_new(enum rbac_xm_kind kind);
/* Room for one more list field / tree entry, zeroed; pointers into the
 * arrays move on the next call. */
struct rbac_xm_field *rbac_xmatcher_add_field(struct rbac_xmatcher *m);
struct rbac_xm_entry *rbac_xmatcher_add_entry(struct rbac_xmatcher *m, const char *key);
/* Sorts a prefix map's keys, longest first; call once after the last add. */
void rbac_xmatcher_finish(struct rbac_xmatcher *m);
void rbac_xmatcher_free(struct rbac_xmatcher *m);
void rbac_on_match_fini(struct rbac_on_match *om);

/* The action the tree arrives at, or NULL (no match: RBAC denies). A nested
 * matcher that finds nothing counts as no match at its level, so matching
 * goes on with the next predicate or key, then on_no_match (the xDS rule). */
const struct rbac_on_match *rbac_xmatch(const struct rbac_xmatcher *m, const struct rbac_ctx *ctx);
/* Whether any action in the tree is LOG (then every decision sets the
 * access_log_hint, as Envoy does). */
bool rbac_xmatcher_has_log(const struct rbac_xmatcher *m);

#endif
