/* plugins/rbac/matcher.c: every permission and principal kind, and/or/not,
 * ALLOW/DENY/LOG; plugins/rbac/xmatcher.c, the unified matcher tree; and
 * plugins/rbac/cel.c, policy conditions. Build: cc -I plugins/rbac -I sdk/include t/unit/test_rbac.c
 * plugins/rbac/matcher.c -lpcre2-8 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cel.h"
#include "matcher.h"
#include "tap.h"
#include "xmatcher.h"

struct req {
    const char *names[8], *values[8];
};

static char *get_header(void *arg, const char *name)
{
    struct req *r = arg;
    char *out = NULL;
    for (size_t i = 0; i < 8 && r->names[i]; i++) {
        if (strcasecmp(r->names[i], name) != 0)
            continue;
        char *n;
        if (out) {
            if (asprintf(&n, "%s,%s", out, r->values[i]) < 0)
                abort();
            free(out);
        } else {
            n = strdup(r->values[i]);
        }
        out = n;
    }
    return out;
}

static struct rbac_rule *str_rule(enum rbac_rule_kind k, enum rbac_str_kind sk, const char *v, bool icase)
{
    struct rbac_rule *r = rbac_rule_new(k);
    if (rbac_str_init(&r->str, sk, v, icase, NULL) < 0)
        abort();
    return r;
}

static struct rbac_rule *hdr_rule(const char *name, enum rbac_str_kind sk, const char *v, bool invert)
{
    struct rbac_rule *r = rbac_rule_new(RBAC_HEADER);
    r->hdr.name = strdup(name);
    r->hdr.kind = RBAC_HDR_STRING;
    r->hdr.invert = invert;
    if (rbac_str_init(&r->hdr.str, sk, v, false, NULL) < 0)
        abort();
    return r;
}

static struct rbac_rule *present_rule(const char *name, bool present, bool invert)
{
    struct rbac_rule *r = rbac_rule_new(RBAC_HEADER);
    r->hdr.name = strdup(name);
    r->hdr.kind = RBAC_HDR_PRESENT;
    r->hdr.present = present;
    r->hdr.invert = invert;
    return r;
}

static struct rbac_rule *cidr_rule(enum rbac_rule_kind k, const char *addr, int64_t len)
{
    struct rbac_rule *r = rbac_rule_new(k);
    if (rbac_cidr_init(&r->cidr, addr, len, NULL) < 0)
        abort();
    return r;
}

static struct rbac_rule *wrap(enum rbac_rule_kind k, struct rbac_rule *a, struct rbac_rule *b)
{
    struct rbac_rule *r = rbac_rule_new(k);
    rbac_rule_add(r, a);
    if (b)
        rbac_rule_add(r, b);
    return r;
}

static bool m(struct rbac_rule *r, const struct rbac_ctx *c)
{
    bool v = rbac_rule_match(r, c);
    rbac_rule_free(r);
    return v;
}

static void test_strings(void)
{
    struct rbac_str_matcher s;
    char *err = NULL;

    rbac_str_init(&s, RBAC_STR_EXACT, "Abc", false, NULL);
    ok(rbac_str_match(&s, "Abc") && !rbac_str_match(&s, "abc"), "exact");
    rbac_str_fini(&s);
    rbac_str_init(&s, RBAC_STR_EXACT, "Abc", true, NULL);
    ok(rbac_str_match(&s, "aBC"), "exact ignore_case");
    rbac_str_fini(&s);
    rbac_str_init(&s, RBAC_STR_PREFIX, "/api", false, NULL);
    ok(rbac_str_match(&s, "/api/x") && !rbac_str_match(&s, "/ap"), "prefix");
    rbac_str_fini(&s);
    rbac_str_init(&s, RBAC_STR_SUFFIX, ".json", true, NULL);
    ok(rbac_str_match(&s, "a.JSON") && !rbac_str_match(&s, "json"), "suffix ignore_case");
    rbac_str_fini(&s);
    rbac_str_init(&s, RBAC_STR_CONTAINS, "mid", false, NULL);
    ok(rbac_str_match(&s, "amidb") && !rbac_str_match(&s, "mi"), "contains");
    rbac_str_fini(&s);
    rbac_str_init(&s, RBAC_STR_REGEX, "/v[0-9]+/.*", false, NULL);
    ok(rbac_str_match(&s, "/v12/x") && !rbac_str_match(&s, "/a/v1/x"), "regex is a full match (start)");
    rbac_str_fini(&s);
    rbac_str_init(&s, RBAC_STR_REGEX, "ab|cd", false, NULL);
    ok(rbac_str_match(&s, "cd") && !rbac_str_match(&s, "abcd"), "regex is a full match (alternation)");
    rbac_str_fini(&s);
    ok(rbac_str_init(&s, RBAC_STR_REGEX, "a(", false, &err) < 0, "bad regex refused");
    like(err, "offset", "bad regex: message has the offset");
    free(err);
}

static void test_addresses(void)
{
    struct rbac_ip ip;
    struct rbac_cidr c;
    char *err = NULL;

    ok(rbac_ip_parse(&ip, "10.1.2.3") == 0 && ip.family == AF_INET, "parse v4");
    ok(rbac_ip_parse(&ip, "[::1]") == 0 && ip.family == AF_INET6, "parse [v6]");
    ok(rbac_ip_parse(&ip, "nope") < 0, "parse garbage");
    rbac_cidr_init(&c, "10.0.0.0", 8, NULL);
    rbac_ip_parse(&ip, "10.200.0.1");
    ok(rbac_cidr_match(&c, &ip), "10/8 has 10.200.0.1");
    rbac_ip_parse(&ip, "11.0.0.1");
    ok(!rbac_cidr_match(&c, &ip), "10/8 lacks 11.0.0.1");
    rbac_cidr_init(&c, "192.168.1.7", 20, NULL);
    rbac_ip_parse(&ip, "192.168.15.255");
    ok(rbac_cidr_match(&c, &ip), "/20 with host bits set in the prefix");
    rbac_ip_parse(&ip, "192.168.16.0");
    ok(!rbac_cidr_match(&c, &ip), "/20 boundary");
    rbac_cidr_init(&c, "1.2.3.4", -1, NULL);
    ok(c.prefix_len == 32, "missing prefix_len is the full length");
    rbac_cidr_init(&c, "2001:db8::", 32, NULL);
    rbac_ip_parse(&ip, "2001:db8:1::5");
    ok(rbac_cidr_match(&c, &ip), "v6 /32");
    rbac_ip_parse(&ip, "10.0.0.1");
    ok(!rbac_cidr_match(&c, &ip), "family mismatch");
    rbac_cidr_init(&c, "0.0.0.0", 0, NULL);
    ok(rbac_cidr_match(&c, &ip), "0.0.0.0/0 takes every v4");
    ok(rbac_cidr_init(&c, "1.2.3.4", 33, &err) < 0, "prefix_len too long");
    free(err);
    err = NULL;
    ok(rbac_cidr_init(&c, "1.2.3", 8, &err) < 0, "bad address");
    like(err, "not an IP", "bad address message");
    free(err);

    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_port = htons(8443)};
    inet_pton(AF_INET6, "::ffff:10.9.8.7", &s6.sin6_addr);
    ok(rbac_ip_from_sockaddr(&ip, (struct sockaddr *)&s6) == 0 && ip.family == AF_INET && ip.port == 8443,
       "v4-mapped sockaddr becomes v4");
}

static void test_rules(void)
{
    struct req rq = {{"x-user", "x-multi", "x-multi", "content-length", ":path"},
                     {"alice", "a", "b", "42", "/admin/x?q=1"}};
    struct rbac_ip remote, direct, local;
    rbac_ip_parse(&remote, "203.0.113.9");
    rbac_ip_parse(&direct, "10.0.0.2");
    rbac_ip_parse(&local, "10.0.0.1");
    local.port = 8080;
    struct rbac_ctx c = {.header = get_header, .arg = &rq, .path = "/admin/x?q=1", .remote = &remote,
                         .direct_remote = &direct, .local = &local, .sni = "api.example.com"};
    struct rbac_ctx net = {.remote = &direct, .direct_remote = &direct, .local = &local};

    ok(m(rbac_rule_new(RBAC_ANY), &c), "any");
    /* header */
    ok(m(hdr_rule("x-user", RBAC_STR_EXACT, "alice", false), &c), "header exact");
    ok(!m(hdr_rule("x-user", RBAC_STR_EXACT, "bob", false), &c), "header exact mismatch");
    ok(m(hdr_rule("x-user", RBAC_STR_EXACT, "bob", true), &c), "header invert_match");
    ok(m(hdr_rule("X-User", RBAC_STR_PREFIX, "al", false), &c), "header name is case-insensitive");
    ok(m(hdr_rule("x-multi", RBAC_STR_EXACT, "a,b", false), &c), "several values are joined with ,");
    ok(m(hdr_rule("x-user", RBAC_STR_REGEX, "a.*e", false), &c), "header safe_regex");
    ok(!m(hdr_rule("x-missing", RBAC_STR_EXACT, "", false), &c), "missing header does not match");
    ok(!m(hdr_rule("x-missing", RBAC_STR_EXACT, "x", true), &c),
       "missing header: invert does not match either");
    {
        struct rbac_rule *r = hdr_rule("x-missing", RBAC_STR_EXACT, "", false);
        r->hdr.missing_as_empty = true;
        ok(m(r, &c), "treat_missing_header_as_empty");
    }
    ok(m(present_rule("x-user", true, false), &c), "present_match");
    ok(!m(present_rule("x-missing", true, false), &c), "present_match on a missing header");
    ok(m(present_rule("x-missing", true, true), &c), "present_match inverted on a missing header");
    ok(m(present_rule("x-missing", false, false), &c), "present_match: false on a missing header");
    {
        struct rbac_rule *r = rbac_rule_new(RBAC_HEADER);
        r->hdr.name = strdup("content-length");
        r->hdr.kind = RBAC_HDR_RANGE;
        r->hdr.range_start = 0;
        r->hdr.range_end = 43;
        ok(m(r, &c), "range_match [0,43) has 42");
        r = rbac_rule_new(RBAC_HEADER);
        r->hdr.name = strdup("content-length");
        r->hdr.kind = RBAC_HDR_RANGE;
        r->hdr.range_start = 0;
        r->hdr.range_end = 42;
        ok(!m(r, &c), "range_match end is exclusive");
    }
    ok(!m(hdr_rule("x-user", RBAC_STR_EXACT, "alice", false), &net), "no headers (network): no header match");
    /* url_path */
    ok(m(str_rule(RBAC_URL_PATH, RBAC_STR_EXACT, "/admin/x", false), &c), "url_path ignores the query");
    ok(m(str_rule(RBAC_URL_PATH, RBAC_STR_PREFIX, "/ADMIN", true), &c), "url_path prefix ignore_case");
    ok(!m(str_rule(RBAC_URL_PATH, RBAC_STR_SUFFIX, "q=1", false), &c), "url_path: no query");
    ok(!m(str_rule(RBAC_URL_PATH, RBAC_STR_PREFIX, "/", false), &net), "url_path without a path");
    /* destination */
    ok(m(cidr_rule(RBAC_DST_IP, "10.0.0.0", 24), &c), "destination_ip");
    ok(!m(cidr_rule(RBAC_DST_IP, "10.0.1.0", 24), &c), "destination_ip mismatch");
    {
        struct rbac_rule *r = rbac_rule_new(RBAC_DST_PORT);
        r->port_lo = r->port_hi = 8080;
        ok(m(r, &c), "destination_port");
        r = rbac_rule_new(RBAC_DST_PORT);
        r->port_lo = r->port_hi = 80;
        ok(!m(r, &c), "destination_port mismatch");
        r = rbac_rule_new(RBAC_DST_PORT);
        r->port_lo = 8000;
        r->port_hi = 8079;
        ok(!m(r, &c), "destination_port_range (end exclusive, stored inclusive)");
    }
    ok(m(str_rule(RBAC_SNI, RBAC_STR_SUFFIX, ".example.com", false), &c), "requested_server_name");
    ok(!m(str_rule(RBAC_SNI, RBAC_STR_SUFFIX, ".example.com", false), &net), "no SNI");
    ok(m(str_rule(RBAC_SNI, RBAC_STR_EXACT, "", false), &net), "no SNI matches \"\"");
    /* principals */
    ok(m(cidr_rule(RBAC_REMOTE_IP, "203.0.113.0", 24), &c), "remote_ip uses the HCM's client address");
    ok(!m(cidr_rule(RBAC_REMOTE_IP, "10.0.0.0", 8), &c), "remote_ip is not the peer");
    ok(m(cidr_rule(RBAC_DIRECT_REMOTE_IP, "10.0.0.2", 32), &c), "direct_remote_ip is the peer");
    ok(!m(cidr_rule(RBAC_DIRECT_REMOTE_IP, "203.0.113.0", 24), &c), "direct_remote_ip is not the XFF client");
    ok(m(cidr_rule(RBAC_REMOTE_IP, "10.0.0.2", 32), &net), "network: remote_ip is the peer");
    /* and / or / not */
    ok(m(wrap(RBAC_AND, rbac_rule_new(RBAC_ANY), hdr_rule("x-user", RBAC_STR_EXACT, "alice", false)), &c),
       "and: both");
    ok(!m(wrap(RBAC_AND, rbac_rule_new(RBAC_ANY), hdr_rule("x-user", RBAC_STR_EXACT, "bob", false)), &c),
       "and: one fails");
    ok(m(wrap(RBAC_OR, hdr_rule("x-user", RBAC_STR_EXACT, "bob", false),
              hdr_rule("x-user", RBAC_STR_EXACT, "alice", false)), &c), "or: one");
    ok(!m(wrap(RBAC_OR, hdr_rule("x-user", RBAC_STR_EXACT, "bob", false),
               cidr_rule(RBAC_DST_IP, "1.1.1.1", 32)), &c), "or: none");
    ok(!m(wrap(RBAC_NOT, rbac_rule_new(RBAC_ANY), NULL), &c), "not any");
    ok(m(wrap(RBAC_NOT, cidr_rule(RBAC_REMOTE_IP, "10.0.0.0", 8), NULL), &c), "not_id");
    ok(m(wrap(RBAC_NOT, wrap(RBAC_AND, rbac_rule_new(RBAC_ANY),
                             str_rule(RBAC_URL_PATH, RBAC_STR_PREFIX, "/public", false)), NULL), &c),
       "not(and(...))");
    ok(m(rbac_rule_new(RBAC_AND), &c), "empty and matches");
    ok(!m(rbac_rule_new(RBAC_OR), &c), "empty or does not");
}

