/* The route table: building it from RouteConfiguration YAML (schema check +
 * route_table_create), virtual host and route selection, the SDK accessors
 * (clusters, rewrites, header mutations, redirects, direct responses, retry
 * policies), and the errors and warnings --mode validate shows. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "config/schema.h"
#include "config/tree.h"
#include "http/route.h"
#include "tap.h"

struct built {
    struct cfg_doc *doc;
    struct route_table *t;
    struct cfg_diag d;
};

/* Loads a RouteConfiguration from YAML text; b->t is NULL on any error. */
static void build(struct built *b, const char *yaml)
{
    char *err = NULL;
    memset(b, 0, sizeof(*b));
    b->doc = cfg_load_string(yaml, strlen(yaml), "routes.yaml", &err);
    if (!b->doc) {
        printf("# parse error: %s\n", err);
        free(err);
        return;
    }
    if (schema_check(b->doc->root, &schema_route_configuration, &b->d) == 0)
        b->t = route_table_create(b->doc->root, &b->d);
    for (size_t i = 0; i < b->d.nerrors; i++)
        printf("# error: %s\n", b->d.errors[i]);
}

static void unbuild(struct built *b)
{
    route_table_free(b->t);
    cfg_doc_free(b->doc);
    diag_free(&b->d);
}

static struct herald_headers *req3(const char *authority, const char *path, const char *method)
{
    struct herald_headers *h = herald_headers_new();
    herald_headers_add(h, ":method", method ? method : "GET");
    herald_headers_add(h, ":path", path);
    herald_headers_add(h, ":authority", authority);
    return h;
}

/* The matched route's name for a GET of path at authority ("-" for no route). */
static const char *match_name(const struct route_table *t, const char *authority, const char *path)
{
    struct herald_headers *h = req3(authority, path, NULL);
    const struct herald_route *r = route_table_match(t, h, 0);
    herald_headers_free(h);
    return r ? herald_route_name(r) : "-";
}

static const char *match_vhost(const struct route_table *t, const char *authority)
{
    struct herald_headers *h = req3(authority, "/", NULL);
    const struct herald_route *r = route_table_match(t, h, 0);
    herald_headers_free(h);
    return r ? herald_route_vhost_name(r) : "-";
}

/* The first error of a config that must fail. */
static void fails(const char *test, const char *yaml, const char *where, const char *want)
{
    struct built b;
    build(&b, yaml);
    ok(b.t == NULL, "%s: rejected", test);
    const char *first = b.d.nerrors ? b.d.errors[0] : NULL;
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "routes.yaml:%s", where);
    ok(first && strncmp(first, prefix, strlen(prefix)) == 0, "%s: at %s", test, prefix);
    like(first, want, "%s: message", test);
    unbuild(&b);
}

static void test_vhosts(void)
{
    struct built b;
    build(&b,
          "virtual_hosts:\n"
          "- name: exact\n"
          "  domains: [example.com, Other.COM]\n"
          "  routes: [{match: {prefix: /}, direct_response: {status: 200}}]\n"
          "- name: suffix_long\n"
          "  domains: ['*.api.example.com']\n"
          "  routes: [{match: {prefix: /}, direct_response: {status: 200}}]\n"
          "- name: suffix\n"
          "  domains: ['*.example.com']\n"
          "  routes: [{match: {prefix: /}, direct_response: {status: 200}}]\n"
          "- name: prefix\n"
          "  domains: ['example.*', 'examp*']\n"
          "  routes: [{match: {prefix: /}, direct_response: {status: 200}}]\n"
          "- name: any\n"
          "  domains: ['*']\n"
          "  routes: [{match: {prefix: /}, direct_response: {status: 200}}]\n");
    ok(b.t != NULL, "vhosts: built");
    if (b.t) {
        is_str(match_vhost(b.t, "example.com"), "exact", "exact domain");
        is_str(match_vhost(b.t, "EXAMPLE.com"), "exact", "exact, case-insensitive");
        is_str(match_vhost(b.t, "other.com"), "exact", "exact domain written in capitals");
        is_str(match_vhost(b.t, "example.com:8080"), "exact", "port stripped when no domain has one");
        is_str(match_vhost(b.t, "x.api.example.com"), "suffix_long", "longest suffix wildcard first");
        is_str(match_vhost(b.t, "a.example.com"), "suffix", "suffix wildcard");
        is_str(match_vhost(b.t, "a.example.com:443"), "suffix", "suffix wildcard with a port");
        is_str(match_vhost(b.t, "api.example.com"), "suffix", "'*.api.example.com' needs something for '*'");
        is_str(match_vhost(b.t, "example.org"), "prefix", "prefix wildcard after the suffixes");
        is_str(match_vhost(b.t, "exampleX"), "prefix", "shorter prefix wildcard");
        is_str(match_vhost(b.t, "nothing.net"), "any", "catch-all last");
        is_str(match_vhost(b.t, "[::1]:80"), "any", "IPv6 authority");
        struct herald_headers *h = req3("nothing.net", "/", NULL);
        ok(route_table_vhost_found(b.t, h), "vhost_found with a catch-all");
        herald_headers_free(h);
    }
    unbuild(&b);

    /* a domain with a port: the host is matched with its port */
    build(&b,
          "virtual_hosts:\n"
          "- {name: p8080, domains: ['example.com:8080'], routes: [{match: {prefix: /}, "
          "direct_response: {status: 200}}]}\n"
          "- {name: plain, domains: ['example.com'], routes: [{match: {prefix: /}, "
          "direct_response: {status: 200}}]}\n");
    ok(b.t != NULL, "vhosts with ports: built");
    if (b.t) {
        is_str(match_vhost(b.t, "example.com:8080"), "p8080", "host:port matches the domain with that port");
        is_str(match_vhost(b.t, "example.com"), "plain", "host without port");
        is_str(match_vhost(b.t, "example.com:9090"), "-", "another port matches nothing");
        struct herald_headers *h = req3("nope.com", "/", NULL);
        ok(!route_table_vhost_found(b.t, h), "vhost_found: no vhost");
        ok(route_table_match(b.t, h, 0) == NULL, "no vhost: no route");
        herald_headers_free(h);
    }
    unbuild(&b);

    build(&b,
          "ignore_port_in_host_matching: true\n"
          "virtual_hosts:\n"
          "- {name: p, domains: ['example.com:8080', 'example.com'], routes: [{match: {prefix: /}, "
          "direct_response: {status: 200}}]}\n");
    is_str(b.t ? match_vhost(b.t, "example.com:9090") : NULL, "p", "ignore_port_in_host_matching");
    unbuild(&b);

    fails("duplicate domain",
          "virtual_hosts:\n"
          "- {name: a, domains: [example.com], routes: []}\n"
          "- name: b\n"
          "  domains: [x.com, Example.com]\n",
          "4:", "domain 'Example.com' is already in virtual host 'a' (line 2)");
    fails("two catch-alls",
          "virtual_hosts:\n"
          "- {name: a, domains: ['*']}\n"
          "- {name: b, domains: ['*']}\n",
          "3:", "only one virtual host may have the domain \"*\": virtual host 'a' (line 2)");
}

