/* Worker threads and the main -> worker message queue. */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common.h"
#include "log.h"
#include "stats.h"
#include "timer.h"
#include "worker.h"

struct worker_msg {
    struct worker_msg *next;
    worker_fn fn;
    void *arg;
};

static __thread struct worker *self;
static void (*exit_hooks[8])(void);
static unsigned nexit_hooks;

void worker_on_exit(void (*fn)(void))
{
    if (nexit_hooks < ARRAY_SIZE(exit_hooks))
        exit_hooks[nexit_hooks++] = fn;
}
static struct event_base *main_base;

struct worker *worker_self(void) { return self; }

struct event_base *current_base(void) { return self ? self->base : main_base; }

void main_thread_set_base(struct event_base *base) { main_base = base; }

static void drain_queue(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    uint64_t rung;
    if (fd >= 0 && read(fd, &rung, sizeof(rung)) < 0) {
        /* EAGAIN: a spurious wake-up; the queue says what there is */
    }
    pthread_mutex_lock(&w->lock);
    struct worker_msg *m = w->head;
    w->head = w->tail = NULL;
    pthread_mutex_unlock(&w->lock);
    while (m) {
        struct worker_msg *next = m->next;
        m->fn(w, m->arg);
        free(m);
        m = next;
    }
}

void worker_post(struct worker *w, worker_fn fn, void *arg)
{
    struct worker_msg *m = xmalloc(sizeof(*m));
    m->next = NULL;
    m->fn = fn;
    m->arg = arg;
    pthread_mutex_lock(&w->lock);
    bool ring = !w->head;   /* else the bell rang already and the worker will take this too */
    if (w->tail)
        w->tail->next = m;
    else
        w->head = m;
    w->tail = m;
    pthread_mutex_unlock(&w->lock);
    uint64_t one = 1;
    if (ring && write(w->wake_fd, &one, sizeof(one)) < 0)
        log_error("worker", "cannot wake worker %u: %s", w->index, strerror(errno));
}

static void *run(void *arg)
{
    struct worker *w = arg;
    char name[16];
    self = w;
    snprintf(name, sizeof(name), "worker_%u", w->index);
    log_set_thread_name(name);
    log_debug("worker", "started");
    loop_run(w->base);
    drain_queue(-1, 0, w); /* run what was posted while stopping (frees) */
    timer_thread_exit();
    log_debug("worker", "stopped");
    for (unsigned i = 0; i < nexit_hooks; i++)
        exit_hooks[i]();
    stats_thread_exit();
    self = NULL;
    return NULL;
}

int worker_start(struct worker *w, unsigned index)
{
    w->index = index;
    pthread_mutex_init(&w->lock, NULL);
    /* Only this worker's thread touches its event base (others post to the
     * queue and ring an eventfd), so the base needs no lock: libevent would
     * otherwise take a mutex on every event_add, event_del and event_active. */
    struct event_config *cfg = event_config_new();
    if (!cfg)
        return -1;
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
    w->base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!w->base || w->wake_fd < 0)
        return -1;
    w->wakeup = event_new(w->base, w->wake_fd, EV_READ | EV_PERSIST, drain_queue, w);
    event_add(w->wakeup, NULL);
    if (pthread_create(&w->thread, NULL, run, w) != 0)
        return -1;
    return 0;
}

static void stop_loop(struct worker *w, void *arg)
{
    /* A short grace lets deferred frees (zero-delay timers) run first. */
    struct timeval grace = {0, 50000};
    w->stopping = true;
    event_base_loopexit(w->base, &grace);
}

void worker_stop_and_join(struct worker *w)
{
    if (!w->base)
        return;
    worker_post(w, stop_loop, NULL);
    pthread_join(w->thread, NULL);
    event_free(w->wakeup);
    close(w->wake_fd);
    event_base_free(w->base);
    w->base = NULL;
    pthread_mutex_destroy(&w->lock);
}
