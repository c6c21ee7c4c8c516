/* The config tree: YAML (libyaml events) and JSON (jansson plus a position
 * walker) into herald_cfg nodes that know where they came from. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <yaml.h>

#include "common.h"
#include "config/schema.h"
#include "config/tree.h"

/* ------------------------------------------------------------ nodes */

static struct herald_cfg *node_alloc(enum herald_cfg_type type, const char *file, int line, int col)
{
    struct herald_cfg *n = xcalloc(1, sizeof(*n));
    n->type = type;
    n->file = file;
    n->line = line;
    n->column = col;
    return n;
}

struct herald_cfg *cfg_new(enum herald_cfg_type type, const struct herald_cfg *pos_from)
{
    if (pos_from)
        return node_alloc(type, pos_from->file, pos_from->line, pos_from->column);
    return node_alloc(type, NULL, 0, 0);
}

void cfg_free(struct herald_cfg *n)
{
    if (!n)
        return;
    if (n->type == HERALD_CFG_STRING)
        free(n->u.str.s);
    else if (n->type == HERALD_CFG_ARRAY || n->type == HERALD_CFG_OBJECT) {
        for (size_t i = 0; i < n->u.kids.n; i++)
            cfg_free(n->u.kids.items[i]);
        free(n->u.kids.items);
    }
    free(n->key);
    free(n);
}

static void kids_push(struct herald_cfg *parent, struct herald_cfg *item)
{
    item->parent = parent;
    item->index = parent->u.kids.n;
    *VEC_PUSH(parent->u.kids.items, parent->u.kids.n, parent->u.kids.cap) = item;
}

void cfg_append(struct herald_cfg *arr, struct herald_cfg *item)
{
    free(item->key);
    item->key = NULL;
    kids_push(arr, item);
}

static struct herald_cfg *obj_find(const struct herald_cfg *obj, const char *key)
{
    if (!obj || obj->type != HERALD_CFG_OBJECT || !key)
        return NULL;
    for (size_t i = 0; i < obj->u.kids.n; i++)
        if (strcmp(obj->u.kids.items[i]->key, key) == 0)
            return obj->u.kids.items[i];
    return NULL;
}

void cfg_set(struct herald_cfg *obj, const char *key, struct herald_cfg *val)
{
    struct herald_cfg *old = obj_find(obj, key);
    free(val->key);
    val->key = xstrdup(key);
    if (old) {
        val->parent = obj;
        val->index = old->index;
        obj->u.kids.items[old->index] = val;
        cfg_free(old);
        return;
    }
    kids_push(obj, val);
}

struct herald_cfg *cfg_wrap_in_array(struct herald_cfg *n)
{
    struct herald_cfg *arr = cfg_new(HERALD_CFG_ARRAY, n);
    struct herald_cfg *parent = n->parent;
    arr->parent = parent;
    arr->index = n->index;
    arr->key = n->key;
    n->key = NULL;
    if (parent)
        parent->u.kids.items[n->index] = arr;
    kids_push(arr, n);
    return arr;
}

void cfg_remove(struct herald_cfg *obj, const char *key)
{
    struct herald_cfg *old = obj_find(obj, key);
    if (!old)
        return;
    size_t at = old->index;
    memmove(&obj->u.kids.items[at], &obj->u.kids.items[at + 1],
            (obj->u.kids.n - at - 1) * sizeof(obj->u.kids.items[0]));
    obj->u.kids.n--;
    for (size_t i = at; i < obj->u.kids.n; i++)
        obj->u.kids.items[i]->index = i;
    cfg_free(old);
}

static size_t count_nodes(const struct herald_cfg *n)
{
    size_t c = 1;
    if (n->type == HERALD_CFG_ARRAY || n->type == HERALD_CFG_OBJECT)
        for (size_t i = 0; i < n->u.kids.n; i++)
            c += count_nodes(n->u.kids.items[i]);
    return c;
}

static struct herald_cfg *deep_copy(const struct herald_cfg *n)
{
    struct herald_cfg *c = node_alloc(n->type, n->file, n->line, n->column);
    c->quoted = n->quoted;
    switch (n->type) {
    case HERALD_CFG_STRING:
        c->u.str.s = xmalloc(n->u.str.len + 1);
        memcpy(c->u.str.s, n->u.str.s, n->u.str.len + 1);
        c->u.str.len = n->u.str.len;
        break;
    case HERALD_CFG_ARRAY:
    case HERALD_CFG_OBJECT:
        for (size_t i = 0; i < n->u.kids.n; i++) {
            struct herald_cfg *k = deep_copy(n->u.kids.items[i]);
            if (n->u.kids.items[i]->key)
                k->key = xstrdup(n->u.kids.items[i]->key);
            kids_push(c, k);
        }
        break;
    default:
        c->u = n->u;
        break;
    }
    return c;
}

static void set_string(struct herald_cfg *n, const char *s, size_t len)
{
    n->type = HERALD_CFG_STRING;
    n->u.str.s = xmalloc(len + 1);
    memcpy(n->u.str.s, s, len);
    n->u.str.s[len] = '\0';
    n->u.str.len = len;
}

