/* Filter configs made real: each filter a config names is resolved to its
 * plugin, its typed_config checked against the plugin's schema, and the
 * plugin's config_create called (main thread). Workers then make per-worker
 * state and per-connection sessions from these. */
#ifndef HERALD_CORE_FILTERS_H
#define HERALD_CORE_FILTERS_H

#include <stdbool.h>

#include "config/bootstrap.h"
#include "config/diag.h"
#include "plugin.h"

struct herald_filter_env {
    const char *filter_name;
    const char *listener_name;
    const char *stat_prefix;       /* HTTP filters: "http.<hcm stat_prefix>" */
    bool validate_only;
    const struct bootstrap *boot;
    struct cfg_diag *diag;
};

/* Every cluster counts as used (a route's cluster_header can name any):
 * no "never referenced" warning. */
void env_mark_all_clusters_referenced(const struct herald_filter_env *e);

struct net_filter {
    const struct plugin *plugin;
    const struct herald_network_filter_ops *ops;
    void *conf;
    void **wstate;                 /* [nworkers], from ops->worker_init */
};

struct listener_filter {
    const struct plugin *plugin;
    const struct herald_listener_filter_ops *ops;
    void *conf;
    size_t max_read_bytes;
};

struct filter_chain {
    const struct filter_chain_cfg *cfg;
    struct net_filter *filters; size_t nfilters;
};

/* 0, or -1 with errors in d. nworkers sizes the per-worker state arrays. */
int filter_chain_build(struct filter_chain *fc, const struct filter_chain_cfg *cfg, const char *listener_name,
                       const struct bootstrap *boot, bool validate_only, unsigned nworkers, struct cfg_diag *d);
void filter_chain_destroy(struct filter_chain *fc, unsigned nworkers);
int listener_filter_build(struct listener_filter *lf, const struct filter_cfg *cfg, const char *listener_name,
                          const struct bootstrap *boot, bool validate_only, struct cfg_diag *d);
void listener_filter_destroy(struct listener_filter *lf);

/* Per-worker init/teardown of every filter of a chain (on that worker). */
void filter_chain_worker_init(struct filter_chain *fc, unsigned worker);
void filter_chain_worker_destroy(struct filter_chain *fc, unsigned worker);

#endif
