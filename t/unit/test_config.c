/* The config loader: YAML/JSON trees, the schema checker, the bootstrap
 * extraction, and the exact position and wording of its error messages. */
#include <dirent.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/bootstrap.h"
#include "config/schema.h"
#include "config/tree.h"
#include "tap.h"

#ifndef SRCDIR
#define SRCDIR "."
#endif

/* Loads text as a file called name and returns the bootstrap, or NULL with
 * the first error (parse error or diagnostic) in *first (malloc'd). */
static struct bootstrap *load(const char *name, const char *text, char **first, size_t *nerrors,
                              size_t *nwarnings)
{
    char *err = NULL;
    struct cfg_diag d = { 0 };
    struct bootstrap *b = NULL;
    *first = NULL;
    if (nerrors)
        *nerrors = 0;
    if (nwarnings)
        *nwarnings = 0;
    struct cfg_doc *doc = cfg_load_string(text, strlen(text), name, &err);
    if (!doc) {
        *first = err;
        if (nerrors)
            *nerrors = 1;
        return NULL;
    }
    b = bootstrap_load(doc, &d);
    if (d.nerrors)
        *first = strdup(d.errors[0]);
    else if (d.nwarnings)
        *first = strdup(d.warnings[0]);
    if (nerrors)
        *nerrors = d.nerrors;
    if (nwarnings)
        *nwarnings = d.nwarnings;
    diag_free(&d);
    return b;
}

/* Asserts that text fails with an error starting "name:where: " and containing want. */
static void fails(const char *test, const char *name, const char *text, const char *where, const char *want)
{
    char *first;
    struct bootstrap *b = load(name, text, &first, NULL, NULL);
    ok(b == NULL, "%s: rejected", test);
    char prefix[256];
    snprintf(prefix, sizeof(prefix), "%s:%s", name, where);
    ok(first && strncmp(first, prefix, strlen(prefix)) == 0, "%s: at %s", test, prefix);
    if (!(first && strncmp(first, prefix, strlen(prefix)) == 0))
        printf("#   got: '%s'\n", first ? first : "(null)");
    like(first, want, "%s: message", test);
    bootstrap_free(b);
    free(first);
}

static struct bootstrap *loads(const char *test, const char *name, const char *text)
{
    char *first;
    struct bootstrap *b = load(name, text, &first, NULL, NULL);
    ok(b != NULL, "%s: loads", test);
    if (!b)
        printf("#   error: %s\n", first ? first : "(null)");
    free(first);
    return b;
}

#define GOOD_YAML                                                                   \
    "admin:\n"                                                                      \
    "  address:\n"                                                                  \
    "    socket_address: { address: 127.0.0.1, port_value: 9901 }\n"                \
    "static_resources:\n"                                                           \
    "  listeners:\n"                                                                \
    "  - name: main\n"                                                              \
    "    address:\n"                                                                \
    "      socket_address: { address: 0.0.0.0, port_value: 10000 }\n"               \
    "    filter_chains:\n"                                                          \
    "    - filters:\n"                                                              \
    "      - name: envoy.filters.network.tcp_proxy\n"                               \
    "        typed_config:\n"                                                       \
    "          \"@type\": type.googleapis.com/envoy.extensions.filters.network."    \
    "tcp_proxy.v3.TcpProxy\n"                                                       \
    "          stat_prefix: tcp\n"                                                  \
    "          cluster: backend\n"                                                  \
    "  clusters:\n"                                                                 \
    "  - name: backend\n"                                                           \
    "    type: static\n"                                                            \
    "    lb_policy: least_request\n"                                                \
    "    connect_timeout: 0.25s\n"                                                  \
    "    load_assignment:\n"                                                        \
    "      cluster_name: backend\n"                                                 \
    "      endpoints:\n"                                                            \
    "      - lb_endpoints:\n"                                                       \
    "        - endpoint:\n"                                                         \
    "            address:\n"                                                        \
    "              socket_address: { address: 127.0.0.1, port_value: 8080 }\n"

