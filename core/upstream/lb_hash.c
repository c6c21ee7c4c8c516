/* placeholder until the ring hash / maglev work lands: round robin-free stub
 * that always answers the first host (schema still refuses these policies). */
#include <stdlib.h>

#include "upstream/lb_hash.h"

struct lb_hash { struct herald_host *first; };

struct lb_hash *lb_hash_new(const struct cluster_cfg *cfg, struct herald_host *const *hosts, size_t n)
{
    struct lb_hash *h = calloc(1, sizeof(*h));
    if (h)
        h->first = hosts[0];
    return h;
}

struct herald_host *lb_hash_choose(const struct lb_hash *h, uint64_t hash)
{
    return h ? h->first : NULL;
}

void lb_hash_free(struct lb_hash *h)
{
    free(h);
}