/* ------------------------------------------------------------ errors */

static void set_err(char **err, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void set_err(char **err, const char *file, int line, int col, const char *fmt, ...)
{
    va_list ap;
    if (!err || *err)
        return; /* the first error is the one that explains the rest */
    va_start(ap, fmt);
    char *msg = xvasprintf(fmt, ap);
    va_end(ap);
    if (line > 0)
        *err = xasprintf("%s:%d:%d: %s", file, line, col, msg);
    else
        *err = xasprintf("%s: %s", file, msg);
    free(msg);
}

/* Line and column (1-based, columns in characters) of byte offset off. */
static void offset_pos(const char *text, size_t len, size_t off, int *line, int *col)
{
    int l = 1, c = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        if (text[i] == '\n') {
            l++;
            c = 1;
        } else if (((unsigned char)text[i] & 0xC0) != 0x80) {
            c++;
        }
    }
    *line = l;
    *col = c;
}

/* ------------------------------------------------------------ YAML */

struct anchor {
    char *name;
    struct herald_cfg *node;
};

struct yctx {
    yaml_parser_t p;
    const char *file;
    const char *text;
    size_t len;
    char **err;
    size_t nodes;
    struct anchor *anchors; size_t nanchors, capanchors;
    struct herald_cfg **graveyard; size_t ngrave, capgrave; /* merge sources: anchors may point in */
};

static bool is_plain_null(const char *s)
{
    return !*s || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
           strcmp(s, "NULL") == 0;
}

static int plain_bool(const char *s)
{
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0)
        return 1;
    if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0)
        return 0;
    return -1;
}

/* Integer: [-+]?[0-9]+ or 0x[0-9a-fA-F]+. 1 = int, 0 = not one, -1 = overflow. */
static int parse_int(const char *s, int64_t *out)
{
    const char *p = s;
    int base = 10;
    if (*p == '-' || *p == '+')
        p++;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        if (p != s) /* no sign on hex, as YAML 1.2's core schema */
            return 0;
        base = 16;
        p += 2;
        if (!*p)
            return 0;
        for (const char *q = p; *q; q++)
            if (!isxdigit((unsigned char)*q))
                return 0;
    } else {
        if (!*p)
            return 0;
        for (const char *q = p; *q; q++)
            if (!isdigit((unsigned char)*q))
                return 0;
    }
    errno = 0;
    char *end;
    if (base == 16) {
        unsigned long long v = strtoull(p, &end, 16);
        if (errno || v > INT64_MAX)
            return -1;
        *out = (int64_t)v;
    } else {
        long long v = strtoll(s, &end, 10);
        if (errno)
            return -1;
        *out = v;
    }
    return 1;
}

/* Real: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? and .inf/.nan. */
static bool parse_real(const char *s, double *out)
{
    const char *p = s;
    if (*p == '-' || *p == '+')
        p++;
    if (strcmp(p, ".inf") == 0 || strcmp(p, ".Inf") == 0 || strcmp(p, ".INF") == 0) {
        *out = *s == '-' ? -INFINITY : INFINITY;
        return true;
    }
    if (p == s && (strcmp(p, ".nan") == 0 || strcmp(p, ".NaN") == 0 || strcmp(p, ".NAN") == 0)) {
        *out = NAN;
        return true;
    }
    size_t digits = 0;
    while (isdigit((unsigned char)*p)) {
        p++;
        digits++;
    }
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char)*p)) {
            p++;
            digits++;
        }
    }
    if (!digits)
        return false;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '-' || *p == '+')
            p++;
        if (!isdigit((unsigned char)*p))
            return false;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (*p)
        return false;
    *out = strtod(s, NULL);
    return true;
}

/* Resolves a plain scalar per YAML 1.2's core schema, minus yes/no. */
static void resolve_plain(struct herald_cfg *n, const char *s, size_t len)
{
    int64_t i;
    double r;
    int b;
    if (strlen(s) != len) { /* an embedded NUL: keep the bytes */
        set_string(n, s, len);
        return;
    }
    if (is_plain_null(s)) {
        n->type = HERALD_CFG_NULL;
    } else if ((b = plain_bool(s)) >= 0) {
        n->type = HERALD_CFG_BOOL;
        n->u.b = b;
    } else if ((b = parse_int(s, &i)) == 1) {
        n->type = HERALD_CFG_INT;
        n->u.i = i;
    } else if (b == -1 || parse_real(s, &r)) {
        n->type = HERALD_CFG_REAL;
        n->u.r = b == -1 ? strtod(s, NULL) : r;
    } else {
        set_string(n, s, len);
    }
}

