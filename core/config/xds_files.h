/* Envoy's filesystem xDS: dynamic_resources.lds_config / cds_config with a
 * path_config_source name files whose resources (a DiscoveryResponse:
 * `resources: [{"@type": ...Listener, ...}]`) are herald's listeners and
 * clusters. They join static_resources when the config is loaded, so they get
 * the same checks and errors (file:line:col in their own file), and the
 * server polls them: a change of any kind (an edit in place, a copy, an
 * atomic move, a Kubernetes ConfigMap symlink swap, a file that appears)
 * reloads herald as SIGHUP does, new config validated first. */
#ifndef HERALD_CORE_CONFIG_XDS_FILES_H
#define HERALD_CORE_CONFIG_XDS_FILES_H

#include <stddef.h>

#include "config/diag.h"
#include "config/tree.h"

struct xds_files;

/* Moves the resources of the files doc's dynamic_resources name into its
 * static_resources; *files (NULL when there are none) remembers them, and
 * what they were when they were read, for xds_watch_start. 0, or -1 with the
 * errors in d. */
int xds_files_expand(struct cfg_doc *doc, struct cfg_diag *d, struct xds_files **files);
void xds_files_free(struct xds_files *f);



struct event_base;
struct xds_watch;

/* Polls the files once a second (stat: inode, size, modification time, or
 * missing): when one differs from what was read, or last seen, changed(arg)
 * runs, once per change. A change made while a reload was starting is seen
 * by the new process, which compares with what it read itself. */
struct xds_watch *xds_watch_start(struct event_base *base, struct xds_files *files, void (*changed)(void *arg),
                                  void *arg);
void xds_watch_stop(struct xds_watch *w);
#endif