static struct rbac_engine *engine(enum rbac_action a)
{
    struct rbac_engine *e = rbac_engine_new(a);
    /* added out of order: the first match is reported by name order */
    struct rbac_policy *p = rbac_engine_add_policy(e, "z-admins");
    rbac_policy_add_permission(p, str_rule(RBAC_URL_PATH, RBAC_STR_PREFIX, "/admin", false));
    rbac_policy_add_principal(p, hdr_rule("x-user", RBAC_STR_EXACT, "alice", false));
    p = rbac_engine_add_policy(e, "a-internal");
    rbac_policy_add_permission(p, str_rule(RBAC_URL_PATH, RBAC_STR_PREFIX, "/nomatch", false));
    rbac_policy_add_permission(p, rbac_rule_new(RBAC_ANY));
    rbac_policy_add_principal(p, cidr_rule(RBAC_REMOTE_IP, "10.0.0.0", 8));
    rbac_engine_finish(e);
    return e;
}

static void test_engines(void)
{
    struct req alice = {{"x-user"}, {"alice"}}, bob = {{"x-user"}, {"bob"}};
    struct rbac_ip outside, inside;
    rbac_ip_parse(&outside, "198.51.100.1");
    rbac_ip_parse(&inside, "10.1.1.1");
    struct rbac_ctx a_out = {.header = get_header, .arg = &alice, .path = "/admin/1", .remote = &outside};
    struct rbac_ctx a_in = {.header = get_header, .arg = &alice, .path = "/admin/1", .remote = &inside};
    struct rbac_ctx b_out = {.header = get_header, .arg = &bob, .path = "/admin/1", .remote = &outside};
    struct rbac_ctx a_pub = {.header = get_header, .arg = &alice, .path = "/pub", .remote = &outside};
    const char *pol;

    struct rbac_engine *e = engine(RBAC_ALLOW);
    is_str(e->policies[0].name, "a-internal", "policies sorted by name");
    ok(rbac_engine_allowed(e, &a_out, &pol), "ALLOW: alice on /admin allowed");
    is_str(pol, "z-admins", "ALLOW: matched policy");
    ok(rbac_engine_allowed(e, &a_in, &pol), "ALLOW: alice inside allowed");
    is_str(pol, "a-internal", "both match: the first by name is reported");
    ok(!rbac_engine_allowed(e, &b_out, &pol), "ALLOW: bob outside denied");
    ok(pol == NULL, "ALLOW denied: no policy");
    ok(!rbac_engine_allowed(e, &a_pub, &pol), "ALLOW: permission without principal... denied");
    rbac_engine_free(e);

    e = engine(RBAC_DENY);
    ok(!rbac_engine_allowed(e, &a_out, &pol), "DENY: alice on /admin denied");
    is_str(pol, "z-admins", "DENY: matched policy");
    ok(rbac_engine_allowed(e, &b_out, &pol), "DENY: bob allowed");
    ok(pol == NULL, "DENY allowed: no policy");
    rbac_engine_free(e);

    e = engine(RBAC_LOG);
    ok(rbac_engine_allowed(e, &a_out, &pol), "LOG: matched, allowed");
    is_str(pol, "z-admins", "LOG: matched policy reported");
    ok(rbac_engine_allowed(e, &b_out, &pol) && pol == NULL, "LOG: unmatched, allowed");
    rbac_engine_free(e);

    e = rbac_engine_new(RBAC_ALLOW);
    rbac_engine_finish(e);
    ok(!rbac_engine_allowed(e, &a_out, &pol), "ALLOW with no policies denies everything");
    rbac_engine_free(e);
    e = rbac_engine_new(RBAC_DENY);
    ok(rbac_engine_allowed(e, &a_out, &pol), "DENY with no policies allows everything");
    rbac_engine_free(e);
    is_str(rbac_action_name(RBAC_LOG), "LOG", "action name");
}