static int ynext(struct yctx *c, yaml_event_t *ev)
{
    if (yaml_parser_parse(&c->p, ev))
        return 0;
    yaml_parser_t *p = &c->p;
    int line, col;
    if (p->error == YAML_READER_ERROR) {
        offset_pos(c->text, c->len, p->problem_offset, &line, &col);
        set_err(c->err, c->file, line, col, "%s (the file must be UTF-8 text)",
                p->problem ? p->problem : "invalid input");
        return -1;
    }
    if (p->error == YAML_MEMORY_ERROR) {
        set_err(c->err, c->file, 0, 0, "out of memory while parsing YAML");
        return -1;
    }
    line = (int)p->problem_mark.line + 1;
    col = (int)p->problem_mark.column + 1;
    const char *hint = "";
    size_t idx = p->problem_mark.index;
    if (p->problem && strstr(p->problem, "cannot start any token") && idx < c->len && c->text[idx] == '\t')
        hint = " (a tab: YAML indentation must use spaces)";
    else if (p->problem && strstr(p->problem, "tab") && !strstr(p->problem, "cannot start"))
        hint = " (YAML indentation must use spaces)";
    if (p->context)
        set_err(c->err, c->file, line, col, "YAML syntax error: %s%s (%s at line %d, column %d)",
                p->problem ? p->problem : "invalid YAML", hint, p->context,
                (int)p->context_mark.line + 1, (int)p->context_mark.column + 1);
    else
        set_err(c->err, c->file, line, col, "YAML syntax error: %s%s",
                p->problem ? p->problem : "invalid YAML", hint);
    return -1;
}

static int count_new(struct yctx *c, size_t n, const yaml_mark_t *m)
{
    if (c->nodes + n > CFG_MAX_NODES) {
        set_err(c->err, c->file, (int)m->line + 1, (int)m->column + 1,
                "the document expands to more than %u nodes (aliases nested too deeply?)",
                CFG_MAX_NODES);
        return -1;
    }
    c->nodes += n;
    return 0;
}

static void add_anchor(struct yctx *c, const yaml_char_t *name, struct herald_cfg *n)
{
    struct anchor *a = VEC_PUSH(c->anchors, c->nanchors, c->capanchors);
    a->name = xstrdup((const char *)name);
    a->node = n;
}

static struct herald_cfg *find_anchor(struct yctx *c, const char *name)
{
    for (size_t i = c->nanchors; i-- > 0;) /* the latest definition wins */
        if (strcmp(c->anchors[i].name, name) == 0)
            return c->anchors[i].node;
    return NULL;
}

static struct herald_cfg *yparse_node(struct yctx *c, yaml_event_t *ev, int depth);

static int merge_source_ok(const struct herald_cfg *v)
{
    if (v->type == HERALD_CFG_OBJECT)
        return 1;
    if (v->type != HERALD_CFG_ARRAY)
        return 0;
    for (size_t i = 0; i < v->u.kids.n; i++)
        if (v->u.kids.items[i]->type != HERALD_CFG_OBJECT)
            return 0;
    return 1;
}

/* Merges the members of src that map does not have yet (explicit keys win). */
static int merge_into(struct yctx *c, struct herald_cfg *map, const struct herald_cfg *src,
                      const yaml_mark_t *m)
{
    for (size_t i = 0; i < src->u.kids.n; i++) {
        const struct herald_cfg *kid = src->u.kids.items[i];
        if (obj_find(map, kid->key))
            continue;
        if (count_new(c, count_nodes(kid), m) < 0)
            return -1;
        struct herald_cfg *cp = deep_copy(kid);
        cp->key = xstrdup(kid->key);
        kids_push(map, cp);
    }
    return 0;
}

static struct herald_cfg *yparse_mapping(struct yctx *c, yaml_event_t *start, int depth)
{
    const char *file = c->file;
    struct herald_cfg *map = node_alloc(HERALD_CFG_OBJECT, file, (int)start->start_mark.line + 1,
                                        (int)start->start_mark.column + 1);
    struct herald_cfg *merges[16];
    size_t nmerges = 0;
    yaml_mark_t merge_mark = start->start_mark;
    for (;;) {
        yaml_event_t kev, vev;
        if (ynext(c, &kev) < 0)
            goto fail;
        if (kev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&kev);
            break;
        }
        int kl = (int)kev.start_mark.line + 1, kc = (int)kev.start_mark.column + 1;
        if (kev.type != YAML_SCALAR_EVENT) {
            set_err(c->err, file, kl, kc, "a mapping key must be a plain string%s",
                    kev.type == YAML_ALIAS_EVENT ? " (not an alias)" : "");
            yaml_event_delete(&kev);
            goto fail;
        }
        const char *key = (const char *)kev.data.scalar.value;
        if (strlen(key) != kev.data.scalar.length) {
            set_err(c->err, file, kl, kc, "a mapping key contains a NUL character");
            yaml_event_delete(&kev);
            goto fail;
        }
        bool is_merge = kev.data.scalar.plain_implicit && strcmp(key, "<<") == 0;
        struct herald_cfg *dup = is_merge ? NULL : obj_find(map, key);
        if (dup) {
            set_err(c->err, file, kl, kc, "duplicate key '%s' (first at line %d)", key, dup->line);
            yaml_event_delete(&kev);
            goto fail;
        }
        if (ynext(c, &vev) < 0) {
            yaml_event_delete(&kev);
            goto fail;
        }
        struct herald_cfg *val = yparse_node(c, &vev, depth + 1);
        if (!val) {
            yaml_event_delete(&kev);
            goto fail;
        }
        if (is_merge) {
            if (!merge_source_ok(val) || nmerges == ARRAY_SIZE(merges)) {
                set_err(c->err, file, kl, kc,
                        "'<<' (merge key) needs a mapping or a list of mappings, such as *anchor");
                cfg_free(val);
                yaml_event_delete(&kev);
                goto fail;
            }
            merges[nmerges++] = val;
            merge_mark = kev.start_mark;
            *VEC_PUSH(c->graveyard, c->ngrave, c->capgrave) = val;
        } else {
            val->key = xstrdup(key);
            val->line = kl;
            val->column = kc;
            kids_push(map, val);
        }
        yaml_event_delete(&kev);
    }
    for (size_t i = 0; i < nmerges; i++) {
        const struct herald_cfg *src = merges[i];
        if (src->type == HERALD_CFG_OBJECT) {
            if (merge_into(c, map, src, &merge_mark) < 0)
                goto fail;
        } else {
            for (size_t j = 0; j < src->u.kids.n; j++)
                if (merge_into(c, map, src->u.kids.items[j], &merge_mark) < 0)
                    goto fail;
        }
    }
    return map;
