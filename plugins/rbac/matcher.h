/* rbac: the policy engine shared by envoy.filters.http.rbac and
 * envoy.filters.network.rbac (envoy.config.rbac.v3.RBAC).
 *
 * matcher.c is pure: it builds rule trees and evaluates them against a
 * struct rbac_ctx that the filter fills from its stream or connection; it
 * knows nothing of the core (only libc and PCRE2), so t/unit/test_rbac.c
 * links it alone. config.c turns the config tree into these structures and
 * holds the schemas of both filters. */
#ifndef HERALD_PLUGIN_RBAC_MATCHER_H
#define HERALD_PLUGIN_RBAC_MATCHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "herald/config.h"

/* ---------------------------------------------------------------- strings
 * envoy.type.matcher.v3.StringMatcher. safe_regex must match the whole value. */
enum rbac_str_kind {
    RBAC_STR_EXACT = 0,
    RBAC_STR_PREFIX,
    RBAC_STR_SUFFIX,
    RBAC_STR_CONTAINS,
    RBAC_STR_REGEX,
};

struct rbac_str_matcher {
    enum rbac_str_kind kind;
    char *value;
    bool ignore_case;
    void *re;                          /* pcre2_code * for RBAC_STR_REGEX */
};

/* 0, or -1 with a malloc'd *err (a regex that does not compile, with the offset). */
int rbac_str_init(struct rbac_str_matcher *m, enum rbac_str_kind kind, const char *value, bool ignore_case,
                  char **err);
void rbac_str_fini(struct rbac_str_matcher *m);
bool rbac_str_match(const struct rbac_str_matcher *m, const char *s);
/* s is len bytes and may hold NUL bytes (a certificate's SAN): they are
 * compared like any other byte, never taken for the end. */
bool rbac_str_match_n(const struct rbac_str_matcher *m, const char *s, size_t len);

/* ---------------------------------------------------------------- headers
 * envoy.config.route.v3.HeaderMatcher. Several values of one header are
 * matched joined with ",", as Envoy does. */
enum rbac_hdr_kind { RBAC_HDR_STRING = 0, RBAC_HDR_PRESENT, RBAC_HDR_RANGE };

struct rbac_header_matcher {
    char *name;
    enum rbac_hdr_kind kind;
    struct rbac_str_matcher str;       /* STRING */
    bool present;                      /* PRESENT: present_match's value */
    int64_t range_start, range_end;    /* RANGE: [start, end) */
    bool invert;
    bool missing_as_empty;             /* treat_missing_header_as_empty */
};

/* ---------------------------------------------------------------- addresses */
struct rbac_ip {
    int family;                        /* AF_INET, AF_INET6; 0: unknown */
    uint8_t addr[16];
    uint16_t port;                     /* host order; 0: unknown */
};

struct rbac_cidr {
    int family;
    uint8_t addr[16];
    unsigned prefix_len;
};

/* "1.2.3.4", "::1" (no port). 0 / -1. */
int rbac_ip_parse(struct rbac_ip *ip, const char *s);
/* AF_INET/AF_INET6 sockaddrs (v4-mapped v6 becomes v4); 0 / -1. */
int rbac_ip_from_sockaddr(struct rbac_ip *ip, const struct sockaddr *sa);
/* CidrRange{address_prefix, prefix_len}; prefix_len < 0: the full length.
 * Bits past the prefix are ignored, as Envoy does. 0, or -1 with *err. */
int rbac_cidr_init(struct rbac_cidr *c, const char *address_prefix, int64_t prefix_len, char **err);
bool rbac_cidr_match(const struct rbac_cidr *c, const struct rbac_ip *ip);

/* ---------------------------------------------------------------- rules
 * One node type for Permission and Principal: and/or/not, header and
 * url_path are shared; the rest is the one or the other. */
enum rbac_rule_kind {
    RBAC_ANY = 0,
    RBAC_AND,                  /* and_rules / and_ids */
    RBAC_OR,                   /* or_rules / or_ids */
    RBAC_NOT,                  /* not_rule / not_id: subs[0] */
    RBAC_HEADER,
    RBAC_URL_PATH,             /* the :path without query and fragment */
    RBAC_DST_IP,               /* Permission.destination_ip */
    RBAC_DST_PORT,             /* Permission.destination_port, destination_port_range: [lo, hi] */
    RBAC_SNI,                  /* Permission.requested_server_name */
    RBAC_REMOTE_IP,            /* Principal.remote_ip (the client as the HCM decided it) */
    RBAC_DIRECT_REMOTE_IP,     /* Principal.direct_remote_ip, source_ip (the socket's peer) */
    RBAC_METADATA,             /* Permission.metadata: envoy.type.matcher.v3.MetadataMatcher */
    RBAC_AUTHENTICATED,        /* Principal.authenticated: the TLS peer's certificate */
};

