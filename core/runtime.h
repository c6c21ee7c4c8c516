/* Envoy's layered runtime: string keys whose values come from layers
 * (static_layer, disk_layer, admin_layer), the later layer winning. Values are
 * read by the data path (route runtime_fraction, overload limits) and the
 * main thread (health_check.min_interval). Thread-safe: readers see an
 * immutable snapshot that the main thread replaces when a layer changes. */
#ifndef HERALD_CORE_RUNTIME_H
#define HERALD_CORE_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/diag.h"
#include "config/tree.h"

struct event_base;
struct evbuffer;

/* Main thread, at start-up: node is the bootstrap's layered_runtime (may be
 * NULL: no layers, every key at its default). base: where the disk layers'
 * watch runs (NULL under --mode validate). */
int runtime_init(const struct herald_cfg *layered_runtime, struct event_base *base, struct cfg_diag *d);
void runtime_shutdown(void);
/* A worker thread, as it exits (worker_on_exit): drops its snapshot reference. */
void runtime_thread_exit(void);

/* Any thread. A key that is missing, or whose value does not parse as the
 * type asked for, gives dflt. */
uint64_t runtime_get_uint(const char *key, uint64_t dflt);
bool runtime_get_bool(const char *key, bool dflt);
double runtime_get_double(const char *key, double dflt);
/* Envoy's featureEnabled(key, FractionalPercent): the key's value (a
 * FractionalPercent, or an integer: a percentage, over 100 always true) or
 * else the default numerator/denominator; true for
 * `random % denominator < numerator`. */
bool runtime_fraction_enabled(const char *key, uint32_t numerator, uint32_t denominator, uint64_t random);

/* Admin (main thread): /runtime (Envoy's JSON shape) and /runtime_modify. */
void runtime_dump(struct evbuffer *out);
/* Sets (value != NULL) or removes (value == NULL) a key in the admin layer.
 * 0 = OK; -1 with *err when there is no admin layer. */
int runtime_admin_set(const char *key, const char *value, char **err);
/* /runtime_modify: all pairs at once, one new snapshot (empty value removes). */
int runtime_admin_set_many(const char *const *keys, const char *const *values, size_t n, char **err);

/* Pure helpers, exposed for unit tests. */
bool runtime_fraction_eval(uint64_t numerator, uint64_t denominator, uint64_t random);
/* Flattens a static_layer Struct as Envoy does (sorted keys, raw values). */
struct runtime_map_view { char **keys, **values; size_t n; };
int runtime_static_layer_parse(const struct herald_cfg *layer, struct runtime_map_view *out,
                               struct cfg_diag *d);
void runtime_map_view_free(struct runtime_map_view *v);

#endif