fail:
    cfg_free(map);
    return NULL;
}

static struct herald_cfg *yparse_node(struct yctx *c, yaml_event_t *ev, int depth)
{
    int line = (int)ev->start_mark.line + 1, col = (int)ev->start_mark.column + 1;
    struct herald_cfg *n = NULL;
    const yaml_char_t *anchor = NULL;

    switch (ev->type) {
    case YAML_SCALAR_EVENT: {
        if (count_new(c, 1, &ev->start_mark) < 0)
            break;
        n = node_alloc(HERALD_CFG_NULL, c->file, line, col);
        const char *s = (const char *)ev->data.scalar.value;
        size_t len = ev->data.scalar.length;
        const char *tag = (const char *)ev->data.scalar.tag;
        if (tag && strcmp(tag, YAML_STR_TAG) == 0) {
            set_string(n, s, len);
        } else if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
            resolve_plain(n, s, len);
        } else {
            set_string(n, s, len);
            n->quoted = true; /* quoted and block scalars are never resolved */
        }
        anchor = ev->data.scalar.anchor;
        break;
    }
    case YAML_ALIAS_EVENT: {
        const char *name = (const char *)ev->data.alias.anchor;
        struct herald_cfg *a = find_anchor(c, name);
        if (!a) {
            set_err(c->err, c->file, line, col, "unknown alias '*%s' (no '&%s' before it)", name, name);
            break;
        }
        if (depth >= CFG_MAX_DEPTH) {
            set_err(c->err, c->file, line, col, "nesting deeper than %d levels", CFG_MAX_DEPTH);
            break;
        }
        if (count_new(c, count_nodes(a), &ev->start_mark) < 0)
            break;
        n = deep_copy(a);
        n->line = line;
        n->column = col;
        break;
    }
    case YAML_SEQUENCE_START_EVENT: {
        if (depth >= CFG_MAX_DEPTH) {
            set_err(c->err, c->file, line, col, "nesting deeper than %d levels", CFG_MAX_DEPTH);
            break;
        }
        if (count_new(c, 1, &ev->start_mark) < 0)
            break;
        n = node_alloc(HERALD_CFG_ARRAY, c->file, line, col);
        anchor = ev->data.sequence_start.anchor;
        for (;;) {
            yaml_event_t iev;
            if (ynext(c, &iev) < 0)
                goto fail;
            if (iev.type == YAML_SEQUENCE_END_EVENT) {
                yaml_event_delete(&iev);
                break;
            }
            struct herald_cfg *item = yparse_node(c, &iev, depth + 1);
            if (!item)
                goto fail;
            kids_push(n, item);
        }
        break;
    }
    case YAML_MAPPING_START_EVENT:
        if (depth >= CFG_MAX_DEPTH) {
            set_err(c->err, c->file, line, col, "nesting deeper than %d levels", CFG_MAX_DEPTH);
            break;
        }
        if (count_new(c, 1, &ev->start_mark) < 0)
            break;
        anchor = ev->data.mapping_start.anchor;
        n = yparse_mapping(c, ev, depth);
        break;
    default:
        set_err(c->err, c->file, line, col, "unexpected YAML event");
        break;
    }
    if (n && anchor)
        add_anchor(c, anchor, n);
    yaml_event_delete(ev);
    return n;
fail:
    cfg_free(n);
    yaml_event_delete(ev);
    return NULL;
}

static struct herald_cfg *parse_yaml(const char *text, size_t len, const char *file, char **err)
{
    struct yctx c = { .file = file, .text = text, .len = len, .err = err };
    struct herald_cfg *root = NULL;
    yaml_event_t ev;
    bool done = false;