/* A peer certificate for the authenticated principal: its names by kind,
 * each a (value, len) that may hold NUL bytes; NULL cert: none presented. */
struct fake_name {
    int kind;
    const char *v;
    size_t len;
};
struct fake_cert {
    const struct fake_name *names;
    size_t n;
    int asked[3];                      /* how often each kind was asked for */
};

static bool fake_peer_names(void *arg, int which, bool (*fn)(void *, const char *, size_t), void *fn_arg)
{
    struct fake_cert *c = arg;
    if (!c)
        return false;
    c->asked[which]++;
    for (size_t i = 0; i < c->n; i++)
        if (c->names[i].kind == which && fn(fn_arg, c->names[i].v, c->names[i].len))
            return true;
    return false;
}

static struct rbac_rule *auth_rule(enum rbac_str_kind sk, const char *v, bool icase)
{
    struct rbac_rule *r = rbac_rule_new(RBAC_AUTHENTICATED);
    if (v) {
        r->has_name = true;
        if (rbac_str_init(&r->str, sk, v, icase, NULL) < 0)
            abort();
    }
    return r;
}

static bool auth_match(struct rbac_rule *r, bool tls, struct fake_cert *cert)
{
    struct rbac_ctx ctx = {.tls = tls, .peer_names = fake_peer_names, .peer_arg = cert};
    return rbac_rule_match(r, &ctx);
}