static void test_path_matching(void)
{
    struct built b;
    build(&b,
          "virtual_hosts:\n"
          "- name: vh\n"
          "  domains: ['*']\n"
          "  routes:\n"
          "  - {name: exact, match: {path: /exact}, direct_response: {status: 200}}\n"
          "  - {name: icase, match: {prefix: /CaSe, case_sensitive: false}, direct_response: {status: 200}}\n"
          "  - {name: regex, match: {safe_regex: {regex: '/re/[0-9]+'}}, direct_response: {status: 200}}\n"
          "  - {name: sep, match: {path_separated_prefix: /api}, direct_response: {status: 200}}\n"
          "  - {name: prefix, match: {prefix: /p}, direct_response: {status: 200}}\n"
          "  - {name: first, match: {prefix: /f}, direct_response: {status: 200}}\n"
          "  - {name: second, match: {prefix: /fo}, direct_response: {status: 200}}\n");
    ok(b.t != NULL, "paths: built");
    if (b.t) {
        is_str(match_name(b.t, "h", "/exact"), "exact", "path");
        is_str(match_name(b.t, "h", "/exact?x=1"), "exact", "path ignores the query");
        is_str(match_name(b.t, "h", "/exact/"), "-", "path is exact");
        is_str(match_name(b.t, "h", "/EXACT"), "-", "path is case-sensitive by default");
        is_str(match_name(b.t, "h", "/case/x"), "icase", "case_sensitive false");
        is_str(match_name(b.t, "h", "/re/123"), "regex", "safe_regex");
        is_str(match_name(b.t, "h", "/re/123?q=a"), "regex", "safe_regex without the query");
        is_str(match_name(b.t, "h", "/re/123x"), "-", "safe_regex must match the whole path");
        is_str(match_name(b.t, "h", "/x/re/1"), "-", "safe_regex is anchored at the start");
        is_str(match_name(b.t, "h", "/api"), "sep", "path_separated_prefix: the prefix itself");
        is_str(match_name(b.t, "h", "/api/v1"), "sep", "path_separated_prefix: below it");
        is_str(match_name(b.t, "h", "/api?x"), "sep", "path_separated_prefix: with a query");
        is_str(match_name(b.t, "h", "/apix"), "-", "path_separated_prefix: not a segment");
        is_str(match_name(b.t, "h", "/pq"), "prefix", "prefix");
        is_str(match_name(b.t, "h", "/foo"), "first", "first match wins");
    }
    unbuild(&b);
}

static const char *match_req(const struct route_table *t, struct herald_headers *h)
{
    const struct herald_route *r = route_table_match(t, h, 0);
    herald_headers_free(h);
    return r ? herald_route_name(r) : "-";
}

static struct herald_headers *with(const char *path, const char *name, const char *value)
{
    struct herald_headers *h = req3("h", path, NULL);
    if (name)
        herald_headers_add(h, name, value);
    return h;
}

static void test_header_query_matching(void)
{
    struct built b;
    build(&b,
          "virtual_hosts:\n"
          "- name: vh\n"
          "  domains: ['*']\n"
          "  routes:\n"
          "  - name: exact\n"
          "    match: {prefix: /h/exact, headers: [{name: X-Env, exact_match: prod}]}\n"
          "    direct_response: {status: 200}\n"
          "  - name: sm\n"
          "    match: {prefix: /h/sm, headers: [{name: x-env, string_match: {prefix: Pro, ignore_case: "
          "true}}]}\n"
          "    direct_response: {status: 200}\n"
          "  - name: regex\n"
          "    match: {prefix: /h/re, headers: [{name: x-v, safe_regex_match: {regex: 'v[0-9]'}}]}\n"
          "    direct_response: {status: 200}\n"
          "  - name: present\n"
          "    match: {prefix: /h/present, headers: [{name: x-p, present_match: true}]}\n"
          "    direct_response: {status: 200}\n"
          "  - name: absent\n"
          "    match: {prefix: /h/absent, headers: [{name: x-p, present_match: false}]}\n"
          "    direct_response: {status: 200}\n"
          "  - name: invert\n"
          "    match: {prefix: /h/invert, headers: [{name: x-env, string_match: {exact: prod}, "
          "invert_match: true}]}\n"
          "    direct_response: {status: 200}\n"
          "  - name: empty\n"
          "    match:\n"
          "      prefix: /h/empty\n"
          "      headers: [{name: x-e, string_match: {exact: ''}, treat_missing_header_as_empty: true}]\n"
          "    direct_response: {status: 200}\n"
          "  - name: contains\n"
          "    match: {prefix: /h/contains, headers: [{name: x-c, contains_match: mid}, "
          "{name: x-s, suffix_match: end}]}\n"
          "    direct_response: {status: 200}\n"
          "  - name: qexact\n"
          "    match: {prefix: /q, query_parameters: [{name: debug, string_match: {exact: 'a b'}}]}\n"
          "    direct_response: {status: 200}\n"
          "  - name: qpresent\n"
          "    match: {prefix: /q, query_parameters: [{name: flag, present_match: true}]}\n"
          "    direct_response: {status: 200}\n"
          "  - name: method\n"
          "    match: {prefix: /m, headers: [{name: ':method', string_match: {exact: POST}}]}\n"
          "    direct_response: {status: 200}\n"
          "  - name: grpc\n"
          "    match: {prefix: /svc.Greeter/, grpc: {}}\n"
          "    direct_response: {status: 200}\n");
    ok(b.t != NULL, "matchers: built");
    if (!b.t) {
        unbuild(&b);
        return;
    }
    int warned = 0;
    for (size_t i = 0; i < b.d.nwarnings; i++)
        warned += strstr(b.d.warnings[i], "'exact_match' is deprecated") != NULL;
    ok(warned == 1, "exact_match is accepted with a deprecation warning");
    is_str(match_req(b.t, with("/h/exact", "x-env", "prod")), "exact", "exact_match");
    is_str(match_req(b.t, with("/h/exact", "x-env", "dev")), "-", "exact_match, other value");
    is_str(match_req(b.t, with("/h/exact", NULL, NULL)), "-", "exact_match, header absent");
    is_str(match_req(b.t, with("/h/sm", "x-env", "PRODUCTION")), "sm", "string_match prefix ignore_case");
    is_str(match_req(b.t, with("/h/re", "x-v", "v2")), "regex", "safe_regex_match");
    is_str(match_req(b.t, with("/h/re", "x-v", "v22")), "-", "safe_regex_match is a full match");
    is_str(match_req(b.t, with("/h/present", "x-p", "")), "present", "present_match true");
    is_str(match_req(b.t, with("/h/present", NULL, NULL)), "-", "present_match true, absent");
    is_str(match_req(b.t, with("/h/absent", NULL, NULL)), "absent", "present_match false, absent");
    is_str(match_req(b.t, with("/h/absent", "x-p", "1")), "-", "present_match false, present");
    is_str(match_req(b.t, with("/h/invert", "x-env", "dev")), "invert", "invert_match, other value");
    is_str(match_req(b.t, with("/h/invert", "x-env", "prod")), "-", "invert_match, the value");
    is_str(match_req(b.t, with("/h/invert", NULL, NULL)), "-",
           "invert_match, absent header (Envoy: no match)");
    is_str(match_req(b.t, with("/h/empty", NULL, NULL)), "empty", "treat_missing_header_as_empty");
    struct herald_headers *h = with("/h/contains", "x-c", "a-mid-b");
    herald_headers_add(h, "x-s", "the end");
    is_str(match_req(b.t, h), "contains", "contains_match and suffix_match (all must hold)");
    is_str(match_req(b.t, with("/h/contains", "x-c", "a-mid-b")), "-", "one header of two missing");
    h = with("/h/exact", "x-env", "prod");
    herald_headers_add(h, "x-env", "dev");
    is_str(match_req(b.t, h), "-", "several values are joined with ',' before matching");
    is_str(match_req(b.t, with("/q?debug=a%20b", NULL, NULL)), "qexact", "query string_match (decoded)");
    is_str(match_req(b.t, with("/q?x=1&flag", NULL, NULL)), "qpresent", "query present_match");
    is_str(match_req(b.t, with("/q?debug=ab", NULL, NULL)), "-", "query no match");
    h = req3("h", "/m", "POST");
    is_str(match_req(b.t, h), "method", "a pseudo-header matcher (:method)");
    is_str(match_req(b.t, req3("h", "/m", "GET")), "-", ":method other value");
    is_str(match_req(b.t, with("/svc.Greeter/Hi", "content-type", "application/grpc")), "grpc",
           "grpc: application/grpc");
    is_str(match_req(b.t, with("/svc.Greeter/Hi", "content-type", "application/grpc+proto")), "grpc",
           "grpc: application/grpc+proto");
    is_str(match_req(b.t, with("/svc.Greeter/Hi", "content-type", "application/grpc-web")), "-",
           "grpc: not application/grpc-web");
    is_str(match_req(b.t, with("/svc.Greeter/Hi", "content-type", "application/json")), "-",
           "grpc: not another content-type");
    is_str(match_req(b.t, with("/svc.Greeter/Hi", NULL, NULL)), "-", "grpc: not without a content-type");
    unbuild(&b);
}