    if (!yaml_parser_initialize(&c.p)) {
        set_err(err, file, 0, 0, "cannot initialise the YAML parser");
        return NULL;
    }
    yaml_parser_set_input_string(&c.p, (const unsigned char *)text, len);
    while (!done) {
        if (ynext(&c, &ev) < 0)
            goto fail;
        switch (ev.type) {
        case YAML_STREAM_START_EVENT:
        case YAML_DOCUMENT_END_EVENT:
            yaml_event_delete(&ev);
            break;
        case YAML_STREAM_END_EVENT:
            yaml_event_delete(&ev);
            done = true;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (root) {
                set_err(err, file, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                        "a second YAML document ('---'): a config file holds exactly one");
                yaml_event_delete(&ev);
                goto fail;
            }
            yaml_event_delete(&ev);
            if (ynext(&c, &ev) < 0)
                goto fail;
            root = yparse_node(&c, &ev, 0);
            if (!root)
                goto fail;
            break;
        default:
            set_err(err, file, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                    "unexpected YAML event");
            yaml_event_delete(&ev);
            goto fail;
        }
    }
    if (!root) /* an empty file: an empty config, as Envoy reads it */
        root = node_alloc(HERALD_CFG_NULL, file, 1, 1);
    goto out;
fail:
    cfg_free(root);
    root = NULL;
out:
    for (size_t i = 0; i < c.nanchors; i++)
        free(c.anchors[i].name);
    free(c.anchors);
    for (size_t i = 0; i < c.ngrave; i++)
        cfg_free(c.graveyard[i]);
    free(c.graveyard);
    yaml_parser_delete(&c.p);
    return root;
}

/* ------------------------------------------------------------ JSON */

/* Walks the JSON text in step with jansson's tree (jansson keeps members in
 * document order) to learn where each value starts. The text was validated by
 * jansson, but every step still checks bounds. */
struct jwalk {
    const char *s;
    size_t n, pos;
    int line, col;
    const char *file;
    char **err;
    bool lost;
};

static void jw_adv(struct jwalk *w)
{
    if (w->pos >= w->n)
        return;
    unsigned char ch = (unsigned char)w->s[w->pos++];
    if (ch == '\n') {
        w->line++;
        w->col = 1;
    } else if ((ch & 0xC0) != 0x80) {
        w->col++;
    }
}

static void jw_ws(struct jwalk *w)
{
    while (w->pos < w->n && strchr(" \t\r\n", w->s[w->pos]) && w->s[w->pos])
        jw_adv(w);
}

static bool jw_expect(struct jwalk *w, char ch)
{
    jw_ws(w);
    if (w->pos < w->n && w->s[w->pos] == ch) {
        jw_adv(w);
        return true;
    }
    w->lost = true;
    return false;
}

static bool jw_string(struct jwalk *w)
{
    jw_ws(w);
    if (w->pos >= w->n || w->s[w->pos] != '"') {
        w->lost = true;
        return false;
    }
    jw_adv(w);
    while (w->pos < w->n && w->s[w->pos] != '"') {
        if (w->s[w->pos] == '\\')
            jw_adv(w);
        jw_adv(w);
    }
    jw_adv(w);
    return true;
}

static void jw_token(struct jwalk *w) /* a number or a literal */
{
    jw_ws(w);
    while (w->pos < w->n && (isalnum((unsigned char)w->s[w->pos]) || strchr("+-.", w->s[w->pos])) &&
           w->s[w->pos])
        jw_adv(w);
}

static struct herald_cfg *jw_build(struct jwalk *w, json_t *v, int depth)
{
    jw_ws(w);
    struct herald_cfg *n = node_alloc(HERALD_CFG_NULL, w->file, w->line, w->col);
    if (depth >= CFG_MAX_DEPTH) {
        set_err(w->err, w->file, w->line, w->col, "nesting deeper than %d levels", CFG_MAX_DEPTH);
        free(n);
        return NULL;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        n->type = HERALD_CFG_OBJECT;
        jw_expect(w, '{');
        const char *key;
        json_t *val;
        bool first = true;
        json_object_foreach(v, key, val) {
            if (!first)
                jw_expect(w, ',');
            first = false;
            jw_ws(w);
            int kl = w->line, kc = w->col;
            jw_string(w);
            jw_expect(w, ':');
            struct herald_cfg *kid = jw_build(w, val, depth + 1);
            if (!kid)
                goto fail;
            kid->line = kl;
            kid->column = kc;
            kid->key = xstrdup(key);
            kids_push(n, kid);
        }
        jw_expect(w, '}');
        break;
    }
    case JSON_ARRAY: {
        n->type = HERALD_CFG_ARRAY;
        jw_expect(w, '[');
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i)
                jw_expect(w, ',');
            struct herald_cfg *kid = jw_build(w, json_array_get(v, i), depth + 1);
            if (!kid)
                goto fail;
            kids_push(n, kid);
        }
        jw_expect(w, ']');
        break;
    }
    case JSON_STRING:
        set_string(n, json_string_value(v), json_string_length(v));
        n->quoted = true;
        jw_string(w);
        break;
    case JSON_INTEGER:
        n->type = HERALD_CFG_INT;
        n->u.i = json_integer_value(v);
        jw_token(w);
        break;
    case JSON_REAL:
        n->type = HERALD_CFG_REAL;
        n->u.r = json_real_value(v);
        jw_token(w);
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        n->type = HERALD_CFG_BOOL;
        n->u.b = json_is_true(v);
        jw_token(w);
        break;
    case JSON_NULL:
        jw_token(w);
        break;
    }
    return n;