static void test_authenticated(void)
{
#define N(k, s) {RBAC_CERT_##k, s, sizeof(s) - 1}
    static const struct fake_name admin_names[] = {
        N(SUBJECT, "CN=admin,O=herald"), N(URI_SAN, "spiffe://example.org/web"),
        N(URI_SAN, "spiffe://example.org/admin"), N(DNS_SAN, "admin.example.org"),
    };
    static const struct fake_name dns_names[] = {N(SUBJECT, "CN=dns"), N(DNS_SAN, "ops.example.org")};
    static const struct fake_name subject_only[] = {N(SUBJECT, "CN=legacy,O=herald")};
    /* one URI SAN with a NUL inside: "spiffe://example.org/admin\0.evil" */
    static const struct fake_name nul_names[] = {N(SUBJECT, ""), N(URI_SAN, "spiffe://example.org/admin\0.evil")};
    static const struct fake_name comma_names[] = {
        N(SUBJECT, "CN=c"), N(URI_SAN, "spiffe://example.org/a"), N(URI_SAN, "b")};
#undef N
    struct fake_cert admin = {.names = admin_names, .n = 4}, dns = {.names = dns_names, .n = 2};
    struct fake_cert subj = {.names = subject_only, .n = 1}, nul = {.names = nul_names, .n = 2};
    struct fake_cert comma = {.names = comma_names, .n = 3};

    struct rbac_rule *any = auth_rule(RBAC_STR_EXACT, NULL, false);
    ok(!auth_match(any, false, NULL), "authenticated {}: a plain connection does not match");
    ok(auth_match(any, true, &admin), "authenticated {}: TLS with a certificate matches");
    ok(auth_match(any, true, NULL), "authenticated {}: TLS without a certificate matches (Envoy: ssl() is set)");
    ok(admin.asked[RBAC_CERT_URI_SAN] == 0, "authenticated {}: the certificate is never decoded");
    rbac_rule_free(any);

    struct rbac_rule *r = auth_rule(RBAC_STR_EXACT, "spiffe://example.org/admin", false);
    ok(auth_match(r, true, &admin), "exact: the second URI SAN matches");
    ok(!auth_match(r, false, &admin), "exact: not without TLS");
    ok(!auth_match(r, true, NULL), "exact: not without a certificate");
    ok(!auth_match(r, true, &dns), "exact: another certificate does not match");
    ok(!auth_match(r, true, &nul), "exact: a SAN with a NUL inside is not cut at the NUL");
    rbac_rule_free(r);

    r = auth_rule(RBAC_STR_PREFIX, "spiffe://example.org/admin", false);
    ok(auth_match(r, true, &nul), "prefix: the NUL SAN still starts with the prefix (as in Envoy)");
    rbac_rule_free(r);
    r = auth_rule(RBAC_STR_SUFFIX, ".evil", false);
    ok(auth_match(r, true, &nul), "suffix: seen past the NUL");
    rbac_rule_free(r);

    r = auth_rule(RBAC_STR_EXACT, "spiffe://example.org/a,b", false);
    ok(!auth_match(r, true, &comma), "two URI SANs are not one joined with ','");
    rbac_rule_free(r);

    r = auth_rule(RBAC_STR_EXACT, "ops.example.org", false);
    ok(auth_match(r, true, &dns), "exact: a DNS SAN when no URI SAN matches");
    rbac_rule_free(r);
    r = auth_rule(RBAC_STR_EXACT, "admin.example.org", false);
    ok(auth_match(r, true, &admin), "exact: a DNS SAN also when the certificate has URI SANs");
    rbac_rule_free(r);

    r = auth_rule(RBAC_STR_EXACT, "CN=legacy,O=herald", false);
    ok(auth_match(r, true, &subj), "exact: the subject when no SAN matches");
    rbac_rule_free(r);
    r = auth_rule(RBAC_STR_EXACT, "CN=admin,O=herald", false);
    ok(auth_match(r, true, &admin), "exact: the subject also when the certificate has SANs");
    rbac_rule_free(r);

    r = auth_rule(RBAC_STR_CONTAINS, "EXAMPLE.ORG/ADM", true);
    ok(auth_match(r, true, &admin), "contains + ignore_case");
    rbac_rule_free(r);
    r = auth_rule(RBAC_STR_REGEX, "spiffe://example\\.org/(ops|admin)", false);
    ok(auth_match(r, true, &admin), "safe_regex matches a URI SAN in full");
    ok(!auth_match(r, true, &nul), "safe_regex: the NUL SAN is not a full match");
    rbac_rule_free(r);

    /* Envoy matches "" as the subject of a TLS connection without a certificate */
    r = auth_rule(RBAC_STR_PREFIX, "", false);
    ok(auth_match(r, true, NULL), "prefix \"\": a TLS connection without a certificate (subject \"\")");
    ok(!auth_match(r, false, NULL), "prefix \"\": never a plain connection");
    rbac_rule_free(r);

    /* inside a policy: not_id over authenticated */
    struct rbac_rule *not = rbac_rule_new(RBAC_NOT);
    rbac_rule_add(not, auth_rule(RBAC_STR_EXACT, "spiffe://example.org/admin", false));
    ok(auth_match(not, true, &dns) && !auth_match(not, true, &admin), "not_id { authenticated }");
    rbac_rule_free(not);
}

