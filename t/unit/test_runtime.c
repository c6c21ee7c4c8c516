/* The layered runtime without a server: static_layer flattening (Envoy's
 * rules), typed reads, the admin layer, featureEnabled's fraction math, and
 * the overload connection limits driven by runtime keys. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/schema.h"
#include "config/tree.h"
#include "overload.h"
#include "runtime.h"
#include "tap.h"

static struct cfg_doc *load(const char *yaml)
{
    char *err = NULL;
    struct cfg_doc *doc = cfg_load_string(yaml, strlen(yaml), "rt.yaml", &err);
    if (!doc) {
        printf("# parse error: %s\n", err);
        free(err);
    }
    return doc;
}

static void test_flatten(void)
{
    struct cfg_doc *doc = load("a:\n  b: 1\n  c:\n    d: hello\n  e: true\n"
                               "f: {numerator: 5, denominator: TEN_THOUSAND}\n"
                               "g: 2.5\nh: {}\n");
    struct cfg_diag d = {0};
    struct runtime_map_view v = {0};
    is_int(runtime_static_layer_parse(doc->root, &v, &d), 0, "static layer parses");
    is_int((int)v.n, 6, "6 keys");
    const char *want[][2] = {{"a.b", "1"}, {"a.c.d", "hello"}, {"a.e", "true"},
                             {"f", "{\"numerator\":5,\"denominator\":10000}"}, {"g", "2.5"},
                             {"h", "{\"numerator\":0,\"denominator\":100}"}};
    for (size_t i = 0; i < v.n && i < 6; i++) {
        is_str(v.keys[i], want[i][0], "key %zu", i);
        is_str(v.values[i], want[i][1], "value %zu", i);
    }
    runtime_map_view_free(&v);
    diag_free(&d);
    cfg_doc_free(doc);

    doc = load("a:\n  b: [1, 2]\n");
    memset(&d, 0, sizeof(d));
    is_int(runtime_static_layer_parse(doc->root, &v, &d), -1, "a list is refused");
    like(d.nerrors ? d.errors[0] : "", "invalid runtime entry value for a.b", "error names the key");
    runtime_map_view_free(&v);
    diag_free(&d);
    cfg_doc_free(doc);
}

static void test_fraction_math(void)
{
    ok(!runtime_fraction_eval(0, 100, 0), "0%% never");
    ok(runtime_fraction_eval(100, 100, 99), "100%% always");
    ok(runtime_fraction_eval(1, 100, 100), "1%%: random 100 -> 0 < 1");
    ok(!runtime_fraction_eval(1, 100, 101), "1%%: random 101 -> 1");
    ok(runtime_fraction_eval(5, 10000, 20004), "5/10000: 20004 %% 10000 = 4");
    ok(!runtime_fraction_eval(5, 10000, 20005), "5/10000: 5 is out");
    ok(runtime_fraction_eval(200, 100, 12345), "numerator > denominator: always");
    ok(!runtime_fraction_eval(1, 0, 0), "denominator 0: never");
    unsigned hits = 0;
    for (uint64_t r = 0; r < 1000000; r++)
        hits += runtime_fraction_eval(250, 1000000, r * 2654435761u);
    ok(hits > 150 && hits < 350, "250 per million over 1e6 randoms: %u", hits);
}

static void test_layers(void)
{
    struct cfg_doc *doc = load("layered_runtime:\n  layers:\n"
                               "  - name: base\n    static_layer:\n      x: {y: 7}\n      flag: false\n"
                               "      fr: {numerator: 3}\n      s: text\n"
                               "  - name: admin\n    admin_layer: {}\n");
    struct cfg_diag d = {0};
    is_int(schema_check(doc->root, &schema_bootstrap, &d), 0, "layered_runtime passes the schema");
    is_int(runtime_init(herald_cfg_get(doc->root, "layered_runtime"), NULL, &d), 0, "runtime_init");
    is_int((int)runtime_get_uint("x.y", 1), 7, "static uint");
    is_int((int)runtime_get_uint("nope", 42), 42, "missing key: default");
    is_int((int)runtime_get_uint("s", 42), 42, "not a number: default");
    ok(!runtime_get_bool("flag", true), "static bool false");
    ok(runtime_get_double("x.y", 0) == 7.0, "uint reads as double too");
    ok(runtime_fraction_enabled("fr", 0, 100, 2), "FractionalPercent object: 3/100, random 2");
    ok(!runtime_fraction_enabled("fr", 100, 100, 3), "... random 3 is out whatever the default");
    ok(!runtime_fraction_enabled("x.z", 0, 100, 0), "missing key: default 0%%");

    char *err = NULL;
    is_int(runtime_admin_set("x.y", "9", &err), 0, "admin override");
    is_int((int)runtime_get_uint("x.y", 1), 9, "admin layer wins");
    is_int(runtime_admin_set("x.z", "100", &err), 0, "admin sets a new key");
    ok(runtime_fraction_enabled("x.z", 0, 100, 99), "integer key replaces the numerator: 100/100");
    runtime_admin_set("x.z", "5", &err);
    ok(runtime_fraction_enabled("x.z", 0, 1000000, 104), "an integer is a percentage: 104 %% 100 < 5");
    ok(!runtime_fraction_enabled("x.z", 0, 1000000, 105), "... 105 %% 100 is not");
    runtime_admin_set("x.z", "101", &err);
    ok(runtime_fraction_enabled("x.z", 0, 100, 99), "over 100: always");
    runtime_admin_set("x.z", "{numerator: 3, denominator: TEN_THOUSAND}", &err);
    ok(runtime_fraction_enabled("x.z", 0, 100, 10002), "a FractionalPercent as text: 3/10000");
    ok(!runtime_fraction_enabled("x.z", 0, 100, 10003), "... 3 is out");
    runtime_admin_set("x.z", "2.9", &err);
    is_int((int)runtime_get_uint("x.z", 0), 2, "2.9 reads as the integer 2 (Envoy truncates)");
    runtime_admin_set("x.z", "0", &err);
    ok(!runtime_get_bool("x.z", true), "0 reads as false");
    is_int(runtime_admin_set("x.y", NULL, &err), 0, "admin removes");
    is_int((int)runtime_get_uint("x.y", 1), 7, "static value back");
    const char *k[] = {"flag", "x.z"}, *v[] = {"TRUE", ""};
    is_int(runtime_admin_set_many(k, v, 2, &err), 0, "set_many");
    ok(runtime_get_bool("flag", false), "bool parsed case-insensitively");
    is_int((int)runtime_get_uint("x.z", 5), 5, "empty value removed x.z");

    /* overload: per-listener and global limits from runtime keys */
    is_int(overload_init(NULL, &d), 0, "no overload_manager");
    atomic_uint_least64_t open = 0;
    runtime_admin_set("envoy.resource_limits.listener.l1.connection_limit", "2", &err);
    is_int(overload_cx_acquire("l1", &open, false), OVERLOAD_CX_OK, "1st");
    is_int(overload_cx_acquire("l1", &open, false), OVERLOAD_CX_OK, "2nd");
    is_int(overload_cx_acquire("l1", &open, false), OVERLOAD_CX_LISTENER, "3rd over the listener limit");
    is_int((int)open, 2, "refused one not counted");
    is_int((int)overload_global_active(), 2, "global count 2");
    runtime_admin_set(OVERLOAD_RUNTIME_GLOBAL_CX, "2", &err);
    atomic_uint_least64_t open2 = 0;
    is_int(overload_cx_acquire("l2", &open2, false), OVERLOAD_CX_GLOBAL, "other listener: global limit");
    is_int(overload_cx_acquire("l2", &open2, true), OVERLOAD_CX_OK, "ignore_global_conn_limit passes");
    overload_cx_release(&open2, true);
    overload_cx_release(&open, false);
    is_int(overload_cx_acquire("l2", &open2, false), OVERLOAD_CX_OK, "after a release: accepted");
    overload_cx_release(&open2, false);
    overload_cx_release(&open, false);
    is_int((int)overload_global_active(), 0, "counts back to 0");
    runtime_shutdown();
    diag_free(&d);
    cfg_doc_free(doc);

    doc = load("layered_runtime:\n  layers:\n  - name: s\n    static_layer: {a: 1}\n");
    memset(&d, 0, sizeof(d));
    schema_check(doc->root, &schema_bootstrap, &d);
    is_int(runtime_init(herald_cfg_get(doc->root, "layered_runtime"), NULL, &d), 0, "static only");
    is_int(runtime_admin_set("a", "2", &err), -1, "no admin layer: refused");
    is_str(err, "No admin layer specified", "Envoy's message");
    free(err);
    runtime_shutdown();
    diag_free(&d);
    cfg_doc_free(doc);

    doc = load("overload_manager:\n  resource_monitors:\n  - name: envoy.resource_monitors.cgroup_memory\n");
    memset(&d, 0, sizeof(d));
    schema_check(doc->root, &schema_bootstrap, &d);
    is_int(overload_init(herald_cfg_get(doc->root, "overload_manager"), &d), -1, "other monitors refused");
    like(d.nerrors ? d.errors[d.nerrors - 1] : "", "not supported", "says not supported");
    diag_free(&d);
    cfg_doc_free(doc);

    doc = load("overload_manager:\n  resource_monitors:\n"
               "  - name: envoy.resource_monitors.global_downstream_max_connections\n"
               "    typed_config:\n      '@type': type.googleapis.com/envoy.extensions.resource_monitors."
               "downstream_connections.v3.DownstreamConnectionsConfig\n"
               "      max_active_downstream_connections: 1\n");
    memset(&d, 0, sizeof(d));
    is_int(schema_check(doc->root, &schema_bootstrap, &d), 0, "overload_manager passes the schema");
    is_int(overload_init(herald_cfg_get(doc->root, "overload_manager"), &d), 0, "monitor accepted");
    is_int((int)overload_global_limit(), 1, "limit 1");
    atomic_uint_least64_t open3 = 0;
    is_int(overload_cx_acquire("l3", &open3, false), OVERLOAD_CX_OK, "1st");
    is_int(overload_cx_acquire("l3", &open3, false), OVERLOAD_CX_GLOBAL, "2nd refused");
    overload_cx_release(&open3, false);
    overload_shutdown();
    diag_free(&d);
    cfg_doc_free(doc);
}

int main(void)
{
    test_flatten();
    test_fraction_math();
    test_layers();
    return done_testing();
}
