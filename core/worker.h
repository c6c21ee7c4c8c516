/* Workers: one thread and one event loop each. The main thread talks to a
 * worker only by posting closures to its queue (a locked list plus an
 * eventfd as its doorbell; the worker's event base has no lock of its own);
 * the worker runs them between events. Nothing on the data path is shared
 * and mutable. */
#ifndef HERALD_CORE_WORKER_H
#define HERALD_CORE_WORKER_H

#include <event2/event.h>
#include <pthread.h>
#include <stdbool.h>

struct cluster_worker;   /* upstream/cluster.h: this worker's view of every cluster */
struct evconnlistener;
struct herald_conn;
struct herald_socket;     /* net/listener.c: an accepted socket in listener filters */
struct herald_upstream;

struct worker {
    unsigned index;
    pthread_t thread;
    struct event_base *base;
    struct event *wakeup;         /* reads wake_fd: worker_post rang */
    int wake_fd;                  /* eventfd */
    pthread_mutex_t lock;
    struct worker_msg *head, *tail;
    struct cluster_worker *clusters;
    struct evconnlistener **listeners; /* net/listener.c: this worker's evconnlisteners, by listener */
    struct herald_conn *conns;    /* net/connection.c: live downstream connections */
    struct herald_socket *pending; /* net/listener.c: accepted sockets still in listener filters */
    unsigned pending_sockets;     /* how many: the drain waits for them as for connections */
    struct herald_upstream *upstreams; /* net/upstream_conn.c: live upstream connections */
    uint64_t next_conn_id;
    unsigned active_conns;
    bool stopping;                /* shutting down: listeners closed, connections draining */
    bool draining;                /* connections are told to drain, new ones too (also drain_listeners?graceful) */
};

typedef void (*worker_fn)(struct worker *w, void *arg);

/* The worker (or NULL on the main thread / any other thread) running this code. */
struct worker *worker_self(void);
/* The event loop of the calling thread: its worker's, or the main thread's. */
struct event_base *current_base(void);
void main_thread_set_base(struct event_base *base);

/* Registers fn to run on every worker thread as it exits (thread-local
 * clean-up); call before the workers start. */
void worker_on_exit(void (*fn)(void));
int worker_start(struct worker *w, unsigned index);
/* Thread-safe; fn runs on w's thread. */
void worker_post(struct worker *w, worker_fn fn, void *arg);
/* Asks the loop to exit once nothing is left to do and joins the thread. */
void worker_stop_and_join(struct worker *w);

#endif