static void test_shadow_warnings(void)
{
    struct built b;
    /* the walkthrough's routes, as in etc/examples/walkthrough-traffic-split.yaml */
    build(&b,
          "name: football_sidecar_http_route_config\n"  /* 1 */
          "virtual_hosts:\n"                            /* 2 */
          "- name: football_sidecar_virtual_host\n"     /* 3 */
          "  domains:\n"                                /* 4 */
          "  - \"*\"\n"                                 /* 5 */
          "  routes:\n"                                 /* 6 */
          "  - match:\n"                                /* 7 */
          "      prefix: \"/\"\n"                       /* 8 */
          "    route:\n"                                /* 9 */
          "      cluster: allbackend_cluster\n"         /* 10 */
          "  - match: { prefix: \"/app1\" }\n"          /* 11 */
          "    route:\n"
          "      cluster: app1_cluster\n"
          "  - match: { prefix: \"/app2\" }\n"          /* 14 */
          "    route:\n"
          "      cluster: app2_cluster\n");
    ok(b.t != NULL, "walkthrough: shadowing is a warning, not an error");
    is_int(b.d.nwarnings, 2, "walkthrough: two warnings");
    if (b.d.nwarnings == 2) {
        is_str(b.d.warnings[0], "routes.yaml:11:5: virtual_hosts[0].routes[1]: route with prefix \"/app1\" "
               "(line 11) can never match: route with prefix \"/\" (line 7) before it matches every "
               "path it would",
               "walkthrough: first warning");
        like(b.d.warnings[1], "route with prefix \"/app2\" (line 14) can never match: route with prefix "
        "\"/\" "
             "(line 7) before it", "walkthrough: second warning");
    }
    unbuild(&b);

    build(&b,
          "virtual_hosts:\n"
          "- name: vh\n"
          "  domains: ['*']\n"
          "  routes:\n"
          "  - {name: api, match: {prefix: /api}, route: {cluster: a}}\n"
          "  - {name: api-v1, match: {path: /api/v1}, route: {cluster: b}}\n"
          "  - {name: hdr, match: {prefix: /h, headers: [{name: x, present_match: true}]}, route: "
          "{cluster: c}}\n"
          "  - {name: h2, match: {prefix: /h2}, route: {cluster: c}}\n"
          "  - {name: sep, match: {path_separated_prefix: /s}, route: {cluster: c}}\n"
          "  - {name: sx, match: {prefix: /sx}, route: {cluster: c}}\n"
          "  - {name: s-sub, match: {prefix: /s/x}, route: {cluster: c}}\n"
          "  - {name: ci, match: {prefix: /API/x, case_sensitive: false}, route: {cluster: c}}\n");
    ok(b.t != NULL, "shadow cases: built");
    is_int(b.d.nwarnings, 2, "shadow cases: two warnings");
    if (b.d.nwarnings == 2) {
        like(b.d.warnings[0], "route 'api-v1' (line 6) can never match: route 'api' (line 5)",
             "named routes");
        like(b.d.warnings[1], "route 's-sub' (line 11) can never match: route 'sep' (line 9)",
             "path_separated_prefix covers a prefix below it");
    }
    unbuild(&b);
}

static void test_weighted(void)
{
    struct built b;
    build(&b,
          "virtual_hosts:\n"
          "- name: vh\n"
          "  domains: ['*']\n"
          "  routes:\n"
          "  - name: split\n"
          "    match: {prefix: /}\n"
          "    route:\n"
          "      weighted_clusters:\n"
          "        clusters:\n"
          "        - {name: a, weight: 25, request_headers_to_add: [{header: {key: x-w, value: a}}]}\n"
          "        - {name: b, weight: 75, host_rewrite_literal: b.internal}\n");
    ok(b.t != NULL, "weighted: built");
    if (!b.t) {
        unbuild(&b);
        return;
    }
    int na = 0, nb = 0, consistent = 1;
    for (uint64_t rnd = 0; rnd < 100; rnd++) {
        struct herald_headers *h = req3("h", "/", NULL);
        const struct herald_route *r = route_table_match(b.t, h, rnd);
        const char *c = r ? herald_route_cluster(r, h, 12345) : NULL;
        if (c && strcmp(c, "a") == 0)
            na++;
        else if (c && strcmp(c, "b") == 0)
            nb++;
        if (!r || strcmp(herald_route_name(r), "split") != 0 || herald_route_kind(r) != HERALD_ROUTE_FORWARD)
            consistent = 0;
        if (rnd == 0 || rnd == 99) {
            herald_route_apply_request(r, h, NULL);
            if (rnd == 0)
                is_str(herald_headers_get(h, "x-w"), "a", "weighted: the picked cluster's headers");
            else
                is_str(herald_headers_get(h, ":authority"), "b.internal",
                       "weighted: the cluster's host rewrite");
        }
        herald_headers_free(h);
    }
    is_int(na, 25, "weighted: 25 of random 0..99 go to a");
    is_int(nb, 75, "weighted: 75 go to b");
    ok(consistent, "weighted: the entry keeps the route's name and kind");
    unbuild(&b);

    fails("zero weights",
          "virtual_hosts:\n"
          "- name: vh\n"
          "  domains: ['*']\n"
          "  routes:\n"
          "  - match: {prefix: /}\n"
          "    route: {weighted_clusters: {clusters: [{name: a, weight: 0}]}}\n",
          "6:", "the sum of the cluster weights must be greater than 0");
}

