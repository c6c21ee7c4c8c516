/* The admin listener (libevent's evhttp, on the main thread): Envoy's
 * endpoints /ready /stats /stats/prometheus /clusters /config_dump
 * /server_info /listeners /quitquitquit /help ... */
#ifndef HERALD_CORE_ADMIN_H
#define HERALD_CORE_ADMIN_H

#include <stdbool.h>

struct server;
struct admin;

/* Binds admin.address from the config; NULL with *err on failure.
 * Writes the bound address to opt.admin_address_path when set. */
struct admin *admin_start(struct server *s, char **err);
void admin_stop(struct admin *a);
/* After a reload handover: closes the listening socket (the new process has its own copy). */
void admin_stop_accepting(struct admin *a);
/* "ip:port" ([v6]:port) actually bound, or the pipe path; NULL when admin is off. */
const char *admin_address(const struct admin *a);
/* POST /healthcheck/fail sets it, /healthcheck/ok clears it; any thread may read it. */
bool admin_health_failed(void);

#endif