/* ---------------------------------------------------------------- the matcher tree */

static struct rbac_pred *x_single(enum rbac_input_kind in, const char *arg, enum rbac_str_kind sk, const char *v)
{
    struct rbac_pred *p = rbac_pred_new(RBAC_PRED_SINGLE);
    p->in.kind = in;
    p->in.arg = arg ? strdup(arg) : NULL;
    if (rbac_str_init(&p->str, sk, v, false, NULL) < 0)
        abort();
    return p;
}

static void x_action(struct rbac_on_match *om, const char *name, enum rbac_action a)
{
    om->set = true;
    om->action = a;
    om->action_name = strdup(name);
}

static const char *x_result(const struct rbac_xmatcher *m, const struct rbac_ctx *ctx)
{
    const struct rbac_on_match *om = rbac_xmatch(m, ctx);
    return om ? om->action_name : "(none)";
}

/* Stands in for the core's herald_http_query_param: says what it was asked. */
static char *fake_query(const char *path, const char *name)
{
    char *out = NULL;
    if (!strcmp(name, "absent") || asprintf(&out, "%s in %s", name, path) < 0)
        return NULL;
    return out;
}

static void test_xmatcher(void)
{
    struct req r = {{"x-key", "x-role", "x-role"}, {"k1", "a", "b"}};
    struct rbac_ip remote, local;
    rbac_ip_parse(&remote, "10.1.2.3");
    remote.port = 4321;
    rbac_ip_parse(&local, "127.0.0.1");
    local.port = 8080;
    struct rbac_ctx ctx = {.header = get_header, .arg = &r, .path = "/api/v1?debug=1", .query = fake_query,
                           .remote = &remote, .direct_remote = &remote, .local = &local};

    /* inputs (the query's decoding is the core's herald_http_query_param, tested with routes) */
    struct rbac_input in = {RBAC_IN_QUERY_PARAM, "debug"};
    char *v = rbac_input_value(&in, &ctx);
    is_str(v, "debug in /api/v1?debug=1", "a query parameter: asked of the request's path");
    free(v);
    in.arg = "absent";
    ok(rbac_input_value(&in, &ctx) == NULL, "an absent parameter has no value");
    ctx.query = NULL;
    in.arg = "debug";
    ok(rbac_input_value(&in, &ctx) == NULL, "no request (the network filter): no query");
    ctx.query = fake_query;
    in = (struct rbac_input){RBAC_IN_REQUEST_HEADER, "x-role"};
    v = rbac_input_value(&in, &ctx);
    is_str(v, "a,b", "header values joined with ','");
    free(v);
    in = (struct rbac_input){RBAC_IN_SOURCE_PORT, NULL};
    v = rbac_input_value(&in, &ctx);
    is_str(v, "4321", "source port");
    free(v);
    in = (struct rbac_input){RBAC_IN_DESTINATION_IP, NULL};
    v = rbac_input_value(&in, &ctx);
    is_str(v, "127.0.0.1", "destination ip");
    free(v);
    in = (struct rbac_input){RBAC_IN_SOURCE_TYPE, NULL};
    ok(rbac_input_value(&in, &ctx) == NULL, "a remote source has no source type");
    in = (struct rbac_input){RBAC_IN_TRANSPORT_PROTOCOL, NULL};
    v = rbac_input_value(&in, &ctx);
    is_str(v, "raw_buffer", "transport protocol without TLS");
    free(v);
    in = (struct rbac_input){RBAC_IN_SERVER_NAME, NULL};
    ok(rbac_input_value(&in, &ctx) == NULL, "no SNI: absent");

    /* predicates: an absent input never matches, so its negation does */
    struct rbac_pred *absent = x_single(RBAC_IN_REQUEST_HEADER, "referer", RBAC_STR_PREFIX, "");
    ok(!rbac_pred_match(absent, &ctx), "absent header: no match, even for prefix \"\"");
    struct rbac_pred *not = rbac_pred_new(RBAC_PRED_NOT);
    rbac_pred_add(not, absent);
    ok(rbac_pred_match(not, &ctx), "not(absent) matches");
    rbac_pred_free(not);

    struct rbac_pred *ipm = rbac_pred_new(RBAC_PRED_SINGLE);
    ipm->in.kind = RBAC_IN_SOURCE_IP;
    ipm->is_ip = true;
    ipm->cidrs = calloc(2, sizeof(*ipm->cidrs));
    rbac_cidr_init(&ipm->cidrs[0], "192.168.0.0", 16, NULL);
    rbac_cidr_init(&ipm->cidrs[1], "10.0.0.0", 8, NULL);
    ipm->ncidrs = 2;
    ok(rbac_pred_match(ipm, &ctx), "Ip matcher: any range");
    rbac_cidr_init(&ipm->cidrs[1], "10.2.0.0", 16, NULL);
    ok(!rbac_pred_match(ipm, &ctx), "Ip matcher: no range");
    rbac_pred_free(ipm);

    /* a prefix tree, longest first, with a nested list that may find nothing */
    struct rbac_xmatcher *nested = rbac_xmatcher_new(RBAC_XM_LIST);
    struct rbac_xm_field *f = rbac_xmatcher_add_field(nested);
    f->pred = x_single(RBAC_IN_REQUEST_HEADER, "x-key", RBAC_STR_EXACT, "k2");
    x_action(&f->on_match, "key", RBAC_ALLOW);

    struct rbac_xmatcher *m = rbac_xmatcher_new(RBAC_XM_PREFIX);
    m->in.kind = RBAC_IN_REQUEST_HEADER;
    m->in.arg = strdup(":path");
    x_action(&rbac_xmatcher_add_entry(m, "/a")->on_match, "short", RBAC_DENY);
    struct rbac_xm_entry *e = rbac_xmatcher_add_entry(m, "/api");
    e->on_match.set = true;
    e->on_match.matcher = nested;
    x_action(&rbac_xmatcher_add_entry(m, "/api/v1")->on_match, "skipped", RBAC_ALLOW);
    m->entries[2].on_match.keep_matching = true;
    x_action(&m->on_no_match, "fallback", RBAC_LOG);
    rbac_xmatcher_finish(m);
    is_str(m->entries[0].key, "/api/v1", "prefix keys sorted longest first");

    struct req pr = {{":path", "x-key"}, {"/api/v1/x", "k2"}};
    struct rbac_ctx pctx = {.header = get_header, .arg = &pr};
    is_str(x_result(m, &pctx), "key", "keep_matching skipped, then the nested matcher decides");
    pr.values[1] = "nope";
    is_str(x_result(m, &pctx), "short", "nested found nothing: the next shorter prefix");
    pr.values[0] = "/b";
    is_str(x_result(m, &pctx), "fallback", "no key: on_no_match");
    ok(rbac_xmatcher_has_log(m), "the tree has a LOG action");

    struct rbac_engine *eng = rbac_engine_new_tree(m);
    struct rbac_verdict vd;
    rbac_engine_decide(eng, &pctx, &vd);
    ok(vd.allowed && vd.log_hint == 1 && !strcmp(vd.policy, "fallback"), "LOG allows and asks for the log");
    pr.values[0] = "/abc";
    rbac_engine_decide(eng, &pctx, &vd);
    ok(!vd.allowed && vd.log_hint == 0 && !strcmp(vd.policy, "short"), "DENY, no log");
    rbac_engine_free(eng);

    /* an exact tree without on_no_match: nothing matched denies */
    m = rbac_xmatcher_new(RBAC_XM_EXACT);
    m->in.kind = RBAC_IN_REQUEST_HEADER;
    m->in.arg = strdup("x-key");
    x_action(&rbac_xmatcher_add_entry(m, "k1")->on_match, "k1", RBAC_ALLOW);
    eng = rbac_engine_new_tree(m);
    rbac_engine_decide(eng, &ctx, &vd);
    ok(vd.allowed && !strcmp(vd.policy, "k1") && vd.log_hint == -1, "exact key");
    r.values[0] = "k10";
    rbac_engine_decide(eng, &ctx, &vd);
    ok(!vd.allowed && vd.policy == NULL, "no key and no on_no_match: denied, no policy");
    rbac_engine_free(eng);
}