#define GOOD_JSON                                                                   \
    "{\n"                                                                           \
    "  \"admin\": {\"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", " \
    "\"port_value\": 9901}}},\n"                                                    \
    "  \"static_resources\": {\n"                                                   \
    "    \"listeners\": [{\n"                                                       \
    "      \"name\": \"main\",\n"                                                   \
    "      \"address\": {\"socket_address\": {\"address\": \"0.0.0.0\", "           \
    "\"port_value\": 10000}},\n"                                                    \
    "      \"filter_chains\": [{\"filters\": [{\n"                                  \
    "        \"name\": \"envoy.filters.network.tcp_proxy\",\n"                      \
    "        \"typed_config\": {\n"                                                 \
    "          \"@type\": \"type.googleapis.com/envoy.extensions.filters.network."  \
    "tcp_proxy.v3.TcpProxy\",\n"                                                    \
    "          \"stat_prefix\": \"tcp\", \"cluster\": \"backend\"}}]}]}],\n"        \
    "    \"clusters\": [{\n"                                                        \
    "      \"name\": \"backend\",\n"                                                \
    "      \"type\": \"static\",\n"                                                 \
    "      \"lb_policy\": \"least_request\",\n"                                     \
    "      \"connect_timeout\": \"0.25s\",\n"                                       \
    "      \"load_assignment\": {\"cluster_name\": \"backend\", \"endpoints\": [{"  \
    "\"lb_endpoints\": [{\"endpoint\": {\"address\": {\"socket_address\": "        \
    "{\"address\": \"127.0.0.1\", \"port_value\": 8080}}}}]}]}\n"                   \
    "    }]\n"                                                                      \
    "  }\n"                                                                         \
    "}\n"

/* a cluster preamble: clusters[0] starts at line 3, column 5 */
#define CL "static_resources:\n  clusters:\n  - name: backend\n"
#define EP(addr, port)                                                              \
    "        - endpoint:\n            address:\n              socket_address: "    \
    "{ address: " addr ", port_value: " port " }\n"
#define LA "    load_assignment:\n      cluster_name: x\n      endpoints:\n      - lb_endpoints:\n"

/* a listener preamble: listeners[0] at line 3 */
#define LS "static_resources:\n  listeners:\n  - name: l\n"
#define LADDR(port) "    address: { socket_address: { address: 0.0.0.0, port_value: " port " } }\n"
#define TCP_CHAIN                                                                   \
    "    filter_chains:\n    - filters:\n      - name: envoy.filters.network.tcp_proxy\n"

static void test_good(void)
{
    struct bootstrap *y = loads("good yaml", "good.yaml", GOOD_YAML);
    struct bootstrap *j = loads("good json", "good.json", GOOD_JSON);
    if (!y || !j) {
        bootstrap_free(y);
        bootstrap_free(j);
        return;
    }
    json_t *jy = cfg_to_json(y->doc->root), *jj = cfg_to_json(j->doc->root);
    ok(json_equal(jy, jj), "YAML and JSON give the same tree");
    json_decref(jy);
    json_decref(jj);

    is_int(y->nlisteners, 1, "one listener");
    is_str(y->listeners[0].name, "main", "listener name");
    is_str(y->listeners[0].address.host, "0.0.0.0", "listener host");
    is_int(y->listeners[0].address.port, 10000, "listener port");
    is_int(y->listeners[0].nchains, 1, "one chain");
    is_int(y->listeners[0].chains[0].nfilters, 1, "one filter");
    is_str(y->listeners[0].chains[0].filters[0].type_url,
           "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", "type url without host");
    is_str(herald_cfg_str(herald_cfg_get(y->listeners[0].chains[0].filters[0].typed_config, "cluster"), NULL),
           "backend", "typed_config kept");
    is_int(y->listeners[0].buffer_limit, 1024 * 1024, "listener buffer default");
    is_int(y->listeners[0].listener_filters_timeout_ms, 15000, "listener_filters_timeout default");
    ok(y->listeners[0].reuse_port, "enable_reuse_port default");
    is_int(y->listeners[0].backlog, 1024, "backlog default");
    ok(y->admin.present, "admin present");
    is_int(y->admin.address.port, 9901, "admin port");

    const struct cluster_cfg *c = bootstrap_find_cluster(y, "backend");
    ok(c != NULL, "find cluster");
    ok(bootstrap_find_cluster(y, "nope") == NULL, "find missing cluster");
    if (c) {
        is_int(c->type, CLUSTER_STATIC, "type static (lower case)");
        is_int(c->lb_policy, LB_LEAST_REQUEST, "lb_policy least_request (lower case)");
        is_int(c->connect_timeout_ms, 250, "connect_timeout 0.25s");
        is_int(c->buffer_limit, 1024 * 1024, "cluster buffer default");
        is_int(c->dns_refresh_rate_ms, 5000, "dns_refresh_rate default");
        is_int(c->thresholds[0].max_connections, 1024, "max_connections default");
        is_int(c->thresholds[1].max_retries, 3, "max_retries default");
        is_int(c->least_request_choice_count, 2, "choice_count default");
        is_int(c->nlocalities, 1, "one locality");
        is_int(c->localities[0].nendpoints, 1, "one endpoint");
        is_int(c->localities[0].endpoints[0].weight, 1, "weight default");
        is_int(c->localities[0].endpoints[0].address.port, 8080, "endpoint port");
        const struct herald_cfg *lp = herald_cfg_get(c->node, "lb_policy");
        is_str(herald_cfg_str(lp, NULL), "LEAST_REQUEST", "enum rewritten to canonical spelling");
        char path[128];
        herald_cfg_path(lp, path, sizeof(path));
        is_str(path, "static_resources.clusters[0].lb_policy", "path");
        is_int(herald_cfg_line(lp), 19, "line of lb_policy");
        is_int(herald_cfg_column(lp), 5, "column of lb_policy");
    }
    const struct cluster_cfg *cj = bootstrap_find_cluster(j, "backend");
    if (cj) {
        const struct herald_cfg *lp = herald_cfg_get(cj->node, "lb_policy");
        is_int(herald_cfg_line(lp), 15, "JSON: line of lb_policy");
        is_int(herald_cfg_column(lp), 7, "JSON: column of lb_policy");
        const struct herald_cfg *port = herald_cfg_get(
            herald_cfg_get(herald_cfg_get(j->listeners[0].node, "address"), "socket_address"), "port_value");
        is_int(herald_cfg_line(port), 6, "JSON: line of nested member");
        is_int(herald_cfg_column(port), 60, "JSON: column of nested member");
    }
    bootstrap_free(y);
    bootstrap_free(j);
}

