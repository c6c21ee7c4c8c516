/* Dynamic metadata: string values under a namespace and key, as connections
 * (and the accepted sockets before them) and HTTP streams keep them. A few
 * entries at most, so a vector searched in order. */
#ifndef HERALD_CORE_METADATA_H
#define HERALD_CORE_METADATA_H

#include <stddef.h>

struct metadata_kv { char *ns, *key, *value; };
struct metadata { struct metadata_kv *v; size_t n, cap; };

/* Sets (replaces) ns:key; -1 when an argument is NULL. */
int metadata_set(struct metadata *m, const char *ns, const char *key, const char *value);
const char *metadata_get(const struct metadata *m, const char *ns, const char *key);
void metadata_free(struct metadata *m);

#endif