/* ---------------------------------------------------------------- CEL conditions */

static struct cel_expr *c_str(const char *v)
{
    struct cel_expr *e = cel_expr_new(CEL_CONST);
    e->value.t = CEL_T_STRING;
    e->value.s = strdup(v);
    return e;
}

static struct cel_expr *c_int(int64_t v)
{
    struct cel_expr *e = cel_expr_new(CEL_CONST);
    e->value.t = CEL_T_INT;
    e->value.i = v;
    return e;
}

static struct cel_expr *c_uint(uint64_t v)
{
    struct cel_expr *e = cel_expr_new(CEL_CONST);
    e->value.t = CEL_T_UINT;
    e->value.u = v;
    return e;
}

static struct cel_expr *c_attr(enum cel_attr a)
{
    struct cel_expr *e = cel_expr_new(CEL_ATTR);
    e->attr = a;
    return e;
}

static struct cel_expr *c_call(enum cel_fn fn, struct cel_expr *a, struct cel_expr *b)
{
    struct cel_expr *e = cel_expr_new(CEL_CALL);
    e->fn = fn;
    if (a)
        cel_expr_add(e, a);
    if (b)
        cel_expr_add(e, b);
    return e;
}

static struct cel_expr *c_header(const char *name)
{
    return c_call(CEL_F_INDEX, c_attr(CEL_A_REQUEST_HEADERS), c_str(name));
}

