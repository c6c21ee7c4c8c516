/* See metadata.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "metadata.h"

int metadata_set_typed(struct metadata *m, const char *ns, const char *key, const char *value,
                       enum metadata_type type)
{
    char num[40];

    if (!ns || !key || (!value && type != METADATA_NULL))
        return -1;
    switch (type) {
    case METADATA_NUMBER: {
        char *end;
        double d = strtod(value, &end);
        if (end == value || *end || !isfinite(d))
            return -1;
        double_str(d, num, sizeof(num));
        value = num;
        break;
    }
    case METADATA_BOOL:
        if (strcmp(value, "true") != 0 && strcmp(value, "false") != 0)
            return -1;
        break;
    case METADATA_NULL:
        value = "null";
        break;
    case METADATA_STRING:
        break;
    default:
        return -1;
    }
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->v[i].ns, ns) == 0 && strcmp(m->v[i].key, key) == 0) {
            free(m->v[i].value);
            m->v[i].value = xstrdup(value);
            m->v[i].type = type;
            return 0;
        }
    struct metadata_kv *kv = VEC_PUSH(m->v, m->n, m->cap);
    kv->ns = xstrdup(ns);
    kv->key = xstrdup(key);
    kv->value = xstrdup(value);
    kv->type = type;
    return 0;
}

int metadata_set(struct metadata *m, const char *ns, const char *key, const char *value)
{
    return metadata_set_typed(m, ns, key, value, METADATA_STRING);
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
