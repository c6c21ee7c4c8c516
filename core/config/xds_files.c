/* Filesystem xDS: the files of dynamic_resources (see xds_files.h). */
#include <event2/event.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"
#include "config/xds_files.h"
#include "log.h"

struct file_state { dev_t dev; ino_t ino; off_t size; struct timespec mtime; bool present; };

struct xds_files {
    char **paths; size_t n;
    struct file_state *last;           /* as read at start-up, then as last seen */
};

/* stat, not lstat: a ConfigMap's ..data symlink swap changes what the path leads to */
static struct file_state state_of(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return (struct file_state){.present = false};
    return (struct file_state){.dev = st.st_dev, .ino = st.st_ino, .size = st.st_size, .mtime = st.st_mtim,
                               .present = true};
}

static bool same_state(const struct file_state *a, const struct file_state *b)
{
    return a->present == b->present && (!a->present || (a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
                                                         a->mtime.tv_sec == b->mtime.tv_sec &&
                                                         a->mtime.tv_nsec == b->mtime.tv_nsec));
}

static const struct {
    const char *config, *list, *type, *what, *name;
} kinds[] = {
    {"lds_config", "listeners", "envoy.config.listener.v3.Listener", "LDS", "Listener"},
    {"cds_config", "clusters", "envoy.config.cluster.v3.Cluster", "CDS", "Cluster"},
};

/* The DiscoveryResponse fields a resource file may hold besides resources */
static bool response_field(const char *key)
{
    static const char *const ok[] = {"version_info", "resources", "canary", "type_url", "nonce", "control_plane",
                                     NULL};
    for (int i = 0; ok[i]; i++)
        if (strcmp(key, ok[i]) == 0)
            return true;
    return false;
}

/* Checks one resource file; its resources, moved under static_resources.<list>
 * of a new root, are then merged into doc. */
static int expand_one(struct cfg_doc *doc, const struct herald_cfg *pathnode, const char *path, int k,
                      struct cfg_diag *d)
{
    char *err = NULL;
    struct cfg_doc *sub = cfg_load_file(path, &err);
    if (!sub) {
        diag_error(d, pathnode, "the %s file: %s", kinds[k].what, err ? err : "cannot read it");
        free(err);
        return -1;
    }
    struct herald_cfg *root = sub->root;
    size_t before = d->nerrors;
    if (!root || root->type != HERALD_CFG_OBJECT) {
        diag_error(d, root ? root : pathnode, "a %s file is a mapping with resources: [{\"@type\": "
                   "type.googleapis.com/%s, ...}]", kinds[k].what, kinds[k].type);
        cfg_doc_free(sub);
        return -1;
    }
    for (size_t i = 0; i < herald_cfg_len(root); i++)
        if (!response_field(herald_cfg_key_at(root, i)))
            diag_error(d, herald_cfg_at(root, i), "unknown field '%s' in a %s file (a DiscoveryResponse: "
                       "version_info, resources)", herald_cfg_key_at(root, i), kinds[k].what);
    struct herald_cfg *res = (struct herald_cfg *)herald_cfg_get(root, "resources");
    if (res && res->type != HERALD_CFG_ARRAY) {
        diag_error(d, res, "resources: expected a list of %ss", kinds[k].name);
        res = NULL;
    }
    for (size_t i = 0; res && i < res->u.kids.n; i++) {
        const struct herald_cfg *r = res->u.kids.items[i], *t = herald_cfg_get(r, "@type");
        const char *url = herald_cfg_str(t, NULL), *slash = url ? strrchr(url, '/') : NULL;
        if (r->type != HERALD_CFG_OBJECT)
            diag_error(d, r, "expected a mapping (a %s)", kinds[k].name);
        else if (!url || strcmp(slash ? slash + 1 : url, kinds[k].type) != 0)
            diag_error(d, t ? t : r, "a %s file holds %ss: \"@type\": type.googleapis.com/%s", kinds[k].what,
                       kinds[k].name, kinds[k].type);
    }
    if (d->nerrors > before) {
        cfg_doc_free(sub);
        return -1;
    }
    /* {static_resources: {<list>: the resources}} over doc: lists concatenate */
    struct herald_cfg *nroot = cfg_new(HERALD_CFG_OBJECT, root), *sr = cfg_new(HERALD_CFG_OBJECT, root);
    struct herald_cfg *arr = cfg_new(HERALD_CFG_ARRAY, res ? res : root);
    for (size_t i = 0; res && i < res->u.kids.n; i++)
        cfg_append(arr, res->u.kids.items[i]);
    if (res)
        res->u.kids.n = 0;   /* moved */
    cfg_set(sr, kinds[k].list, arr);
    cfg_set(nroot, "static_resources", sr);
    cfg_free(root);
    sub->root = nroot;
    cfg_merge(doc, sub);
    cfg_doc_free(sub);
    return 0;
}