fail:
    cfg_free(n);
    return NULL;
}

/* jansson reports a duplicate key without saying where the first one was;
 * this scan over the (otherwise valid up to there) text finds both. */
struct jkey { const char *p; size_t len; int line; };

static bool jd_value(struct jwalk *w, int depth, int *dl, int *dc, int *fl, char **name);

static bool jd_object(struct jwalk *w, int depth, int *dl, int *dc, int *fl, char **name)
{
    struct jkey *keys = NULL;
    size_t nkeys = 0, cap = 0;
    bool found = false;
    jw_adv(w); /* '{' */
    for (;;) {
        jw_ws(w);
        if (w->pos >= w->n || w->s[w->pos] == '}')
            break;
        int kl = w->line, kc = w->col;
        size_t start = w->pos;
        if (!jw_string(w))
            break;
        size_t klen = w->pos - start;
        for (size_t i = 0; i < nkeys; i++) {
            if (keys[i].len == klen && memcmp(keys[i].p, w->s + start, klen) == 0) {
                *dl = kl;
                *dc = kc;
                *fl = keys[i].line;
                *name = xstrndup(w->s + start + 1, klen >= 2 ? klen - 2 : 0);
                found = true;
                goto out;
            }
        }
        struct jkey *k = VEC_PUSH(keys, nkeys, cap);
        k->p = w->s + start;
        k->len = klen;
        k->line = kl;
        if (!jw_expect(w, ':'))
            break;
        if (jd_value(w, depth + 1, dl, dc, fl, name)) {
            found = true;
            goto out;
        }
        if (w->lost)
            break;
        jw_ws(w);
        if (w->pos < w->n && w->s[w->pos] == ',')
            jw_adv(w);
        else
            break;
    }
    jw_ws(w);
    if (w->pos < w->n && w->s[w->pos] == '}')
        jw_adv(w);
out:
    free(keys);
    return found;
}

static bool jd_value(struct jwalk *w, int depth, int *dl, int *dc, int *fl, char **name)
{
    jw_ws(w);
    if (w->pos >= w->n || depth > 2048) {
        w->lost = true;
        return false;
    }
    char ch = w->s[w->pos];
    if (ch == '{')
        return jd_object(w, depth, dl, dc, fl, name);
    if (ch == '[') {
        jw_adv(w);
        for (;;) {
            jw_ws(w);
            if (w->pos >= w->n || w->s[w->pos] == ']')
                break;
            if (jd_value(w, depth + 1, dl, dc, fl, name))
                return true;
            if (w->lost)
                return false;
            jw_ws(w);
            if (w->pos < w->n && w->s[w->pos] == ',')
                jw_adv(w);
            else
                break;
        }
        jw_ws(w);
        if (w->pos < w->n && w->s[w->pos] == ']')
            jw_adv(w);
        else
            w->lost = true;
        return false;
    }
    if (ch == '"') {
        jw_string(w);
        return false;
    }
    size_t before = w->pos;
    jw_token(w);
    if (w->pos == before)
        w->lost = true;
    return false;
}

static struct herald_cfg *parse_json(const char *text, size_t len, const char *file, char **err)
{
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!j) {
        if (strstr(je.text, "duplicate object key")) {
            struct jwalk w = { .s = text, .n = len, .line = 1, .col = 1, .file = file, .err = err };
            int dl, dc, fl;
            char *name = NULL;
            if (jd_value(&w, 0, &dl, &dc, &fl, &name)) {
                set_err(err, file, dl, dc, "duplicate key '%s' (first at line %d)", name, fl);
                free(name);
                return NULL;
            }
        }
        set_err(err, file, je.line > 0 ? je.line : 1, je.column > 0 ? je.column : 1,
                "JSON syntax error: %s", je.text);
        return NULL;
    }
    struct jwalk w = { .s = text, .n = len, .line = 1, .col = 1, .file = file, .err = err };
    struct herald_cfg *root = jw_build(&w, j, 0);
    json_decref(j);
    return root;
}

/* ------------------------------------------------------------ loading */

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcasecmp(s + a - b, suffix) == 0;
}

static bool looks_like_json(const char *name, const char *text, size_t len)
{
    if (ends_with(name, ".json"))
        return true;
    if (ends_with(name, ".yaml") || ends_with(name, ".yml"))
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!isspace((unsigned char)text[i]))
            return text[i] == '{';
    }
    return false;
}