static char *rewritten(const struct route_table *t, const char *authority, const char *path,
                       const char *upstream_host, char **host_out)
{
    struct herald_headers *h = req3(authority, path, NULL);
    const struct herald_route *r = route_table_match(t, h, 0);
    char *out = NULL;
    if (r) {
        herald_route_apply_request(r, h, upstream_host);
        out = strdup(herald_headers_get(h, ":path"));
        if (host_out)
            *host_out = strdup(herald_headers_get(h, ":authority"));
    }
    herald_headers_free(h);
    return out;
}

static void test_rewrites(void)
{
    struct built b;
    build(&b,
          "virtual_hosts:\n"
          "- name: vh\n"
          "  domains: ['*']\n"
          "  routes:\n"
          "  - match: {prefix: /app1/}\n"
          "    route: {cluster: c, prefix_rewrite: /, host_rewrite_literal: app1.local}\n"
          "  - match: {prefix: /v1}\n"
          "    route: {cluster: c, prefix_rewrite: /v2}\n"
          "  - match: {path: /old}\n"
          "    route: {cluster: c, prefix_rewrite: /new}\n"
          "  - match: {prefix: /re/}\n"
          "    route:\n"
          "      cluster: c\n"
          "      regex_rewrite: {pattern: {regex: '^/re/([^/]+)/(.*)$'}, substitution: '/\\2/\\1'}\n"
          "  - match: {prefix: /all}\n"
          "    route:\n"
          "      cluster: c\n"
          "      regex_rewrite: {pattern: {regex: 'o'}, substitution: '0'}\n"
          "  - match: {prefix: /auto}\n"
          "    route: {cluster: c, auto_host_rewrite: true}\n"
          "  - match: {prefix: /hh}\n"
          "    route: {cluster: c, host_rewrite_header: x-host, append_x_forwarded_host: true}\n");
    ok(b.t != NULL, "rewrites: built");
    if (!b.t) {
        unbuild(&b);
        return;
    }
    char *host = NULL, *p;
    p = rewritten(b.t, "front", "/app1/x/y?q=1", NULL, &host);
    is_str(p, "/x/y?q=1", "prefix_rewrite replaces the matched prefix, keeps the query");
    is_str(host, "app1.local", "host_rewrite_literal");
    free(p);
    free(host);
    p = rewritten(b.t, "front", "/v1/users", NULL, NULL);
    is_str(p, "/v2/users", "prefix_rewrite /v1 -> /v2");
    free(p);
    p = rewritten(b.t, "front", "/old?a=b", NULL, NULL);
    is_str(p, "/new?a=b", "prefix_rewrite on a path match");
    free(p);
    p = rewritten(b.t, "front", "/re/abc/d/e?z", NULL, NULL);
    is_str(p, "/d/e/abc?z", "regex_rewrite with backreferences, query kept");
    free(p);
    p = rewritten(b.t, "front", "/all/foo?o=o", NULL, NULL);
    is_str(p, "/all/f00?o=o", "regex_rewrite replaces every match, not in the query");
    free(p);
    host = NULL;
    p = rewritten(b.t, "front", "/auto", "backend.example", &host);
    is_str(host, "backend.example", "auto_host_rewrite uses the upstream hostname");
    free(p);
    free(host);
    host = NULL;
    p = rewritten(b.t, "front", "/auto", NULL, &host);
    is_str(host, "front", "auto_host_rewrite without a hostname keeps the host");
    free(p);
    free(host);

    struct herald_headers *h = req3("front", "/hh", NULL);
    herald_headers_add(h, "x-host", "from-header");
    const struct herald_route *r = route_table_match(b.t, h, 0);
    herald_route_apply_request(r, h, NULL);
    is_str(herald_headers_get(h, ":authority"), "from-header", "host_rewrite_header");
    is_str(herald_headers_get(h, "x-forwarded-host"), "front", "append_x_forwarded_host");
    herald_headers_free(h);
    unbuild(&b);
}