int xds_files_expand(struct cfg_doc *doc, struct cfg_diag *d, struct xds_files **files)
{
    *files = NULL;
    const struct herald_cfg *dr = herald_cfg_get(doc->root, "dynamic_resources");
    if (!dr || dr->type != HERALD_CFG_OBJECT)
        return 0;   /* absent, or the schema says what is wrong with it */
    int rc = 0;
    for (int k = 0; k < 2; k++) {
        const struct herald_cfg *cs = herald_cfg_get(dr, kinds[k].config);
        const struct herald_cfg *pn = herald_cfg_get(herald_cfg_get(cs, "path_config_source"), "path");
        if (!pn)
            pn = herald_cfg_get(cs, "path");   /* the deprecated spelling */
        const char *path = herald_cfg_str(pn, NULL);
        if (!path || !*path)
            continue;   /* no file: the schema reports what the config source lacks */
        struct xds_files *f = *files ? *files : (*files = xcalloc(1, sizeof(**files)));
        f->paths = xrealloc(f->paths, (f->n + 1) * sizeof(*f->paths));
        f->last = xrealloc(f->last, (f->n + 1) * sizeof(*f->last));
        f->last[f->n] = state_of(path);   /* before reading: a change while we read is a change */
        f->paths[f->n++] = xstrdup(path);
        if (expand_one(doc, pn, path, k, d) < 0)
            rc = -1;
    }
    return rc;
}

void xds_files_free(struct xds_files *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n; i++)
        free(f->paths[i]);
    free(f->paths);
    free(f->last);
    free(f);
}

/* ------------------------------------------------------------ the watch */

struct xds_watch {
    struct event *timer;
    struct xds_files *files;
    void (*changed)(void *arg);
    void *arg;
};

static void poll_files(evutil_socket_t fd, short what, void *arg)
{
    struct xds_watch *w = arg;
    struct xds_files *f = w->files;
    bool changed = false;
    for (size_t i = 0; i < f->n; i++) {
        struct file_state now = state_of(f->paths[i]);
        if (!same_state(&now, &f->last[i])) {
            log_info("config", "%s %s: reloading", f->paths[i], now.present ? "changed" : "is gone");
            f->last[i] = now;
            changed = true;
        }
    }
    if (changed)
        w->changed(w->arg);
}

struct xds_watch *xds_watch_start(struct event_base *base, struct xds_files *files, void (*changed)(void *arg),
                                  void *arg)
{
    if (!files || !files->n)
        return NULL;
    struct xds_watch *w = xcalloc(1, sizeof(*w));
    w->files = files;
    w->changed = changed;
    w->arg = arg;
    w->timer = event_new(base, -1, EV_PERSIST, poll_files, w);
    struct timeval second = {1, 0};
    event_add(w->timer, &second);
    return w;
}

void xds_watch_stop(struct xds_watch *w)
{
    if (!w)
        return;
    event_free(w->timer);
    free(w);
}
