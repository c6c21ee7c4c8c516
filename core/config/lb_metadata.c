/* See lb_metadata.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config/lb_metadata.h"
#include "config/tree.h"

/* a length-prefixed piece, so that nested values cannot run into each other */
static void sb_piece(struct sbuf *b, const char *s, size_t n)
{
    char len[24];
    int k = snprintf(len, sizeof(len), "%zu:", n);
    sb_add(b, len, (size_t)k);
    sb_add(b, s, n);
}

static int cmp_keys(const void *a, const void *b)
{
    const struct herald_cfg *const *x = a, *const *y = b;
    return strcmp((*x)->key, (*y)->key);
}

static void canon(struct sbuf *b, const struct herald_cfg *v)
{
    char num[40];

    switch (herald_cfg_type(v)) {
    case HERALD_CFG_BOOL:
        sb_add(b, v->u.b ? "btrue" : "bfalse", v->u.b ? 5 : 6);
        break;
    case HERALD_CFG_INT:
    case HERALD_CFG_REAL:
        /* protobuf's Value has one number type, a double */
        double_str(herald_cfg_real(v, 0), num, sizeof(num));
        sb_add(b, "n", 1);
        sb_add(b, num, strlen(num));
        break;
    case HERALD_CFG_STRING:
        sb_add(b, "s", 1);
        sb_add(b, v->u.str.s, strlen(v->u.str.s));
        break;
    case HERALD_CFG_ARRAY:
        sb_add(b, "l", 1);
        for (size_t i = 0; i < v->u.kids.n; i++) {
            struct sbuf e = { 0 };
            sb_add(&e, "", 0);
            canon(&e, v->u.kids.items[i]);
            sb_piece(b, e.s, e.n);
            free(e.s);
        }
        break;
    case HERALD_CFG_OBJECT: {
        /* a Struct's fields have no order */
        size_t n = v->u.kids.n;
        struct herald_cfg **k = xcalloc(n ? n : 1, sizeof(*k));
        memcpy(k, v->u.kids.items, n * sizeof(*k));
        qsort(k, n, sizeof(*k), cmp_keys);
        sb_add(b, "o", 1);
        for (size_t i = 0; i < n; i++) {
            struct sbuf e = { 0 };
            sb_add(&e, "", 0);
            canon(&e, k[i]);
            sb_piece(b, k[i]->key, strlen(k[i]->key));
            sb_piece(b, e.s, e.n);
            free(e.s);
        }
        free(k);
        break;
    }
    default:
        sb_add(b, "z", 1);
    }
}

char *lbmd_canon(const struct herald_cfg *v)
{
    struct sbuf b = { 0 };
    sb_add(&b, "", 0);
    canon(&b, v);
    return b.s;
}

static int cmp_kv(const void *a, const void *b)
{
    return strcmp(((const struct lb_kv *)a)->key, ((const struct lb_kv *)b)->key);
}

int lbmd_kvs_from_struct(const struct herald_cfg *obj, struct lb_kvs *out)
{
    *out = (struct lb_kvs){ 0 };
    if (!obj || herald_cfg_type(obj) == HERALD_CFG_NULL)
        return 0;
    if (herald_cfg_type(obj) != HERALD_CFG_OBJECT)
        return -1;
    out->n = obj->u.kids.n;
    out->v = xcalloc(out->n ? out->n : 1, sizeof(*out->v));
    for (size_t i = 0; i < out->n; i++) {
        const struct herald_cfg *m = obj->u.kids.items[i];
        struct lb_kv *kv = &out->v[i];
        kv->key = xstrdup(m->key);
        kv->value = lbmd_canon(m);
        if (herald_cfg_type(m) == HERALD_CFG_ARRAY) {
            kv->nelems = m->u.kids.n;
            kv->elems = xcalloc(kv->nelems ? kv->nelems : 1, sizeof(*kv->elems));
            for (size_t j = 0; j < kv->nelems; j++)
                kv->elems[j] = lbmd_canon(m->u.kids.items[j]);
        }
    }
    /* the tree refuses duplicate keys, so sorting is enough for uniqueness */
    qsort(out->v, out->n, sizeof(*out->v), cmp_kv);
    return 0;
}

static void kv_copy(struct lb_kv *dst, const struct lb_kv *src)
{
    dst->key = xstrdup(src->key);
    dst->value = xstrdup(src->value);
    dst->nelems = src->nelems;
    dst->elems = src->nelems ? xcalloc(src->nelems, sizeof(*dst->elems)) : NULL;
    for (size_t i = 0; i < src->nelems; i++)
        dst->elems[i] = xstrdup(src->elems[i]);
}

void lbmd_kvs_merge(struct lb_kvs *out, const struct lb_kvs *base, const struct lb_kvs *over)
{
    size_t i = 0, j = 0;
    out->n = 0;
    out->v = xcalloc(base->n + over->n + 1, sizeof(*out->v));
    while (i < base->n || j < over->n) {
        int c = i == base->n ? 1 : j == over->n ? -1 : strcmp(base->v[i].key, over->v[j].key);
        if (c < 0) {
            kv_copy(&out->v[out->n++], &base->v[i++]);
        } else {
            kv_copy(&out->v[out->n++], &over->v[j++]);
            i += c == 0;
        }
    }
}

const struct lb_kv *lbmd_kvs_find(const struct lb_kvs *k, const char *key)
{
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->v[i].key, key) == 0)
            return &k->v[i];
    return NULL;
}

void lbmd_kvs_free(struct lb_kvs *k)
{
    for (size_t i = 0; i < k->n; i++) {
        free(k->v[i].key);
        free(k->v[i].value);
        for (size_t j = 0; j < k->v[i].nelems; j++)
            free(k->v[i].elems[j]);
        free(k->v[i].elems);
    }
    free(k->v);
    *k = (struct lb_kvs){ 0 };
}