static void test_header_mutations(void)
{
    const char *cfg =
        "request_headers_to_add:\n"
        "- {header: {key: x-order, value: config}}\n"
        "- {header: {key: x-last, value: config}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}\n"
        "request_headers_to_remove: [x-secret]\n"
        "response_headers_to_add: [{header: {key: server, value: herald}, append: false}]\n"
        "response_headers_to_remove: [x-internal]\n"
        "virtual_hosts:\n"
        "- name: vh\n"
        "  domains: ['*']\n"
        "  request_headers_to_add:\n"
        "  - {header: {key: x-order, value: vhost}}\n"
        "  - {header: {key: x-last, value: vhost}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}\n"
        "  routes:\n"
        "  - match: {prefix: /}\n"
        "    route: {cluster: c}\n"
        "    request_headers_to_add:\n"
        "    - {header: {key: x-order, value: route}}\n"
        "    - {header: {key: x-last, value: route}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}\n"
        "    - {header: {key: x-keep, value: new}, append_action: ADD_IF_ABSENT}\n"
        "    - {header: {key: x-only-if, value: set}, append_action: OVERWRITE_IF_EXISTS}\n"
        "    - {header: {key: x-empty, value: ''}}\n"
        "    - {header: {key: x-empty-kept, value: ''}, keep_empty_value: true}\n"
        "    - {header: {key: x-path, value: 'p=%REQ(:path)% 100%% %DOWNSTREAM_REMOTE_ADDRESS%'}}\n"
        "    response_headers_to_add: [{header: {key: x-route, value: r}}]\n";
    char *yaml;
    struct built b;
    if (asprintf(&yaml, "%s", cfg) < 0)
        return;
    build(&b, yaml);
    free(yaml);
    ok(b.t != NULL, "mutations: built");
    if (b.t) {
        struct herald_headers *h = req3("h", "/x", NULL);
        herald_headers_add(h, "x-secret", "s");
        herald_headers_add(h, "x-keep", "old");
        const struct herald_route *r = route_table_match(b.t, h, 0);
        herald_route_apply_request(r, h, NULL);
        char order[128] = "";
        for (size_t i = 0; i < herald_headers_count(h); i++) {
            const char *k, *v;
            herald_headers_at(h, i, &k, &v);
            if (strcmp(k, "x-order") == 0) {
                strcat(order, v);
                strcat(order, ",");
            }
        }
        is_str(order, "route,vhost,config,", "appended in Envoy's order: route, vhost, route config");
        is_str(herald_headers_get(h, "x-last"), "config", "the route config's value wins by default");
        ok(herald_headers_get(h, "x-secret") == NULL, "request_headers_to_remove");
        is_str(herald_headers_get(h, "x-keep"), "old", "ADD_IF_ABSENT keeps the existing value");
        ok(herald_headers_get(h, "x-only-if") == NULL, "OVERWRITE_IF_EXISTS does not add");
        ok(herald_headers_get(h, "x-empty") == NULL, "an empty value is not added");
        is_str(herald_headers_get(h, "x-empty-kept"), "", "keep_empty_value");
        is_str(herald_headers_get(h, "x-path"), "p=/x 100% ",
               "%%REQ()%% and %%%% expanded; without a stream other operators are empty");
        herald_headers_free(h);

        struct herald_headers *resp = herald_headers_new();
        herald_headers_add(resp, ":status", "200");
        herald_headers_add(resp, "server", "upstream");
        herald_headers_add(resp, "x-internal", "1");
        herald_route_apply_response(r, resp);
        is_str(herald_headers_get(resp, "server"), "herald", "append: false overwrites");
        ok(herald_headers_get(resp, "x-internal") == NULL, "response_headers_to_remove");
        is_str(herald_headers_get(resp, "x-route"), "r", "route response header");
        herald_headers_free(resp);
    }
    unbuild(&b);

    if (asprintf(&yaml, "most_specific_header_mutations_wins: true\n%s", cfg) < 0)
        return;
    build(&b, yaml);
    free(yaml);
    if (b.t) {
        struct herald_headers *h = req3("h", "/x", NULL);
        herald_route_apply_request(route_table_match(b.t, h, 0), h, NULL);
        is_str(herald_headers_get(h, "x-last"), "route",
               "most_specific_header_mutations_wins: the route wins");
        herald_headers_free(h);
    }
    unbuild(&b);

    fails("host is not modifiable",
          "request_headers_to_add: [{header: {key: Host, value: x}}]\n", "1:",
              "host headers may not be modified");
    fails("append and append_action",
          "request_headers_to_add: [{header: {key: a, value: x}, append: true, append_action: "
          "ADD_IF_ABSENT}]\n",
          "1:", "append and append_action are both set");
}

static char *location(const struct route_table *t, const char *authority, const char *path,
                      const char *scheme,
                      int *code)
{
    struct herald_headers *h = req3(authority, path, NULL);
    const struct herald_route *r = route_table_match(t, h, 0);
    char *loc = NULL;
    if (r && herald_route_kind(r) == HERALD_ROUTE_REDIRECT) {
        loc = herald_route_redirect_location(r, h, scheme);
        *code = herald_route_redirect_code(r);
    }
    herald_headers_free(h);
    return loc;
}

static void test_redirects(void)
{
    struct built b;
    build(&b,
          "virtual_hosts:\n"
          "- name: vh\n"
          "  domains: ['*']\n"
          "  routes:\n"
          "  - match: {prefix: /https}\n"
          "    redirect: {https_redirect: true}\n"
          "  - match: {prefix: /host}\n"
          "    redirect: {host_redirect: new.example.com, response_code: FOUND}\n"
          "  - match: {prefix: /port}\n"
          "    redirect: {port_redirect: 8443, scheme_redirect: https, response_code: permanent_redirect}\n"
          "  - match: {prefix: /path}\n"
          "    redirect: {path_redirect: /elsewhere, response_code: SEE_OTHER}\n"
          "  - match: {prefix: /pq}\n"
          "    redirect: {path_redirect: '/with?own=q', strip_query: true}\n"
          "  - match: {prefix: /old/}\n"
          "    redirect: {prefix_rewrite: /new/, strip_query: true, response_code: TEMPORARY_REDIRECT}\n"
          "  - match: {prefix: /rx/}\n"
          "    redirect: {regex_rewrite: {pattern: {regex: '^/rx/(.*)$'}, substitution: '/x/\\1'}}\n");
    ok(b.t != NULL, "redirects: built");
    if (!b.t) {
        unbuild(&b);
        return;
    }
    int code = 0;
    char *l;
    l = location(b.t, "example.com", "/https/a?b=c", "http", &code);
    is_str(l, "https://example.com/https/a?b=c", "https_redirect");
    is_int(code, 301, "default code 301");
    free(l);
    l = location(b.t, "example.com:80", "/https", "http", &code);
    is_str(l, "https://example.com/https", "https_redirect drops the default port :80");
    free(l);
    l = location(b.t, "example.com:8080", "/https", "http", &code);
    is_str(l, "https://example.com:8080/https", "https_redirect keeps another port");
    free(l);
    l = location(b.t, "example.com:8080", "/host/x", "http", &code);
    is_str(l, "http://new.example.com/host/x", "host_redirect");
    is_int(code, 302, "FOUND");
    free(l);
    l = location(b.t, "example.com:8080", "/port", "http", &code);
    is_str(l, "https://example.com:8443/port", "port_redirect replaces the port");
    is_int(code, 308, "PERMANENT_REDIRECT (enum in lower case accepted)");
    free(l);
    l = location(b.t, "example.com", "/path/x?a=1", NULL, &code);
    is_str(l, "http://example.com/elsewhere?a=1", "path_redirect keeps the query");
    is_int(code, 303, "SEE_OTHER");
    free(l);
    l = location(b.t, "example.com", "/pq?a=1", "https", &code);
    is_str(l, "https://example.com/with?own=q", "path_redirect with its own query");
    free(l);
    l = location(b.t, "example.com", "/old/page?a=1", "http", &code);
    is_str(l, "http://example.com/new/page", "prefix_rewrite + strip_query");
    is_int(code, 307, "TEMPORARY_REDIRECT");
    free(l);
    l = location(b.t, "example.com", "/rx/a/b", "http", &code);
    is_str(l, "http://example.com/x/a/b", "regex_rewrite redirect");
    free(l);
    unbuild(&b);
}

