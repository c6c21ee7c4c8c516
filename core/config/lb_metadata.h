/* Metadata values for subset load balancing, compared as Envoy compares
 * protobuf Values (ValueUtil::equal): the string "1" is not the number 1,
 * 1 and 1.0 are the same number. Each value becomes one canonical C string,
 * a type letter then its text, so equality is strcmp:
 *   s<text>  string          n<number>  number (shortest round-trip form)
 *   btrue / bfalse  bool     z          null
 *   l<len>:<elem>...  list   o<len>:<key><len>:<value>...  struct (keys sorted)
 * Endpoint metadata (filter_metadata["envoy.lb"]), a route's metadata_match
 * and lb_subset_config.default_subset are read into sorted key/value lists
 * of these; dynamic metadata set by filters is turned into the same form at
 * request time (lb_subset.c). */
#ifndef HERALD_CORE_CONFIG_LB_METADATA_H
#define HERALD_CORE_CONFIG_LB_METADATA_H

#include <stdbool.h>
#include <stddef.h>

#include "herald/config.h"

struct lb_kv {
    char *key;
    char *value;                       /* canonical, see above */
    char **elems; size_t nelems;       /* a list value's elements, canonical (list_as_any) */
};

/* Sorted by key; keys are unique. */
struct lb_kvs { struct lb_kv *v; size_t n; };

/* The canonical form of a config value (malloc'd). */
char *lbmd_canon(const struct herald_cfg *v);
/* obj's members as a sorted list (lists also keep their elements). obj NULL:
 * an empty list. -1 when obj is not a mapping. */
int lbmd_kvs_from_struct(const struct herald_cfg *obj, struct lb_kvs *out);
/* base with over's keys added or replacing base's (Envoy's
 * mergeMatchCriteria): a new list. */
void lbmd_kvs_merge(struct lb_kvs *out, const struct lb_kvs *base, const struct lb_kvs *over);
const struct lb_kv *lbmd_kvs_find(const struct lb_kvs *k, const char *key);
void lbmd_kvs_free(struct lb_kvs *k);

#endif