/* MetadataMatcher over the SDK's string metadata: filter = namespace, a
 * one-key path, and a value matcher. A value is a string; list_match treats
 * it as a comma-separated list (how mysql_proxy publishes {table: [ops]}). */
enum rbac_md_kind { RBAC_MD_STRING = 0, RBAC_MD_LIST, RBAC_MD_PRESENT };

struct rbac_md_matcher {
    char *filter;
    char *key;
    enum rbac_md_kind kind;
    struct rbac_str_matcher str;       /* STRING, LIST (one_of.string_match) */
    bool present;                      /* PRESENT */
    bool invert;
};

struct rbac_rule {
    enum rbac_rule_kind kind;
    struct rbac_rule **subs;
    size_t nsubs;
    struct rbac_header_matcher hdr;    /* HEADER */
    struct rbac_str_matcher str;       /* URL_PATH, SNI */
    struct rbac_cidr cidr;             /* DST_IP, REMOTE_IP, DIRECT_REMOTE_IP */
    uint32_t port_lo, port_hi;         /* DST_PORT, inclusive */
    struct rbac_md_matcher md;         /* METADATA */
    bool has_name;                     /* AUTHENTICATED: principal_name is set (in str) */
};

struct rbac_rule *rbac_rule_new(enum rbac_rule_kind kind);
void rbac_rule_add(struct rbac_rule *r, struct rbac_rule *sub); /* takes sub */
void rbac_rule_free(struct rbac_rule *r);

/* ---------------------------------------------------------------- engines */
enum rbac_action { RBAC_ALLOW = 0, RBAC_DENY, RBAC_LOG };

struct cel_expr;                       /* cel.h */

struct rbac_policy {
    char *name;
    struct cel_expr *condition;        /* NULL: none; else it must be true too */
    struct rbac_rule **perms;
    size_t nperms;
    struct rbac_rule **ids;
    size_t nids;
};

struct rbac_xmatcher;                  /* xmatcher.h */

/* Policies, or (matcher / shadow_matcher) a unified matcher tree. */
struct rbac_engine {
    enum rbac_action action;
    struct rbac_policy *policies;      /* sorted by name once finished (Envoy keeps a std::map) */
    size_t npolicies;
    struct rbac_xmatcher *tree;        /* set: policies are unused, action too */
    bool tree_logs;                    /* some action in the tree is LOG */
};

/* What a request or connection offers to the rules. Everything may be
 * absent (NULL): a rule about it then does not match. */
struct rbac_ctx {
    /* the value of a request header (several joined with ","), malloc'd; NULL: absent */
    char *(*header)(void *arg, const char *name);
    void *arg;
    const char *path;                  /* :path, with its query */
    /* the first value of a query parameter, decoded, malloc'd; NULL: absent (or no request) */
    char *(*query)(const char *path, const char *name);
    const struct rbac_ip *remote;      /* remote_ip */
    const struct rbac_ip *direct_remote;
    const struct rbac_ip *local;       /* destination_ip / destination_port */
    const char *sni;
    /* dynamic metadata: the string under ns/key, or NULL */
    const char *(*metadata)(void *md_arg, const char *ns, const char *key);
    void *md_arg;
    /* authenticated: whether the downstream connection is TLS, and its peer
     * certificate's names of one kind (an enum rbac_cert_name), each handed
     * to fn until fn returns true (then true); false when there is no
     * certificate. Only asked when a rule needs them. */
    bool tls;
    bool (*peer_names)(void *peer_arg, int which, bool (*fn)(void *arg, const char *v, size_t len), void *arg);
    void *peer_arg;
};

/* The kinds of names peer_names hands over. */
enum rbac_cert_name { RBAC_CERT_SUBJECT = 0, RBAC_CERT_URI_SAN, RBAC_CERT_DNS_SAN };
/* peer.c: a peer_names over herald_conn_peer_cert_names; peer_arg is the
 * struct herald_conn (not in the unit tests, which bring their own). */
