/* Reload without a restart, HAProxy-seamless-reload style. On SIGHUP the
 * running herald validates the new config with `herald --mode validate` (a
 * child whose stderr it logs) and, when it is valid, starts itself again with
 * the same argv, handing every listening socket over (environment variable
 * HERALD_INHERITED_SOCKETS="key=fd,fd;key=fd") plus a socketpair end
 * (HERALD_RELOAD_FD). The new process adopts the sockets whose address it
 * still listens on, so nothing queued in a kernel accept queue is lost,
 * starts, and writes "ready" on that socket; the old one sends its counters
 * back on it (the new process adds them to its own), then stops accepting,
 * drains, sends what it counted meanwhile and exits. */
#ifndef HERALD_CORE_RELOAD_H
#define HERALD_CORE_RELOAD_H

#include <stdbool.h>

struct server;

/* At start-up: remembers our own binary, takes the inherited sockets and the
 * readiness pipe out of the environment. */
void reload_init(void);
/* "tcp:127.0.0.1:8080", "admin:[::1]:9901", "admin:unix:/run/x.sock": the
 * configured (not the bound) address, so that port 0 keeps its port. */
char *reload_key(const char *kind, const char *host, unsigned port);
/* An inherited listening socket for key (now the caller's), or -1. */
int reload_take_socket(const char *key);
/* Registers one of this process's listening sockets for the next reload. */
void reload_add_socket(const char *key, int fd);
/* A listener's sockets are being closed (POST /drain_listeners): not handed
 * to the next process, which binds the address afresh. */
void reload_forget_sockets(const char *key);
/* Listeners and admin are up: closes the inherited sockets nobody took and,
 * in a reloaded process, tells the old one it may stop accepting. */
void reload_started(struct server *s);
/* SIGHUP, or a dynamic_resources file changed: why says which, in the log. */
void reload_begin(struct server *s, const char *why);
/* Shutdown: a new process not yet ready is killed. */
void reload_abort(void);
/* true once a new process took over from this one. */
bool reload_handed_over(void);
void reload_free(void);

#endif
