/* Overload protection, the part of Envoy's overload manager herald has:
 * limits on active downstream connections. A global limit (the
 * envoy.resource_monitors.global_downstream_max_connections resource
 * monitor, or else the runtime key overload.global_downstream_max_connections)
 * and a per-listener one (runtime key
 * envoy.resource_limits.listener.<listener name>.connection_limit). A socket
 * counts from accept (listener filters included) until it is closed; the
 * admin listener is never limited. */
#ifndef HERALD_CORE_OVERLOAD_H
#define HERALD_CORE_OVERLOAD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/diag.h"
#include "config/tree.h"

#define OVERLOAD_MONITOR_DOWNSTREAM_CX "envoy.resource_monitors.global_downstream_max_connections"
#define OVERLOAD_RUNTIME_GLOBAL_CX "overload.global_downstream_max_connections"

/* Main thread, at start-up: node is the bootstrap's overload_manager (may be NULL). */
int overload_init(const struct herald_cfg *overload_manager, struct cfg_diag *d);
void overload_shutdown(void);

enum overload_cx {
    OVERLOAD_CX_OK = 0,
    OVERLOAD_CX_GLOBAL,       /* over the global limit: downstream_global_cx_overflow */
    OVERLOAD_CX_LISTENER,     /* over the listener's limit: downstream_cx_overflow */
};

/* Worker, for each accepted socket: counts it in (globally unless
 * ignore_global, and in *listener_open) and returns OK, or refuses it
 * without counting. listener_name picks the per-listener runtime key. */
enum overload_cx overload_cx_acquire(const char *listener_name, atomic_uint_least64_t *listener_open,
                                     bool ignore_global);
/* Worker, when a socket counted by overload_cx_acquire is closed. */
void overload_cx_release(atomic_uint_least64_t *listener_open, bool ignore_global);

/* ---- the pressure side (overload_actions.c): resource monitors read every
 * refresh_interval on the main thread, and the actions they trigger. */
enum overload_action {
    OVERLOAD_STOP_ACCEPTING_REQUESTS = 0,  /* new HTTP requests: 503 "envoy overloaded" */
    OVERLOAD_DISABLE_HTTP_KEEPALIVE,       /* HTTP/1 responses close, HTTP/2 connections get GOAWAY */
    OVERLOAD_REJECT_INCOMING_CONNECTIONS,  /* accepted sockets are closed at once */
    OVERLOAD_SHRINK_HEAP,                  /* malloc_trim on every refresh */
    OVERLOAD_REDUCE_TIMEOUTS,              /* the timers below, shorter as pressure grows */
    OVERLOAD_NACTIONS
};
extern atomic_bool overload_active[OVERLOAD_NACTIONS];
/* Any thread: one relaxed load. An action is on when it is saturated (a
 * threshold trigger reached, or a scaled trigger at its saturation_threshold). */
static inline bool overload_action_on(enum overload_action a)
{
    return atomic_load_explicit(&overload_active[a], memory_order_relaxed);
}

/* envoy.overload_actions.reduce_timeouts (ScaleTimersOverloadActionConfig):
 * the timers it may shorten. */
enum overload_timer {
    OVERLOAD_TIMER_HTTP_CONN_IDLE = 0,     /* HTTP_DOWNSTREAM_CONNECTION_IDLE: the HCM's idle_timeout */
    OVERLOAD_TIMER_HTTP_STREAM_IDLE,       /* HTTP_DOWNSTREAM_STREAM_IDLE: stream_idle_timeout */
    OVERLOAD_TIMER_TRANSPORT_CONNECT,      /* TRANSPORT_SOCKET_CONNECT: transport_socket_connect_timeout */
    OVERLOAD_NTIMERS
};
/* Any thread: the length a timer of ms has now, Envoy's scaled range timer:
 * from ms with no pressure down to its minimum at saturation (the minimum
 * is min_timeout, or min_scale of ms). ms itself when the timer is not scaled. */
uint64_t overload_scaled_ms(enum overload_timer t, uint64_t ms);
/* Main thread: fn runs (on the main thread) whenever the scale moves; the
 * server makes every worker raise HERALD_EV_TIMERS_RESCALED on its
 * connections, and the HTTP connection manager re-arms its idle timers for
 * their new length, as Envoy's scaled timers follow the pressure. */
void overload_on_rescale(void (*fn)(void));
struct event_base;
/* A resource_monitors entry of the pressure kind (fixed_heap, injected_resource):
 * 0 added, -1 bad (in d), 1 not one of those. */
int overload_monitor_add(const struct herald_cfg *monitor, struct cfg_diag *d);
/* The actions (after the monitors); the refresh timer on base (NULL: validate). */
int overload_actions_init(const struct herald_cfg *overload_manager, struct cfg_diag *d);
void overload_actions_start(struct event_base *base);
void overload_actions_shutdown(void);

/* Downstream sockets counted against the global limit (any thread). */
uint64_t overload_global_active(void);
/* The global limit in force now: the monitor's, else the runtime key's; UINT64_MAX: none. */
uint64_t overload_global_limit(void);

#endif