bool rbac_peer_names(void *conn, int which, bool (*fn)(void *arg, const char *v, size_t len), void *arg);

bool rbac_md_match(const struct rbac_md_matcher *m, const struct rbac_ctx *ctx);

struct rbac_engine *rbac_engine_new(enum rbac_action action);
/* An engine over a matcher tree (takes it). */
struct rbac_engine *rbac_engine_new_tree(struct rbac_xmatcher *tree);
struct rbac_policy *rbac_engine_add_policy(struct rbac_engine *e, const char *name);
void rbac_policy_add_permission(struct rbac_policy *p, struct rbac_rule *r); /* takes r */
void rbac_policy_add_principal(struct rbac_policy *p, struct rbac_rule *r);  /* takes r */
/* Sorts the policies; call once after the last add (policy pointers move). */
void rbac_engine_finish(struct rbac_engine *e);
void rbac_engine_free(struct rbac_engine *e);

bool rbac_rule_match(const struct rbac_rule *r, const struct rbac_ctx *ctx);
/* The first policy (by name) whose permissions and principals both match, or NULL. */
const struct rbac_policy *rbac_engine_match(const struct rbac_engine *e, const struct rbac_ctx *ctx);
/* ALLOW: allowed iff a policy matched; DENY: allowed iff none did; LOG:
 * always. *policy: the matched policy's name, or NULL. */
bool rbac_engine_allowed(const struct rbac_engine *e, const struct rbac_ctx *ctx, const char **policy);

/* The whole decision: allowed, the effective policy (a policy's name, or the
 * matched Action's name with a tree; NULL: none) and the access_log_hint to
 * publish (-1: none; rules with action LOG, or a tree with a LOG action,
 * set it on every decision: 1 when logged). A tree that matches nothing
 * denies, as Envoy's matcher engine does. */
struct rbac_verdict {
    bool allowed;
    const char *policy;
    int log_hint;
};
void rbac_engine_decide(const struct rbac_engine *e, const struct rbac_ctx *ctx, struct rbac_verdict *v);
const char *rbac_action_name(enum rbac_action a);

/* ---------------------------------------------------------------- config.c
 * The schemas and the config tree -> engine step, shared by both filters. */
extern const struct herald_message rbac_http_schema;
extern const struct herald_message rbac_per_route_schema; /* ...http.rbac.v3.RBACPerRoute */    /* envoy.extensions.filters.http.rbac.v3.RBAC */
extern const struct herald_message rbac_network_schema; /* envoy.extensions.filters.network.rbac.v3.RBAC */

/* An envoy.config.rbac.v3.RBAC node -> engine; NULL with *err (via
 * herald_cfg_errorf) on a bad regex or address. */
struct rbac_engine *rbac_engine_from_cfg(const struct herald_cfg *rules, char **err);
/* StringMatcher and CidrRange nodes, shared with xmatcher_config.c; 0 or -1 with *err. */
extern const struct herald_field rbac_string_matcher_fields[];
extern const struct herald_message rbac_cidr_msg;
int rbac_str_from_cfg(struct rbac_str_matcher *m, const struct herald_cfg *n, char **err);
int rbac_cidr_from_cfg(struct rbac_cidr *c, const struct herald_cfg *n, char **err);

/* xmatcher_config.c: the schema of xds.type.matcher.v3.Matcher as RBAC uses
 * it, and a matcher / shadow_matcher node -> engine. http: HTTP inputs are
 * allowed (the HTTP filter); the network filter refuses them. */
extern const struct herald_message rbac_xds_matcher_msg;
/* cel_config.c: a policy's condition (google.api.expr.v1alpha1.Expr). */
extern const struct herald_message rbac_cel_expr_msg;
struct cel_expr *rbac_cel_from_cfg(const struct herald_cfg *condition, char **err);
struct rbac_engine *rbac_engine_from_matcher(const struct herald_cfg *matcher, bool http, char **err);
/* The counter prefix.(a + b): Envoy's rbac stats put the rules' own prefix
 * before the name (rules_stat_prefix + "allowed"). */
struct herald_stat *rbac_counter(const char *prefix, const char *a, const char *b);
/* "a.b" + "." + "c" without doubled dots; malloc'd. */
char *rbac_join_prefix(const char *a, const char *b);

#endif