static void test_direct_response(void)
{
    char fn[] = "/tmp/test_route_bodyXXXXXX";
    int fd = mkstemp(fn);
    if (fd >= 0) {
        if (write(fd, "from a file\n", 12) != 12)
            perror("write");
        close(fd);
    }
    char *yaml;
    if (asprintf(&yaml,
                 "virtual_hosts:\n"
                 "- name: vh\n"
                 "  domains: ['*']\n"
                 "  routes:\n"
                 "  - {name: s, match: {path: /s}, direct_response: {status: 200, body: {inline_string: "
                 "hello}}}\n"
                 "  - {name: b, match: {path: /b}, direct_response: {status: 403, body: {inline_bytes: "
                 "aGk=}}}\n"
                 "  - {name: f, match: {path: /f}, direct_response: {status: 503, body: {filename: '%s'}}}\n"
                 "  - {name: n, match: {path: /n}, direct_response: {status: 204}}\n", fn) < 0)
        return;
    struct built b;
    build(&b, yaml);
    free(yaml);
    ok(b.t != NULL, "direct_response: built");
    if (b.t) {
        struct { const char *path; int status; const char *body; } cases[] = {
            { "/s", 200, "hello" }, { "/b", 403, "hi" }, { "/f", 503, "from a file\n" }, { "/n", 204, NULL },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            struct herald_headers *h = req3("h", cases[i].path, NULL);
            const struct herald_route *r = route_table_match(b.t, h, 0);
            size_t len = 99;
            ok(r && herald_route_kind(r) == HERALD_ROUTE_DIRECT_RESPONSE, "%s: direct response",
               cases[i].path);
            is_int(r ? herald_route_direct_status(r) : 0, cases[i].status, "%s: status", cases[i].path);
            is_str(r ? herald_route_direct_body(r, &len) : "?", cases[i].body, "%s: body", cases[i].path);
            if (cases[i].body)
                is_int(len, strlen(cases[i].body), "%s: body length", cases[i].path);
            herald_headers_free(h);
        }
    }
    unbuild(&b);
    unlink(fn);

    fails("direct_response status 99",
          "virtual_hosts:\n"
          "- name: vh\n"
          "  domains: ['*']\n"
          "  routes:\n"
          "  - match: {prefix: /}\n"
          "    direct_response: {status: 99}\n",
          "6:23:", "status 99 is out of range (200-599)");
    fails("body over the limit",
          "max_direct_response_body_size_bytes: 4\n"
          "virtual_hosts:\n"
          "- name: vh\n"
          "  domains: ['*']\n"
          "  routes:\n"
          "  - match: {prefix: /}\n"
          "    direct_response: {status: 200, body: {inline_string: toolong}}\n",
          "7:", "the direct response body is 7 bytes; the maximum is 4");
}

static void test_route_action_fields(void)
{
    struct built b;
    build(&b,
          "virtual_hosts:\n"
          "- name: vh\n"
          "  domains: ['*']\n"
          "  retry_policy: {retry_on: 5xx, num_retries: 5}\n"
          "  routes:\n"
          "  - name: r\n"
          "    match: {prefix: /r}\n"
          "    route:\n"
          "      cluster: c\n"
          "      timeout: 2.5s\n"
          "      idle_timeout: 30s\n"
          "      cluster_not_found_response_code: NOT_FOUND\n"
          "      upgrade_configs: [{upgrade_type: WebSocket}, {upgrade_type: CONNECT, enabled: false}]\n"
          "      retry_policy:\n"
          "        retry_on: 'gateway-error, connect-failure,retriable-status-codes'\n"
          "        per_try_timeout: 1s\n"
          "        retriable_status_codes: [409, 429]\n"
          "        retry_back_off: {base_interval: 0.1s}\n"
          "  - name: hdr\n"
          "    match: {prefix: /h}\n"
          "    route: {cluster_header: X-Cluster, timeout: 0s}\n"
          "  - name: plain\n"
          "    match: {prefix: /}\n"
          "    route: {cluster: d, retry_policy: {}}\n");
    ok(b.t != NULL, "route action: built");
    if (!b.t) {
        unbuild(&b);
        return;
    }
    struct herald_headers *h = req3("h", "/r", NULL);
    const struct herald_route *r = route_table_match(b.t, h, 0);
    is_str(herald_route_cluster(r, h, 0), "c", "cluster");
    is_int(herald_route_timeout_ms(r), 2500, "timeout");
    is_int(herald_route_idle_timeout_ms(r), 30000, "idle_timeout");
    is_int(herald_route_cluster_not_found_code(r), 404, "cluster_not_found_response_code");
    ok(herald_route_upgrade_allowed(r, "websocket"), "upgrade websocket (case-insensitive)");
    ok(!herald_route_upgrade_allowed(r, "connect"), "upgrade CONNECT disabled");
    is_int(route_upgrade_override(r, "h2c"), -1, "unmentioned upgrade: the HCM decides");
    const struct herald_retry_policy *p = herald_route_retry_policy(r);
    ok(p != NULL, "route retry policy");
    if (p) {
        is_int(p->num_retries, 1, "num_retries defaults to 1");
        is_int(p->on,
               HERALD_RETRY_GATEWAY_ERROR | HERALD_RETRY_CONNECT_FAILURE | HERALD_RETRY_RETRIABLE_CODES,
               "retry_on bits");
        is_int(p->per_try_timeout_ms, 1000, "per_try_timeout");
        is_int(p->backoff_base_ms, 100, "base_interval");
        is_int(p->backoff_max_ms, 1000, "max_interval defaults to 10x base");
        is_int(p->nretriable_status_codes, 2, "retriable_status_codes");
        is_int(p->nretriable_status_codes == 2 ? p->retriable_status_codes[1] : 0, 429, "second code");
    }
    herald_headers_free(h);

    h = req3("h", "/h", NULL);
    r = route_table_match(b.t, h, 0);
    ok(herald_route_cluster(r, h, 0) == NULL, "cluster_header absent: NULL");
    herald_headers_add(h, "x-cluster", "from-hdr");
    is_str(herald_route_cluster(r, h, 0), "from-hdr", "cluster_header");
    is_int(herald_route_timeout_ms(r), 0, "timeout 0s disables it");
    p = herald_route_retry_policy(r);
    ok(p && p->num_retries == 5 && p->on == HERALD_RETRY_5XX,
       "the vhost's retry policy when the route has none");
    herald_headers_free(h);

    h = req3("h", "/z", NULL);
    r = route_table_match(b.t, h, 0);
    is_int(herald_route_timeout_ms(r), 15000, "timeout defaults to 15s");
    is_int(herald_route_cluster_not_found_code(r), 503, "cluster_not_found defaults to 503");
    p = herald_route_retry_policy(r);
    ok(p && p->num_retries == 1 && p->on == 0 && p->backoff_base_ms == 25 && p->backoff_max_ms == 250,
       "an empty retry_policy: 1 retry, 25ms/250ms back-off");
    herald_headers_free(h);
    unbuild(&b);

    fails("unknown retry_on",
          "virtual_hosts:\n"
          "- name: vh\n"
          "  domains: ['*']\n"
          "  retry_policy: {retry_on: '5xx,conect-failure'}\n",
          "4:", "unknown retry_on condition 'conect-failure'");
}