static void test_normalisation(void)
{
    /* one mapping where a list is expected, camelCase names, durations */
    struct bootstrap *b = loads("single values and camelCase", "n.yaml",
                                "staticResources:\n"
                                "  listeners:\n"
                                "    name: one\n"
                                "    address: { socketAddress: { address: '::', portValue: '8080' } }\n"
                                "    filterChains:\n"
                                "      filters: { name: envoy.filters.network.echo }\n"
                                "    listenerFiltersTimeout: 1s\n"
                                "  clusters: { name: c, type: STRICT_DNS, dns_refresh_rate: 1.000340s,\n"
                                "    connect_timeout: 0.0001s, lb_policy: Random,\n"
                                "    load_assignment: { cluster_name: c, endpoints: { lb_endpoints: {\n"
                                "      endpoint: { address: { socket_address: { address: example.com,\n"
                                "          port_value: 80 } } } } } } }\n");
    if (b) {
        is_int(b->nlisteners, 1, "listeners: a mapping becomes a list of one");
        is_int(b->listeners[0].address.port, 8080, "portValue (a string) -> port_value");
        is_int(b->listeners[0].nchains, 1, "filterChains -> filter_chains, list of one");
        is_int(b->listeners[0].chains[0].nfilters, 1, "filters: list of one");
        ok(b->listeners[0].chains[0].filters[0].typed_config == NULL, "no typed_config");
        ok(b->listeners[0].chains[0].filters[0].type_url == NULL, "no type url");
        is_int(b->listeners[0].listener_filters_timeout_ms, 1000, "listener_filters_timeout 1s");
        ok(herald_cfg_get(b->doc->root, "static_resources") != NULL, "key normalised in place");
        is_int(b->clusters[0].type, CLUSTER_STRICT_DNS, "STRICT_DNS");
        is_int(b->clusters[0].lb_policy, LB_RANDOM, "Random");
        is_int(b->clusters[0].dns_refresh_rate_ms, 1000, "1.000340s");
        is_int(b->clusters[0].connect_timeout_ms, 1, "tiny duration rounds up to 1 ms");
        is_str(b->clusters[0].localities[0].endpoints[0].address.host, "example.com", "DNS name kept");
    }
    bootstrap_free(b);

    /* YAML anchors, aliases and merge keys */
    b = loads("anchors and merge keys", "m.yaml",
              "static_resources:\n"
              "  clusters:\n"
              "  - &base\n"
              "    name: a\n"
              "    connect_timeout: 2s\n"
              "    per_connection_buffer_limit_bytes: 0x8000\n"
              "  - <<: *base\n"
              "    name: b\n");
    if (b) {
        is_int(b->nclusters, 2, "two clusters");
        is_str(b->clusters[1].name, "b", "explicit key wins over merge");
        is_int(b->clusters[1].connect_timeout_ms, 2000, "merged connect_timeout");
        is_int(b->clusters[1].buffer_limit, 0x8000, "hex integer");
    }
    bootstrap_free(b);

    /* an empty file is an empty config */
    b = loads("empty file", "e.yaml", "# nothing\n");
    if (b)
        is_int(b->nlisteners, 0, "no listeners");
    bootstrap_free(b);

    /* deprecated: a warning, still loads */
    char *first;
    size_t nerr, nwarn;
    b = load("w.yaml", "admin:\n  access_log_path: /dev/null\n", &first, &nerr, &nwarn);
    ok(b != NULL && nerr == 0 && nwarn == 1, "deprecated field loads with a warning");
    like(first, "w.yaml:2:3: admin.access_log_path: 'access_log_path' is deprecated", "deprecation warning");
    free(first);
    bootstrap_free(b);
}

