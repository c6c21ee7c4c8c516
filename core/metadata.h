/* Dynamic metadata: values under a namespace and key, as connections (and
 * the accepted sockets before them) and HTTP streams keep them. A few
 * entries at most, so a vector searched in order. A value is kept as text
 * with the kind of protobuf Value it stands for, so that subset load
 * balancing compares it as Envoy does (the string "1" is not the number 1). */
#ifndef HERALD_CORE_METADATA_H
#define HERALD_CORE_METADATA_H

#include <stddef.h>

enum metadata_type { METADATA_STRING = 0, METADATA_NUMBER, METADATA_BOOL, METADATA_NULL };

struct metadata_kv { char *ns, *key, *value; enum metadata_type type; };
struct metadata { struct metadata_kv *v; size_t n, cap; };

/* Sets (replaces) ns:key as a string; -1 when an argument is NULL. */
int metadata_set(struct metadata *m, const char *ns, const char *key, const char *value);
/* The same with a kind: NUMBER takes a decimal number (kept in the shortest
 * form that reads back the same, "1.50" -> "1.5"), BOOL "true" or "false",
 * NULL ignores value (kept as "null"); -1 on anything else. */
int metadata_set_typed(struct metadata *m, const char *ns, const char *key, const char *value,
                       enum metadata_type type);
const char *metadata_get(const struct metadata *m, const char *ns, const char *key);
void metadata_free(struct metadata *m);

#endif