static void test_errors(void)
{
    fails("bad regex",
          "virtual_hosts:\n"
          "- name: vh\n"
          "  domains: ['*']\n"
          "  routes:\n"
          "  - match: {safe_regex: {regex: '/a(b'}}\n"
          "    route: {cluster: c}\n",
          "5:26:", "invalid regex '/a(b': missing closing parenthesis at offset 4");
    fails("unknown field in a route",
          "virtual_hosts:\n"
          "- name: vh\n"
          "  domains: ['*']\n"
          "  routes:\n"
          "  - match: {prefix: /}\n"
          "    rout: {cluster: c}\n",
          "6:5:", "unknown field 'rout' in envoy.config.route.v3.Route (did you mean 'route'?)");
    fails("no action",
          "virtual_hosts:\n"
          "- name: vh\n"
          "  domains: ['*']\n"
          "  routes:\n"
          "  - match: {prefix: /}\n",
          "5:", "a route needs an action");
    fails("no path specifier",
          "virtual_hosts:\n"
          "- name: vh\n"
          "  domains: ['*']\n"
          "  routes:\n"
          "  - match: {headers: [{name: x}]}\n"
          "    route: {cluster: c}\n",
          "5:", "a route match needs one of prefix, path, safe_regex, path_separated_prefix or connect_matcher");
    fails("v2 regex",
          "virtual_hosts:\n"
          "- name: vh\n"
          "  domains: ['*']\n"
          "  routes:\n"
          "  - match: {regex: '/a.*'}\n"
          "    route: {cluster: c}\n",
          "5:13:", "'regex' is no longer a field of envoy.config.route.v3.RouteMatch (v2 field: use "
          "safe_regex");
    fails("unsupported hash_policy filter_state",
          "virtual_hosts:\n"
          "- name: vh\n"
          "  domains: ['*']\n"
          "  routes:\n"
          "  - match: {prefix: /}\n"
          "    route: {cluster: c, hash_policy: [{filter_state: {key: x}}]}\n",
          "6:40:", "not supported: envoy.config.route.v3.RouteAction.HashPolicy.filter_state");
    fails("bad path_separated_prefix",
          "virtual_hosts:\n"
          "- name: vh\n"
          "  domains: ['*']\n"
          "  routes:\n"
          "  - match: {path_separated_prefix: /api/}\n"
          "    route: {cluster: c}\n",
          "5:", "path_separated_prefix must start with '/', not end with '/'");
    fails("camelCase and a bad enum",
          "virtualHosts:\n"
          "- name: vh\n"
          "  domains: ['*']\n"
          "  routes:\n"
          "  - match: {prefix: /}\n"
          "    redirect: {responseCode: MOVED}\n",
          "6:", "unknown value 'MOVED'");
}

/* ------------------------------------------------------------ hash_policy */

static uint64_t xx(const char *s)
{
    return XXH64(s, strlen(s), 0);
}

static uint64_t rotl1(uint64_t h)
{
    return (h << 1) | (h >> 63);
}

/* The hash of a GET / with the extra headers (name, value, ..., NULL) on the
 * route's policies, or 0 when there is none; *cookie gets a generated one. */
static uint64_t route_hash(const struct route_table *t, const char *path, const char *ip, char **cookie, ...)
{
    struct herald_headers *h = req3("x", path, NULL);
    va_list ap;
    va_start(ap, cookie);
    const char *n;
    while ((n = va_arg(ap, const char *))) {
        const char *v = va_arg(ap, const char *);
        herald_headers_add(h, n, v);
    }
    va_end(ap);
    const struct herald_route *r = route_table_match(t, h, 0);
    uint64_t out = 0;
    if (!r || !herald_route_hash(r, h, ip, "10.0.0.1:5555127.0.0.1:80", &out, cookie))
        out = 0;
    herald_headers_free(h);
    return out;
}

static void test_hash_policy(void)
{
    struct built b;
    char *cookie = NULL;

    build(&b, "virtual_hosts:\n"
              "- name: vh\n"
              "  domains: ['*']\n"
              "  routes:\n"
              "  - match: {prefix: /two}\n"
              "    route:\n"
              "      cluster: c\n"
              "      hash_policy:\n"
              "      - header: {header_name: x-a}\n"
              "      - header:\n"
              "          header_name: X-B\n"
              "          regex_rewrite: {pattern: {regex: '-.*'}, substitution: ''}\n"
              "  - match: {prefix: /term}\n"
              "    route:\n"
              "      weighted_clusters: {clusters: [{name: c, weight: 1}, {name: d, weight: 1}]}\n"
              "      hash_policy:\n"
              "      - header: {header_name: x-a}\n"
              "        terminal: true\n"
              "      - connection_properties: {source_ip: true}\n"
              "  - match: {prefix: /}\n"
              "    route:\n"
              "      cluster: c\n"
              "      hash_policy:\n"
              "      - cookie: {name: sess, ttl: 3600s, path: /app}\n"
              "      - query_parameter: {name: u}\n");
    ok(b.t != NULL, "hash_policy: built");
    if (!b.t) {
        unbuild(&b);
        return;
    }
    is_int(route_hash(b.t, "/two", NULL, NULL, NULL), 0, "no header: no hash");
    ok(route_hash(b.t, "/two", NULL, NULL, "x-a", "v", NULL) == xx("v"), "one header: xxHash64 of its value");
    ok(route_hash(b.t, "/two", NULL, NULL, "x-a", "v", "x-b", "w", NULL) == (rotl1(xx("v")) ^ xx("w")),
       "two: rotate left 1, then xor");
    ok(route_hash(b.t, "/two", NULL, NULL, "x-a", "v", "x-b", "v", NULL) != 0,
       "equal values do not cancel out");
    ok(route_hash(b.t, "/two", NULL, NULL, "x-a", "b", "x-a", "a", NULL) == xx("ab"),
       "several values: sorted and hashed together");
    ok(route_hash(b.t, "/two", NULL, NULL, "x-b", "w-1", NULL) == xx("w"), "regex_rewrite applied first");
    unbuild(&b);

    build(&b, "virtual_hosts:\n"
              "- name: vh\n"
              "  domains: ['*']\n"
              "  routes:\n"
              "  - match: {prefix: /}\n"
              "    route: {cluster: c, hash_policy: [{header: {header_name: Host}}]}\n");
    ok(b.t && route_hash(b.t, "/", NULL, NULL, NULL) == xx("x"), "header_name host hashes :authority");
    unbuild(&b);
    build(&b, "virtual_hosts:\n"
              "- name: vh\n"
              "  domains: ['*']\n"
              "  routes:\n"
              "  - match: {prefix: /two}\n"
              "    route: {cluster: c}\n"
              "  - match: {prefix: /term}\n"
              "    route:\n"
              "      weighted_clusters: {clusters: [{name: c, weight: 1}, {name: d, weight: 1}]}\n"
              "      hash_policy:\n"
              "      - header: {header_name: x-a}\n"
              "        terminal: true\n"
              "      - connection_properties: {source_ip: true}\n"
              "  - match: {prefix: /}\n"
              "    route:\n"
              "      cluster: c\n"
              "      hash_policy:\n"
              "      - cookie: {name: sess, ttl: 3600s, path: /app}\n"
              "      - query_parameter: {name: u}\n");
    if (!b.t) {
        unbuild(&b);
        return;
    }
    is_int(route_hash(b.t, "/two", NULL, NULL, "x-a", "v", NULL), 0, "a route without hash_policy: no hash");

    ok(route_hash(b.t, "/term", "192.0.2.1", NULL, "x-a", "v", NULL) == xx("v"),
       "terminal: a hash ends the list");
    ok(route_hash(b.t, "/term", "192.0.2.1", NULL, NULL) == xx("192.0.2.1"), "source_ip: xxHash64 of the ip");
    is_int(route_hash(b.t, "/term", NULL, NULL, NULL), 0, "no ip: no hash");

    ok(route_hash(b.t, "/p", NULL, &cookie, "cookie", "a=1; sess=\"abc\" ; b=2", NULL) == xx("abc"),
       "cookie: its value, unquoted");
    ok(cookie == NULL, "an existing cookie is not set again");
    ok(route_hash(b.t, "/p?x=1&u=me", NULL, &cookie, "cookie", "sess=abc", NULL) ==
       (rotl1(xx("abc")) ^ xx("me")),
       "cookie and query_parameter combined");
    uint64_t h = route_hash(b.t, "/p", NULL, &cookie, NULL);
    char want[128];
    snprintf(want, sizeof(want), "sess=\"%016llx\"; Max-Age=3600; Path=/app; HttpOnly",
             (unsigned long long)xx("10.0.0.1:5555127.0.0.1:80"));
    is_str(cookie, want, "ttl and no cookie: one is generated");
    char value[17];
    snprintf(value, sizeof(value), "%016llx", (unsigned long long)xx("10.0.0.1:5555127.0.0.1:80"));
    ok(h == xx(value), "and its value is what is hashed");
    free(cookie);
    cookie = NULL;
    is_int(route_hash(b.t, "/p", NULL, NULL, NULL), 0, "no way to set a cookie: no hash");
    unbuild(&b);

    fails("hash_policy without a policy",
          "virtual_hosts:\n"
          "- name: vh\n"
          "  domains: ['*']\n"
          "  routes:\n"
          "  - match: {prefix: /}\n"
          "    route: {cluster: c, hash_policy: [{terminal: true}]}\n",
          "6:39:", "a hash policy needs one of header, cookie, connection_properties or query_parameter");
}