static void test_scalars(void)
{
    char *err = NULL;
    const char *text = "a: 12\nb: -3\nc: 0x1F\nd: 1.5\ne: true\nf: False\ng: yes\nh: ~\ni: null\nj:\n"
                       "k: '12'\nl: \"true\"\nm: 1e3\nn: 99999999999999999999\no: !!str 7\n";
    struct cfg_doc *d = cfg_load_string(text, strlen(text), "s.yaml", &err);
    ok(d != NULL, "scalars parse");
    if (!d)
        return;
    const struct herald_cfg *r = d->root;
    is_int(herald_cfg_type(herald_cfg_get(r, "a")), HERALD_CFG_INT, "12 is INT");
    is_int(herald_cfg_int(herald_cfg_get(r, "b"), 0), -3, "-3");
    is_int(herald_cfg_int(herald_cfg_get(r, "c"), 0), 31, "0x1F");
    is_int(herald_cfg_type(herald_cfg_get(r, "d")), HERALD_CFG_REAL, "1.5 is REAL");
    ok(herald_cfg_bool(herald_cfg_get(r, "e"), false), "true");
    is_int(herald_cfg_type(herald_cfg_get(r, "f")), HERALD_CFG_BOOL, "False is BOOL");
    is_int(herald_cfg_type(herald_cfg_get(r, "g")), HERALD_CFG_STRING, "yes is a STRING");
    is_int(herald_cfg_type(herald_cfg_get(r, "h")), HERALD_CFG_NULL, "~ is NULL");
    is_int(herald_cfg_type(herald_cfg_get(r, "i")), HERALD_CFG_NULL, "null is NULL");
    is_int(herald_cfg_type(herald_cfg_get(r, "j")), HERALD_CFG_NULL, "empty is NULL");
    is_int(herald_cfg_type(herald_cfg_get(r, "k")), HERALD_CFG_STRING, "'12' is a STRING");
    ok(herald_cfg_get(r, "k")->quoted, "'12' is quoted");
    is_int(herald_cfg_int(herald_cfg_get(r, "k"), 0), 12, "herald_cfg_int accepts \"12\"");
    is_int(herald_cfg_type(herald_cfg_get(r, "l")), HERALD_CFG_STRING, "\"true\" is a STRING");
    ok(herald_cfg_real(herald_cfg_get(r, "m"), 0) == 1000.0, "1e3");
    is_int(herald_cfg_type(herald_cfg_get(r, "n")), HERALD_CFG_REAL, "huge integer becomes REAL");
    is_int(herald_cfg_type(herald_cfg_get(r, "o")), HERALD_CFG_STRING, "!!str 7 is a STRING");
    is_int(herald_cfg_len(r), 15, "15 members");
    is_str(herald_cfg_key_at(r, 3), "d", "key_at");
    ok(herald_cfg_at(r, 99) == NULL && herald_cfg_get(NULL, "x") == NULL, "NULL-safe accessors");
    is_int(herald_cfg_int(NULL, 7), 7, "default int");
    is_int(herald_cfg_duration_ms(NULL, 9), 9, "default duration");

    char *e2 = NULL;
    is_int(herald_cfg_errorf(herald_cfg_get(r, "d"), &e2, "bad %s", "thing"), -1, "errorf returns -1");
    is_str(e2, "s.yaml:4:1: d: bad thing", "errorf format");
    free(e2);
    char where[128];
    cfg_where(herald_cfg_get(r, "e"), where, sizeof(where));
    is_str(where, "s.yaml:5:1: e", "cfg_where");

    /* editing */
    struct herald_cfg *obj = d->root;
    cfg_set(obj, "a", cfg_new(HERALD_CFG_BOOL, obj));
    is_int(herald_cfg_type(herald_cfg_get(obj, "a")), HERALD_CFG_BOOL, "cfg_set replaces");
    cfg_remove(obj, "b");
    ok(herald_cfg_get(obj, "b") == NULL, "cfg_remove");
    is_str(herald_cfg_key_at(obj, 1), "c", "remove reindexes");
    is_int(herald_cfg_at(obj, 1)->index, 1, "index updated");
    struct herald_cfg *arr = cfg_wrap_in_array((struct herald_cfg *)herald_cfg_get(obj, "c"));
    is_int(herald_cfg_type(herald_cfg_get(obj, "c")), HERALD_CFG_ARRAY, "wrapped");
    char path[64];
    herald_cfg_path(herald_cfg_at(arr, 0), path, sizeof(path));
    is_str(path, "c[0]", "path of a wrapped item");
    cfg_doc_free(d);

    /* merge: objects merge, lists concatenate, scalars replace */
    const char *t1 = "a: {x: 1, y: 2}\nl: [1]\ns: old\n", *t2 = "a: {y: 3, z: 4}\nl: [2]\ns: new\n";
    struct cfg_doc *base = cfg_load_string(t1, strlen(t1), "base.yaml", NULL);
    struct cfg_doc *over = cfg_load_string(t2, strlen(t2), "over.yaml", NULL);
    cfg_merge(base, over);
    ok(over->root == NULL, "cfg_merge empties over");
    cfg_doc_free(over);
    json_t *got = cfg_to_json(base->root);
    char *dump = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS);
    is_str(dump, "{\"a\":{\"x\":1,\"y\":3,\"z\":4},\"l\":[1,2],\"s\":\"new\"}", "cfg_merge");
    is_str(herald_cfg_file(herald_cfg_get(base->root, "s")), "over.yaml", "merged node keeps its file");
    free(dump);
    json_decref(got);
    cfg_doc_free(base);

    uint64_t ms = 0;
    ok(schema_parse_duration_ms("1s", &ms) == 0 && ms == 1000, "1s");
    ok(schema_parse_duration_ms("0.25s", &ms) == 0 && ms == 250, "0.25s");
    ok(schema_parse_duration_ms("0s", &ms) == 0 && ms == 0, "0s");
    ok(schema_parse_duration_ms("-1s", &ms) < 0, "-1s refused");
    ok(schema_parse_duration_ms("5", &ms) < 0, "5 refused");
    ok(schema_parse_duration_ms("1.0000000001s", &ms) < 0, "more than 9 decimals refused");
    is_str(schema_v2_filter_hint("envoy.router"), "envoy.filters.http.router", "v2 hint router");
    is_str(schema_v2_filter_hint("envoy.file_access_log"), "envoy.access_loggers.file", "v2 hint file log");
    ok(schema_v2_filter_hint("envoy.filters.http.router") == NULL, "no hint for a v3 name");
}

