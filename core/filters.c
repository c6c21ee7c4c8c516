#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "config/schema.h"
#include "filters.h"
#include "log.h"

/* ---- the SDK's view of config time */
const char *herald_env_filter_name(const struct herald_filter_env *e) { return e->filter_name; }
const char *herald_env_listener_name(const struct herald_filter_env *e) { return e->listener_name; }
const char *herald_env_stat_prefix(const struct herald_filter_env *e) { return e->stat_prefix; }
bool herald_env_validate_only(const struct herald_filter_env *e) { return e->validate_only; }

bool herald_env_cluster_exists(const struct herald_filter_env *e, const char *cluster)
{
    const struct cluster_cfg *c = e->boot ? bootstrap_find_cluster(e->boot, cluster) : NULL;
    if (c)
        ((struct cluster_cfg *)c)->referenced = true; /* only read by the "never referenced" warning */
    return c != NULL;
}

const struct herald_cfg *herald_env_cluster_protocol_options(const struct herald_filter_env *e, const char *cluster,
                                                              const char *name)
{
    const struct cluster_cfg *c = e && e->boot && cluster ? bootstrap_find_cluster(e->boot, cluster) : NULL;
    return c && name ? herald_cfg_get(herald_cfg_get(c->node, "typed_extension_protocol_options"), name) : NULL;
}

void env_mark_all_clusters_referenced(const struct herald_filter_env *e)
{
    for (size_t i = 0; e->boot && i < e->boot->nclusters; i++)
        ((struct cluster_cfg *)&e->boot->clusters[i])->referenced = true;
}

void herald_env_warn(const struct herald_filter_env *e, const struct herald_cfg *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = xvasprintf(fmt, ap);
    va_end(ap);
    if (e->diag)
        diag_warn(e->diag, at, "%s", msg);
    else
        log_warn("config", "%s", msg);
    free(msg);
}

/* Finds the plugin and runs its schema and factory. Returns the plugin or NULL. */
static const struct plugin *make_config(const struct filter_cfg *f, enum herald_plugin_kind kind,
                                        const char *listener_name, const struct bootstrap *boot,
                                        bool validate_only, struct cfg_diag *d, void **conf)
{
    char *err = NULL;
    const char *type_url = f->type_url;
    /* TypedStruct wraps the real type in type_url; then the name decides. */
    if (type_url && (strcmp(type_url, "xds.type.v3.TypedStruct") == 0 ||
                     strcmp(type_url, "udpa.type.v1.TypedStruct") == 0))
        type_url = NULL;
    const struct plugin *p = plugin_find(f->name, type_url, kind, &err);
    if (!p) {
        const char *hint = f->name ? schema_v2_filter_hint(f->name) : NULL;
        if (hint)
            diag_error(d, f->node, "%s; '%s' is a v2-era name: use '%s'", err, f->name, hint);
        else
            diag_error(d, f->node, "%s", err);
        free(err);
        return NULL;
    }
    /* An omitted typed_config means the defaults, as in Envoy; the schema
     * still runs so that required fields are reported. */
    struct herald_cfg *tc = (struct herald_cfg *)f->typed_config;
    struct herald_cfg *empty = NULL;
    if (!tc) {
        empty = cfg_new(HERALD_CFG_OBJECT, f->node);
        tc = empty;
    }
    if (p->desc->config_schema && schema_check(tc, p->desc->config_schema, d) < 0) {
        cfg_free(empty);
        return NULL;
    }
    struct herald_filter_env env = {
        .filter_name = p->desc->name, .listener_name = listener_name, .validate_only = validate_only,
        .boot = boot, .diag = d,
    };
    const struct herald_network_filter_ops *ops = p->desc->ops; /* both kinds start the same way */
    int rc = ops->config_create ? ops->config_create(tc, &env, conf, &err) : 0;
    if (rc < 0) {
        if (err)
            diag_error_take(d, err);
        else
            diag_error(d, tc, "filter '%s' rejected its configuration", p->desc->name);
        cfg_free(empty);
        return NULL;
    }
    /* The plugin may keep pointers into the node it was given. */
    if (empty)
        cfg_set((struct herald_cfg *)f->node, "typed_config", empty);
    return p;
}