struct cfg_doc *cfg_load_string(const char *text, size_t len, const char *name, char **err)
{
    struct cfg_doc *d = xcalloc(1, sizeof(*d));
    d->file = xstrdup(name ? name : "<config>");
    if (err)
        *err = NULL;
    char *e = NULL;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0 && looks_like_json(d->file, text + 3, len - 3)) {
        text += 3; /* a UTF-8 BOM: libyaml skips it itself, jansson does not */
        len -= 3;
    }
    if (looks_like_json(d->file, text, len))
        d->root = parse_json(text, len, d->file, &e);
    else
        d->root = parse_yaml(text, len, d->file, &e);
    if (!d->root) {
        if (!e)
            e = xasprintf("%s: cannot parse the config", d->file);
        if (err)
            *err = e;
        else
            free(e);
        cfg_doc_free(d);
        return NULL;
    }
    free(e);
    return d;
}

struct cfg_doc *cfg_load_file(const char *path, char **err)
{
    FILE *f = fopen(path, "rb");
    if (err)
        *err = NULL;
    if (!f) {
        if (err)
            *err = xasprintf("%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0, got;
    do {
        vec_reserve((void **)&buf, &cap, len + 65536, 1);
        got = fread(buf + len, 1, cap - len, f);
        len += got;
    } while (got > 0 && len < (size_t)256 << 20);
    bool bad = ferror(f);
    int saved = errno;
    fclose(f);
    if (bad) {
        free(buf);
        if (err)
            *err = xasprintf("%s: cannot read: %s", path, strerror(saved));
        return NULL;
    }
    struct cfg_doc *d = cfg_load_string(buf, len, path, err);
    free(buf);
    return d;
}

void cfg_doc_free(struct cfg_doc *d)
{
    if (!d)
        return;
    cfg_free(d->root);
    free(d->file);
    for (size_t i = 0; i < d->nmore_files; i++)
        free(d->more_files[i]);
    free(d->more_files);
    free(d);
}

static void merge_node(struct herald_cfg *base, struct herald_cfg *over)
{
    /* base and over are both objects; over's members are moved out */
    for (size_t i = 0; i < over->u.kids.n; i++) {
        struct herald_cfg *o = over->u.kids.items[i];
        struct herald_cfg *b = obj_find(base, o->key);
        if (b && b->type == HERALD_CFG_OBJECT && o->type == HERALD_CFG_OBJECT) {
            merge_node(b, o);
            cfg_free(o);
        } else if (b && b->type == HERALD_CFG_ARRAY && o->type == HERALD_CFG_ARRAY) {
            for (size_t j = 0; j < o->u.kids.n; j++)
                kids_push(b, o->u.kids.items[j]);
            o->u.kids.n = 0;
            cfg_free(o);
        } else {
            char *key = o->key;
            o->key = NULL;
            cfg_set(base, key, o);
            free(key);
        }
        over->u.kids.items[i] = NULL;
    }
    over->u.kids.n = 0;
}

void cfg_merge(struct cfg_doc *base, struct cfg_doc *over)
{
    if (!over || !over->root)
        return;
    if (base->root->type == HERALD_CFG_OBJECT && over->root->type == HERALD_CFG_OBJECT) {
        merge_node(base->root, over->root);
        cfg_free(over->root);
    } else if (over->root->type != HERALD_CFG_NULL) {
        cfg_free(base->root);
        base->root = over->root;
    } else {
        cfg_free(over->root);
    }
    over->root = NULL;
    /* the moved nodes point at over's file names: base keeps them now */
    size_t add = 1 + over->nmore_files;
    base->more_files = xrealloc(base->more_files, (base->nmore_files + add) * sizeof(char *));
    base->more_files[base->nmore_files++] = over->file;
    over->file = NULL;
    for (size_t i = 0; i < over->nmore_files; i++)
        base->more_files[base->nmore_files++] = over->more_files[i];
    over->nmore_files = 0;
}

/* ------------------------------------------------------------ rendering */

json_t *cfg_to_json(const struct herald_cfg *n)
{
    if (!n)
        return json_null();
    switch (n->type) {
    case HERALD_CFG_NULL:
        return json_null();
    case HERALD_CFG_BOOL:
        return json_boolean(n->u.b);
    case HERALD_CFG_INT:
        return json_integer(n->u.i);
    case HERALD_CFG_REAL:
        if (isfinite(n->u.r))
            return json_real(n->u.r);
        return json_string(isnan(n->u.r) ? "NaN" : n->u.r > 0 ? "Infinity" : "-Infinity");
    case HERALD_CFG_STRING:
        return json_stringn_nocheck(n->u.str.s, n->u.str.len);
    case HERALD_CFG_ARRAY: {
        json_t *a = json_array();
        for (size_t i = 0; i < n->u.kids.n; i++)
            json_array_append_new(a, cfg_to_json(n->u.kids.items[i]));
        return a;
    }
    case HERALD_CFG_OBJECT: {
        json_t *o = json_object();
        for (size_t i = 0; i < n->u.kids.n; i++)
            json_object_set_new_nocheck(o, n->u.kids.items[i]->key, cfg_to_json(n->u.kids.items[i]));
        return o;
    }
    }
    return json_null();
}

/* ------------------------------------------------------------ positions */

static size_t path_append(char *out, size_t size, size_t at, const char *s)
{
    size_t len = strlen(s);
    if (at < size) {
        size_t room = size - at - 1;
        memcpy(out + at, s, len < room ? len : room);
        out[at + (len < room ? len : room)] = '\0';
    }
    return at + len;
}

static size_t path_build(const struct herald_cfg *n, char *out, size_t size)
{
    if (!n || !n->parent)
        return 0;
    size_t at = path_build(n->parent, out, size);
    if (n->parent->type == HERALD_CFG_OBJECT) {
        if (n->parent->parent)
            at = path_append(out, size, at, ".");
        return path_append(out, size, at, n->key ? n->key : "?");
    }
    char idx[32];
    snprintf(idx, sizeof(idx), "[%zu]", n->index);
    return path_append(out, size, at, idx);
}

size_t herald_cfg_path(const struct herald_cfg *n, char *out, size_t size)
{
    if (size)
        out[0] = '\0';
    return path_build(n, out, size);
}

void cfg_where(const struct herald_cfg *n, char *out, size_t size)
{
    if (!size)
        return;
    if (!n) {
        snprintf(out, size, "<config>");
        return;
    }
    int len = snprintf(out, size, "%s:%d:%d", n->file ? n->file : "<config>", n->line, n->column);
    if (n->parent && len >= 0 && (size_t)len + 2 < size) {
        memcpy(out + len, ": ", 3);
        herald_cfg_path(n, out + len + 2, size - (size_t)len - 2);
    }
}

/* ------------------------------------------------------------ SDK accessors */

enum herald_cfg_type herald_cfg_type(const struct herald_cfg *n)
{
    return n ? n->type : HERALD_CFG_NULL;
}

const struct herald_cfg *herald_cfg_get(const struct herald_cfg *obj, const char *key)
{
    return obj_find(obj, key);
}

size_t herald_cfg_len(const struct herald_cfg *n)
{
    if (!n || (n->type != HERALD_CFG_ARRAY && n->type != HERALD_CFG_OBJECT))
        return 0;
    return n->u.kids.n;
}

const struct herald_cfg *herald_cfg_at(const struct herald_cfg *n, size_t i)
{
    return i < herald_cfg_len(n) ? n->u.kids.items[i] : NULL;
}

const char *herald_cfg_key_at(const struct herald_cfg *obj, size_t i)
{
    if (!obj || obj->type != HERALD_CFG_OBJECT || i >= obj->u.kids.n)
        return NULL;
    return obj->u.kids.items[i]->key;
}

const char *herald_cfg_str(const struct herald_cfg *n, const char *def)
{
    return n && n->type == HERALD_CFG_STRING ? n->u.str.s : def;
}

int64_t herald_cfg_int(const struct herald_cfg *n, int64_t def)
{
    if (!n)
        return def;
    switch (n->type) {
    case HERALD_CFG_INT:
        return n->u.i;
    case HERALD_CFG_REAL:
        if (n->u.r == floor(n->u.r) && n->u.r >= -9.2e18 && n->u.r <= 9.2e18)
            return (int64_t)n->u.r;
        return def;
    case HERALD_CFG_STRING: {
        int64_t v;
        if (strlen(n->u.str.s) == n->u.str.len && parse_int(n->u.str.s, &v) == 1)
            return v;
        return def;
    }
    default:
        return def;
    }
}

double herald_cfg_real(const struct herald_cfg *n, double def)
{
    if (!n)
        return def;
    if (n->type == HERALD_CFG_REAL)
        return n->u.r;
    if (n->type == HERALD_CFG_INT)
        return (double)n->u.i;
    if (n->type == HERALD_CFG_STRING) {
        double r;
        if (parse_real(n->u.str.s, &r))
            return r;
    }
    return def;
}

bool herald_cfg_bool(const struct herald_cfg *n, bool def)
{
    if (!n)
        return def;
    if (n->type == HERALD_CFG_BOOL)
        return n->u.b;
    if (n->type == HERALD_CFG_STRING) {
        int b = plain_bool(n->u.str.s);
        if (b >= 0)
            return b;
    }
    return def;
}

uint64_t herald_cfg_duration_ms(const struct herald_cfg *n, uint64_t def)
{
    uint64_t ms;
    if (!n || n->type != HERALD_CFG_STRING || schema_parse_duration_ms(n->u.str.s, &ms) < 0)
        return def;
    return ms;
}

const char *herald_cfg_file(const struct herald_cfg *n)
{
    return n ? n->file : NULL;
}

int herald_cfg_line(const struct herald_cfg *n)
{
    return n ? n->line : 0;
}

int herald_cfg_column(const struct herald_cfg *n)
{
    return n ? n->column : 0;
}