/* The condition's value as text ("true", "error", "42", "\"s\""), then the condition freed. */
static const char *c_show(struct cel_expr *e, const struct rbac_ctx *ctx)
{
    static char buf[128];
    struct cel_val v = cel_eval(e, ctx);
    switch (v.t) {
    case CEL_T_BOOL: snprintf(buf, sizeof(buf), "%s", v.b ? "true" : "false"); break;
    case CEL_T_INT: snprintf(buf, sizeof(buf), "%lld", (long long)v.i); break;
    case CEL_T_UINT: snprintf(buf, sizeof(buf), "%lluu", (unsigned long long)v.u); break;
    case CEL_T_STRING: snprintf(buf, sizeof(buf), "\"%s\"", v.s); break;
    case CEL_T_ERROR: snprintf(buf, sizeof(buf), "error"); break;
    default: snprintf(buf, sizeof(buf), "type %d", (int)v.t); break;
    }
    cel_val_fini(&v);
    cel_expr_free(e);
    return buf;
}

static void test_cel(void)
{
    struct req r = {{":method", ":authority", "x-a", "x-a", "x-n"}, {"GET", "h.example", "1", "2", "héllo"}};
    struct rbac_ip remote, local;
    rbac_ip_parse(&remote, "10.1.2.3");
    remote.port = 4321;
    rbac_ip_parse(&local, "::1");
    local.port = 443;
    struct rbac_ctx ctx = {.header = get_header, .arg = &r, .path = "/admin/x?q=1#f", .remote = &remote,
                           .local = &local};

    ok(cel_fn_of("_&&_") == CEL_F_AND && cel_fn_of("startsWith") == CEL_F_STARTS_WITH && cel_fn_of("nope") < 0,
       "function names");
    ok(cel_attr_of("request", "path") == CEL_A_REQUEST_PATH && cel_attr_of("request", "nope") < 0, "attributes");

    is_str(c_show(c_attr(CEL_A_REQUEST_PATH), &ctx), "\"/admin/x?q=1#f\"", "request.path");
    is_str(c_show(c_attr(CEL_A_REQUEST_URL_PATH), &ctx), "\"/admin/x\"", "request.url_path");
    is_str(c_show(c_attr(CEL_A_REQUEST_QUERY), &ctx), "\"q=1\"", "request.query");
    is_str(c_show(c_attr(CEL_A_REQUEST_HOST), &ctx), "\"h.example\"", "request.host");
    is_str(c_show(c_attr(CEL_A_SOURCE_ADDRESS), &ctx), "\"10.1.2.3:4321\"", "source.address");
    is_str(c_show(c_attr(CEL_A_DESTINATION_ADDRESS), &ctx), "\"[::1]:443\"", "destination.address (v6)");
    is_str(c_show(c_attr(CEL_A_DESTINATION_PORT), &ctx), "443", "destination.port");
    is_str(c_show(c_attr(CEL_A_CONNECTION_MTLS), &ctx), "false", "connection.mtls without TLS");
    is_str(c_show(c_attr(CEL_A_REQUEST_REFERER), &ctx), "error", "a missing header attribute is an error");
    is_str(c_show(c_header("x-a"), &ctx), "\"1,2\"", "headers[]: values joined");
    is_str(c_show(c_header("x-missing"), &ctx), "error", "headers[] of a missing key: error");
    is_str(c_show(c_call(CEL_F_IN, c_str("x-a"), c_attr(CEL_A_REQUEST_HEADERS)), &ctx), "true", "'x-a' in headers");
    is_str(c_show(c_call(CEL_F_SIZE, c_header("x-n"), NULL), &ctx), "5", "size() counts code points");

    /* logic absorbs errors the CEL way */
    struct cel_expr *f = c_call(CEL_F_EQ, c_int(1), c_int(2));
    is_str(c_show(c_call(CEL_F_AND, c_header("x-missing"), f), &ctx), "false", "error && false = false");
    struct cel_expr *t = c_call(CEL_F_EQ, c_int(2), c_uint(2));
    is_str(c_show(c_call(CEL_F_OR, c_header("x-missing"), t), &ctx), "true", "error || true = true (2 == 2u)");
    is_str(c_show(c_call(CEL_F_AND, c_header("x-missing"), c_call(CEL_F_EQ, c_int(1), c_int(1))), &ctx), "error",
           "error && true = error");
    struct cel_expr *missing = c_header("x-missing");
    ok(!cel_true(missing, &ctx), "an error is not true");
    cel_expr_free(missing);
    struct cel_expr *notx = c_call(CEL_F_NOT, c_header("x-missing"), NULL);
    ok(!cel_true(notx, &ctx), "!error is not true either");
    cel_expr_free(notx);

    is_str(c_show(c_call(CEL_F_STARTS_WITH, c_attr(CEL_A_REQUEST_PATH), c_str("/admin/")), &ctx), "true",
           "startsWith");
    is_str(c_show(c_call(CEL_F_ENDS_WITH, c_attr(CEL_A_REQUEST_URL_PATH), c_str("/x")), &ctx), "true", "endsWith");
    is_str(c_show(c_call(CEL_F_CONTAINS, c_attr(CEL_A_REQUEST_HOST), c_str("exam")), &ctx), "true", "contains");
    struct cel_expr *m = c_call(CEL_F_MATCHES, c_attr(CEL_A_REQUEST_HOST), c_str("^h\\.ex"));
    ok(cel_compile_regex(m, "^h\\.ex", NULL) == 0, "a constant pattern compiles");
    is_str(c_show(m, &ctx), "true", "matches is a search");
    char *err = NULL;
    struct cel_expr *bad = c_call(CEL_F_MATCHES, c_str("x"), c_str("("));
    ok(cel_compile_regex(bad, "(", &err) < 0 && err && strstr(err, "offset"), "a bad pattern: %s", err ? err : "");
    free(err);
    cel_expr_free(bad);
    is_str(c_show(c_call(CEL_F_MATCHES, c_str("x"), c_call(CEL_F_ADD, c_str("("), c_str(""))), &ctx), "error",
           "a bad pattern at run time is an error");

    is_str(c_show(c_call(CEL_F_ADD, c_int(INT64_MAX), c_int(1)), &ctx), "error", "int overflow is an error");
    is_str(c_show(c_call(CEL_F_DIV, c_int(7), c_int(0)), &ctx), "error", "division by zero is an error");
    is_str(c_show(c_call(CEL_F_MOD, c_int(-7), c_int(3)), &ctx), "-1", "%% truncates like C and CEL");
    is_str(c_show(c_call(CEL_F_ADD, c_str("a"), c_str("b")), &ctx), "\"ab\"", "string +");
    is_str(c_show(c_call(CEL_F_INT, c_str("-12"), NULL), &ctx), "-12", "int(string)");
    is_str(c_show(c_call(CEL_F_INT, c_str("12x"), NULL), &ctx), "error", "int() of a non-number");
    is_str(c_show(c_call(CEL_F_UINT, c_int(-1), NULL), &ctx), "error", "uint(-1)");
    is_str(c_show(c_call(CEL_F_STRING, c_attr(CEL_A_SOURCE_PORT), NULL), &ctx), "\"4321\"", "string(int)");
    is_str(c_show(c_call(CEL_F_LT, c_str("abc"), c_str("abd")), &ctx), "true", "strings order");
    is_str(c_show(c_call(CEL_F_LT, c_str("1"), c_int(2)), &ctx), "error", "string < int is an error");
    is_str(c_show(c_call(CEL_F_EQ, c_str("1"), c_int(1)), &ctx), "false", "'1' == 1 is false, not an error");

    struct cel_expr *list = cel_expr_new(CEL_LIST);
    cel_expr_add(list, c_str("POST"));
    cel_expr_add(list, c_str("GET"));
    is_str(c_show(c_call(CEL_F_IN, c_attr(CEL_A_REQUEST_METHOD), list), &ctx), "true", "method in [list]");
    list = cel_expr_new(CEL_LIST);
    cel_expr_add(list, c_str("a"));
    is_str(c_show(c_call(CEL_F_INDEX, list, c_int(1)), &ctx), "error", "list index out of range");

    struct cel_expr *has = cel_expr_new(CEL_SELECT);
    has->test_only = true;
    cel_expr_add(has, c_attr(CEL_A_REQUEST_REFERER));
    is_str(c_show(has, &ctx), "false", "has(request.referer) without one");
    struct cel_expr *hs = cel_expr_new(CEL_SELECT);
    hs->field = strdup("x-a");
    hs->test_only = true;
    cel_expr_add(hs, c_attr(CEL_A_REQUEST_HEADERS));
    is_str(c_show(hs, &ctx), "true", "has(request.headers.x-a)");

    /* a policy whose condition is false does not match */
    struct rbac_engine *e = rbac_engine_new(RBAC_ALLOW);
    struct rbac_policy *p = rbac_engine_add_policy(e, "cond");
    rbac_policy_add_permission(p, rbac_rule_new(RBAC_ANY));
    rbac_policy_add_principal(p, rbac_rule_new(RBAC_ANY));
    p->condition = c_call(CEL_F_STARTS_WITH, c_attr(CEL_A_REQUEST_PATH), c_str("/admin/"));
    rbac_engine_finish(e);
    ok(rbac_engine_allowed(e, &ctx, NULL), "condition true: the policy matches");
    ctx.path = "/public";
    ok(!rbac_engine_allowed(e, &ctx, NULL), "condition false: it does not");
    ctx.path = NULL;
    ok(!rbac_engine_allowed(e, &ctx, NULL), "condition an error: it does not");
    rbac_engine_free(e);
}

int main(void)
{
    test_strings();
    test_addresses();
    test_rules();
    test_engines();
    test_authenticated();
    test_xmatcher();
    test_cel();
    return done_testing();
}