static void test_errors(void)
{
    fails("did you mean", "e.yaml", CL "    conect_timeout: 1s\n",
          "4:5: static_resources.clusters[0].conect_timeout: ",
          "unknown field 'conect_timeout' in envoy.config.cluster.v3.Cluster "
          "(did you mean 'connect_timeout'?)");
    fails("bad enum", "e.yaml", CL "    lb_policy: ROUND_ROBBIN\n",
          "4:5: static_resources.clusters[0].lb_policy: ",
          "unknown value 'ROUND_ROBBIN' (expected one of ROUND_ROBIN, LEAST_REQUEST, RING_HASH");
    fails("bad enum suggestion", "e.yaml", CL "    lb_policy: ROUND_ROBBIN\n", "4:5:",
          "did you mean 'ROUND_ROBIN'?");
    fails("wrong type uint", "e.yaml", CL "    per_connection_buffer_limit_bytes: lots\n",
          "4:5: static_resources.clusters[0].per_connection_buffer_limit_bytes: ",
          "expected a non-negative integer, got 'lots'");
    fails("negative uint", "e.yaml", CL "    per_connection_buffer_limit_bytes: -1\n", "4:5:",
          "expected a non-negative integer, got -1");
    fails("wrong type message", "e.yaml", CL "    load_assignment: foo\n",
          "4:5: static_resources.clusters[0].load_assignment: ",
          "expected a mapping (envoy.config.endpoint.v3.ClusterLoadAssignment), got 'foo'");
    fails("list for a scalar", "e.yaml", CL "    alt_stat_name: [a, b]\n", "4:5:",
          "expected a single value, got a list");
    fails("missing required", "e.yaml", "static_resources:\n  clusters:\n  - type: STATIC\n",
          "3:5: static_resources.clusters[0]: ", "missing required field 'name'");
    fails("duplicate YAML key", "e.yaml", CL "    type: STATIC\n    type: STRICT_DNS\n", "5:5: ",
          "duplicate key 'type' (first at line 4)");
    fails("duplicate JSON key", "e.json",
          "{\"static_resources\": {\n  \"clusters\": [],\n  \"clusters\": []}}",
          "3:3: ", "duplicate key 'clusters' (first at line 2)");
    fails("hosts (v2)", "e.yaml", CL "    hosts: [{socket_address: {address: 1.2.3.4, port_value: 80}}]\n",
          "4:5: static_resources.clusters[0].hosts: ", "v2 field: use load_assignment");
    fails("config (v2)", "e.yaml",
          LS LADDR("80") TCP_CHAIN "        config: {stat_prefix: x, cluster: c}\n",
          "8:9: static_resources.listeners[0].filter_chains[0].filters[0].config: ",
          "v2 field: use typed_config");
    fails("tls_context (v2)", "e.yaml", CL "    tls_context: {}\n", "4:5:", "use transport_socket");
    fails("bad duration (number)", "e.yaml", CL "    connect_timeout: 5\n",
          "4:5: static_resources.clusters[0].connect_timeout: ",
          "expected a duration like \"1s\" or \"0.25s\", got 5: durations are seconds with an 's' suffix; "
          "write \"5s\"");
    fails("bad duration (ms)", "e.yaml", CL "    connect_timeout: 250ms\n", "4:5:", "write \"0.25s\"");
    fails("bad duration (negative)", "e.yaml", CL "    connect_timeout: -1s\n", "4:5:", "cannot be negative");
    fails("port too large", "e.yaml", LS LADDR("70000") TCP_CHAIN,
          "4:52: static_resources.listeners[0].address.socket_address.port_value: ",
          "port 70000 is out of range (0-65535)");
    fails("tab in YAML", "e.yaml", "static_resources:\n\tclusters: []\n", "2:1: ",
          "tab: YAML indentation must use spaces");
    fails("YAML syntax error", "e.yaml", "a: [1, 2\nb: 3\n", "2:2: ", "YAML syntax error");
    fails("JSON syntax error", "e.json", "{\n  \"admin\": {,}\n}\n", "2:13: ", "JSON syntax error");
    fails("billion laughs", "e.yaml",
          "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
          "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
          "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
          "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
          "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
          "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
          "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
          "h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
          "i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]\n",
          "6:36: ", "expands to more than 1000000 nodes");
    fails("unsupported field", "e.yaml", CL "    upstream_bind_config: {}\n",
          "4:5: static_resources.clusters[0].upstream_bind_config: ",
          "not supported: envoy.config.cluster.v3.Cluster.upstream_bind_config (herald does not implement it "
          "yet");
    /* health_checks (core.v3.HealthCheck) */
    fails("health check without a checker", "e.yaml",
          CL "    health_checks:\n"
          "    - { timeout: 1s, interval: 1s, unhealthy_threshold: 2, healthy_threshold: 2 }\n",
          "5:7: static_resources.clusters[0].health_checks[0]: ",
          "needs one of http_health_check or tcp_health_check");
    fails("grpc health check", "e.yaml",
          CL "    health_checks:\n    - timeout: 1s\n      interval: 1s\n      unhealthy_threshold: 2\n"
          "      healthy_threshold: 2\n      grpc_health_check: {}\n",
          "9:7: static_resources.clusters[0].health_checks[0].grpc_health_check: ", "not supported");
    fails("health check without a timeout", "e.yaml",
          CL "    health_checks:\n    - interval: 1s\n      unhealthy_threshold: 2\n"
          "      healthy_threshold: 2\n"
          "      http_health_check: { path: /healthz }\n",
          "5:7: static_resources.clusters[0].health_checks[0]: ", "timeout");
    fails("health check http without path", "e.yaml",
          CL "    health_checks:\n    - timeout: 1s\n      interval: 1s\n      unhealthy_threshold: 2\n"
          "      healthy_threshold: 2\n      http_health_check: { host: x }\n",
          "9:7: static_resources.clusters[0].health_checks[0].http_health_check: ", "path");
    fails("health check bad hex", "e.yaml",
          CL "    health_checks:\n    - timeout: 1s\n      interval: 1s\n      unhealthy_threshold: 2\n"
          "      healthy_threshold: 2\n      tcp_health_check: { send: { text: 5Z } }\n",
          "9:", "is not hex");
    fails("health check bad status range", "e.yaml",
          CL "    health_checks:\n    - timeout: 1s\n      interval: 1s\n      unhealthy_threshold: 2\n"
          "      healthy_threshold: 2\n      http_health_check:\n        path: /h\n"
          "        expected_statuses: [{ start: 200, end: 700 }]\n",
          "11:29: ", "must lie within [100, 600)");
    fails("unsupported cluster type EDS", "e.yaml", CL "    type: eds\n",
          "4:5: static_resources.clusters[0].type: ",
          "not supported: cluster type EDS");
    fails("unsupported lb_policy", "e.yaml", CL "    lb_policy: cluster_provided\n", "4:5:",
          "not supported: lb_policy CLUSTER_PROVIDED");
    fails("LOGICAL_DNS with two endpoints", "e.yaml",
          CL "    type: LOGICAL_DNS\n" LA EP("a.example", "80") EP("b.example", "80"),
          "7:7: static_resources.clusters[0].load_assignment.endpoints: ",
          "a LOGICAL_DNS cluster must have exactly one endpoint (it has 2)");
    fails("STATIC with a host name", "e.yaml", CL LA EP("backend.local", "80"),
          "10:33: static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address."
          "socket_address.address: ",
          "'backend.local' is not an IP address: a STATIC cluster needs IP addresses");
    fails("duplicate cluster names", "e.yaml", CL "  - name: backend\n",
          "4:5: static_resources.clusters[1].name: ", "duplicate cluster name 'backend' (first at line 3)");
    fails("duplicate listener names", "e.yaml",
          LS LADDR("80") TCP_CHAIN "  - name: l\n" LADDR("81") TCP_CHAIN,
          "8:5: static_resources.listeners[1].name: ", "duplicate listener name 'l' (first at line 3)");
    fails("duplicate listener addresses", "e.yaml",
          LS LADDR("80") TCP_CHAIN "  - name: m\n" LADDR("80") TCP_CHAIN,
          "9:5: static_resources.listeners[1].address: ", "uses the same address as listener 'l'");
    fails("listener without filter chains", "e.yaml", LS LADDR("80"), "3:5: static_resources.listeners[0]: ",
          "has no filter_chains (and no default_filter_chain)");
    fails("empty filters", "e.yaml", LS LADDR("80") "    filter_chains:\n    - filters: []\n",
          "6:7: static_resources.listeners[0].filter_chains[0].filters: ",
          "a filter chain needs at least one network filter");
    fails("listener without address", "e.yaml", LS TCP_CHAIN, "3:5: static_resources.listeners[0]: ",
          "missing required field 'address'");
    fails("oneof conflict", "e.yaml",
          LS "    address: { socket_address: { address: 0.0.0.0, port_value: 1 }, pipe: { path: /x } }\n"
          TCP_CHAIN, "4:69: static_resources.listeners[0].address.pipe: ",
          "'pipe' and 'socket_address' (line 4) are both set, but only one of them may be (oneof address)");
    fails("yes is not a bool", "e.yaml", CL "    respect_dns_ttl: yes\n", "4:5:",
          "expected true or false, got 'yes' (YAML 1.1");
    fails("multiple documents", "e.yaml", "admin: {}\n---\nadmin: {}\n", "2:1: ", "a second YAML document");
    fails("unknown alias", "e.yaml", "admin: *nope\n", "1:8: ", "unknown alias '*nope'");
    fails("root is a list", "e.yaml", "- a\n- b\n", "1:1: ",
          "expected a mapping (envoy.config.bootstrap.v3.Bootstrap), got a list");
    fails("unknown field in JSON", "e.json", "{\n  \"static_resources\": {\n    \"clusterz\": []\n  }\n}\n",
          "3:5: static_resources.clusterz: ", "(did you mean 'clusters'?)");
    fails("camelCase and snake_case both", "e.yaml", CL "    connectTimeout: 1s\n    connect_timeout: 2s\n",
          "4:5: static_resources.clusters[0].connectTimeout: ", "is the same field as 'connect_timeout'");
    fails("choice_count too small", "e.yaml", CL "    least_request_lb_config: { choice_count: 1 }\n",
          "4:32: static_resources.clusters[0].least_request_lb_config.choice_count: ",
          "out of range (2 to 1000)");
    fails("oneof lb_config", "e.yaml",
          CL "    least_request_lb_config: {}\n    round_robin_lb_config: {}\n", "5:5:", "(oneof lb_config)");
    fails("invalid UTF-8", "e.yaml", "admin: \xff\xfe\n", "1:8: ", "UTF-8");
    fails("nesting too deep", "e.yaml",
          "a: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
          "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
          "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n",
          "1:", "nesting deeper than 256 levels");
    fails("UDP", "e.yaml",
          LS "    address: { socket_address: { protocol: udp, address: 0.0.0.0, port_value: 1 } }\n"
          TCP_CHAIN,
          "4:34: static_resources.listeners[0].address.socket_address.protocol: ", "not supported: UDP");
    fails("field one level too high", "e.yaml", "clusters: []\n", "1:1: clusters: ",
          "unknown field 'clusters' in envoy.config.bootstrap.v3.Bootstrap "
          "(it belongs inside 'static_resources')");
    fails("v2 runtime", "e.yaml", "runtime: {}\n", "1:1: runtime: ", "v2 field: use layered_runtime");
    fails("bad CIDR", "e.yaml",
          LS LADDR("80") "    filter_chains:\n    - filter_chain_match: { prefix_ranges: [{address_prefix: "
          "nope}] }\n      filters: [{name: x}]\n",
          "6:46: static_resources.listeners[0].filter_chains[0].filter_chain_match.prefix_ranges[0]."
          "address_prefix: ", "'nope' is not an IP address prefix");

    /* independent errors are all reported, in order */
    char *first;
    size_t nerr;
    struct bootstrap *b = load("many.yaml", CL "    conect_timeout: 1s\n    lb_policy: foo\n"
                                            "  - name: other\n    type: STRICTDNS\n",
                               &first, &nerr, NULL);
    ok(b == NULL, "several errors: rejected");
    is_int(nerr, 3, "several errors: all three reported");
    free(first);
}

