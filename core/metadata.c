/* See metadata.h. */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "metadata.h"

int metadata_set(struct metadata *m, const char *ns, const char *key, const char *value)
{
    if (!ns || !key || !value)
        return -1;
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->v[i].ns, ns) == 0 && strcmp(m->v[i].key, key) == 0) {
            free(m->v[i].value);
            m->v[i].value = xstrdup(value);
            return 0;
        }
    struct metadata_kv *kv = VEC_PUSH(m->v, m->n, m->cap);
    kv->ns = xstrdup(ns);
    kv->key = xstrdup(key);
    kv->value = xstrdup(value);
    return 0;
}

const char *metadata_get(const struct metadata *m, const char *ns, const char *key)
{
    for (size_t i = 0; ns && key && i < m->n; i++)
        if (strcmp(m->v[i].ns, ns) == 0 && strcmp(m->v[i].key, key) == 0)
            return m->v[i].value;
    return NULL;
}

void metadata_free(struct metadata *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->v[i].ns);
        free(m->v[i].key);
        free(m->v[i].value);
    }
    free(m->v);
    *m = (struct metadata){0};
}