/* connect_matcher takes CONNECT requests only, which no path-based route but
 * prefix "" takes; connect_config marks the route as ending the CONNECT. */
static void test_connect(void)
{
    struct built b;
    build(&b,
          "virtual_hosts:\n"                                                       /* 1 */
          "- name: vh\n"                                                           /* 2 */
          "  domains: ['*']\n"                                                     /* 3 */
          "  routes:\n"                                                            /* 4 */
          "  - {name: root, match: {prefix: /}, route: {cluster: web}}\n"          /* 5 */
          "  - name: tunnel\n"                                                     /* 6 */
          "    match: {connect_matcher: {}}\n"                                     /* 7 */
          "    route:\n"                                                           /* 8 */
          "      cluster: tcp\n"                                                   /* 9 */
          "      upgrade_configs: [{upgrade_type: CONNECT, connect_config: {}}]\n" /* 10 */
          "  - {name: again, match: {connect_matcher: {}}, route: {cluster: x}}\n" /* 11 */
          "  - {name: fwd, match: {connect_matcher: {}, headers: [{name: x, present_match: true}]}, "
          "route: {cluster: y}}\n");                                               /* 12 */
    ok(b.t != NULL, "connect: built");
    /* prefix "/" does not shadow a CONNECT route; a second connect_matcher is shadowed */
    is_int(b.d.nwarnings, 2, "connect: two warnings");
    if (b.d.nwarnings == 2) {
        like(b.d.warnings[0], "route 'again' (line 11) can never match: route 'tunnel' (line 6)",
             "connect: a connect_matcher shadows the next");
        like(b.d.warnings[1], "route 'fwd' (line 12) can never match: route 'tunnel' (line 6)",
             "connect: ... even one with more conditions");
    }
    struct herald_headers *h = herald_headers_new();
    herald_headers_add(h, ":method", "CONNECT");
    herald_headers_add(h, ":authority", "db.example:5432");
    const struct herald_route *r = route_table_match(b.t, h, 0);
    is_str(r ? herald_route_name(r) : "-", "tunnel", "connect: CONNECT takes the connect_matcher route");
    ok(r && herald_route_connect_terminates(r), "connect: connect_config ends the CONNECT here");
    herald_headers_free(h);
    is_str(match_name(b.t, "a", "/x"), "root", "connect: GET takes the prefix route");
    h = req3("a", "/x", "POST");
    r = route_table_match(b.t, h, 0);
    ok(r && !herald_route_connect_terminates(r), "connect: a path route does not end CONNECTs");
    herald_headers_free(h);
    unbuild(&b);

    build(&b,
          "virtual_hosts:\n"
          "- name: vh\n"
          "  domains: ['*']\n"
          "  routes:\n"
          "  - {name: only, match: {connect_matcher: {}}, route: {cluster: tcp}}\n");
    is_str(match_name(b.t, "a", "/"), "-", "connect: a GET does not match connect_matcher");
    h = herald_headers_new();
    herald_headers_add(h, ":method", "CONNECT");
    herald_headers_add(h, ":authority", "a:1");
    r = route_table_match(b.t, h, 0);
    ok(r && !herald_route_connect_terminates(r), "connect: without connect_config the CONNECT goes upstream");
    herald_headers_free(h);
    unbuild(&b);

    fails("connect_config on websocket",
          "virtual_hosts:\n"
          "- name: vh\n"
          "  domains: ['*']\n"
          "  routes:\n"
          "  - match: {prefix: /}\n"
          "    route: {cluster: c, upgrade_configs: [{upgrade_type: websocket, connect_config: {}}]}\n",
          "6:", "connect_config is only for upgrade_type CONNECT");
    fails("connect_config allow_post",
          "virtual_hosts:\n"
          "- name: vh\n"
          "  domains: ['*']\n"
          "  routes:\n"
          "  - match: {connect_matcher: {}}\n"
          "    route: {cluster: c, upgrade_configs: [{upgrade_type: CONNECT, connect_config: {allow_post: true}}]}\n",
          "6:", "allow_post: not supported");
}

int main(void)
{
    test_vhosts();
    test_path_matching();
    test_header_query_matching();
    test_shadow_warnings();
    test_weighted();
    test_rewrites();
    test_header_mutations();
    test_redirects();
    test_direct_response();
    test_route_action_fields();
    test_errors();
    test_hash_policy();
    test_connect();
    return done_testing();
}