int filter_chain_build(struct filter_chain *fc, const struct filter_chain_cfg *cfg, const char *listener_name,
                       const struct bootstrap *boot, bool validate_only, unsigned nworkers, struct cfg_diag *d)
{
    memset(fc, 0, sizeof(*fc));
    fc->cfg = cfg;
    fc->filters = xcalloc(cfg->nfilters, sizeof(*fc->filters));
    int rc = 0;
    for (size_t i = 0; i < cfg->nfilters; i++) {
        struct net_filter *nf = &fc->filters[fc->nfilters];
        const struct plugin *p = make_config(&cfg->filters[i], HERALD_PLUGIN_NETWORK_FILTER, listener_name, boot,
                                             validate_only, d, &nf->conf);
        if (!p) {
            rc = -1;
            continue;
        }
        nf->plugin = p;
        nf->ops = p->desc->ops;
        nf->wstate = xcalloc(nworkers ? nworkers : 1, sizeof(void *));
        fc->nfilters++;
        bool last = i + 1 == cfg->nfilters;
        if ((p->desc->flags & HERALD_PLUGIN_TERMINAL) && !last) {
            diag_error(d, cfg->filters[i].node,
                       "'%s' is a terminal filter and must be the last of its chain", p->desc->name);
            rc = -1;
        }
        if (last && !(p->desc->flags & HERALD_PLUGIN_TERMINAL)) {
            diag_error(d, cfg->filters[i].node,
                       "the last filter of a chain must be a terminal filter (such as "
                       "envoy.filters.network.tcp_proxy); '%s' is not", p->desc->name);
            rc = -1;
        }
    }
    return rc;
}

void filter_chain_worker_init(struct filter_chain *fc, unsigned worker)
{
    for (size_t i = 0; i < fc->nfilters; i++)
        if (fc->filters[i].ops->worker_init)
            fc->filters[i].wstate[worker] = fc->filters[i].ops->worker_init(fc->filters[i].conf, worker);
}

void filter_chain_worker_destroy(struct filter_chain *fc, unsigned worker)
{
    for (size_t i = 0; i < fc->nfilters; i++)
        if (fc->filters[i].ops->worker_destroy)
            fc->filters[i].ops->worker_destroy(fc->filters[i].conf, fc->filters[i].wstate[worker]);
}

void filter_chain_destroy(struct filter_chain *fc, unsigned nworkers)
{
    for (size_t i = fc->nfilters; i-- > 0;) {
        if (fc->filters[i].ops->config_destroy)
            fc->filters[i].ops->config_destroy(fc->filters[i].conf);
        free(fc->filters[i].wstate);
    }
    free(fc->filters);
    memset(fc, 0, sizeof(*fc));
}

int listener_filter_build(struct listener_filter *lf, const struct filter_cfg *cfg, const char *listener_name,
                          const struct bootstrap *boot, bool validate_only, struct cfg_diag *d)
{
    memset(lf, 0, sizeof(*lf));
    const struct plugin *p = make_config(cfg, HERALD_PLUGIN_LISTENER_FILTER, listener_name, boot, validate_only, d,
                                         &lf->conf);
    if (!p)
        return -1;
    lf->plugin = p;
    lf->ops = p->desc->ops;
    lf->max_read_bytes = lf->ops->max_read_bytes ? lf->ops->max_read_bytes(lf->conf) : 0;
    return 0;
}

void listener_filter_destroy(struct listener_filter *lf)
{
    if (lf->ops && lf->ops->config_destroy)
        lf->ops->config_destroy(lf->conf);
    memset(lf, 0, sizeof(*lf));
}