static void load_file_quietly(const char *path, bool must_load)
{
    char *err = NULL;
    struct cfg_doc *doc = cfg_load_file(path, &err);
    struct cfg_diag d = { 0 };
    struct bootstrap *b = doc ? bootstrap_load(doc, &d) : NULL;
    if (must_load) {
        ok(b != NULL, "example %s loads", path);
        if (err)
            printf("#   %s\n", err);
        for (size_t i = 0; i < d.nerrors; i++)
            printf("#   %s\n", d.errors[i]);
    }
    free(err);
    diag_free(&d);
    bootstrap_free(b);
}

static void test_files(void)
{
    glob_t g;
    if (glob(SRCDIR "/etc/examples/*.yaml", 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; i++)
            load_file_quietly(g.gl_pathv[i], true);
        globfree(&g);
    }
    const char *conf = "/work/shared/conformance/envoy-configs";
    DIR *dir = opendir(conf);
    if (!dir) {
        ok(1, "# SKIP no %s", conf);
        return;
    }
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(dir))) {
        size_t len = strlen(de->d_name);
        if (len < 5 || (strcmp(de->d_name + len - 5, ".yaml") && strcmp(de->d_name + len - 5, ".json")))
            continue;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", conf, de->d_name);
        load_file_quietly(path, false);
        n++;
    }
    closedir(dir);
    ok(n > 0, "loaded %zu conformance configs without crashing", n);

    char *err = NULL;
    ok(cfg_load_file("/nonexistent/herald.yaml", &err) == NULL, "missing file");
    like(err, "/nonexistent/herald.yaml: cannot open: No such file", "missing file message");
    free(err);
}

int main(void)
{
    test_good();
    test_normalisation();
    test_scalars();
    test_errors();
    test_files();
    return done_testing();
}
