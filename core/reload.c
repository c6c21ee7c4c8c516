/* Reload without a restart: see reload.h for the model. The old process
 * keeps serving, unchanged, until the new one says it is ready; a new config
 * that does not validate, or a new process that fails or hangs, costs
 * nothing but a log line. */
#include "config.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "log.h"
#include "reload.h"
#include "sd_notify.h"
#include "server.h"
#include "stats.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#define ENV_SOCKETS "HERALD_INHERITED_SOCKETS"
#define ENV_READY_FD "HERALD_RELOAD_FD"
#define VALIDATE_TIMEOUT_S 30
#define READY_TIMEOUT_S 30
#define STATS_SEND_MS 2000   /* the old process gives the new one this long to take its counters */
#define STATS_TAKE_S 5

extern char **environ;

struct sockset {
    char *key;
    int *fds; size_t nfds, cap;
};

static struct sockset *mine; static size_t nmine, capmine;           /* ours, for the next reload */
static struct sockset *inherited; static size_t ninherited, capinherited;
static int ready_fd = -1;        /* to the process we replace (a socketpair: its counters come back) */
static struct event *stats_ev;   /* reading those counters */
static struct evbuffer *stats_in;
static size_t stats_batch;       /* batches (an empty line ends one) taken so far */
static size_t stats_in_batch;    /* counters taken in the current one */
static int counters_fd = -1;     /* old process: to the new one, for what we count while draining */
static char self_exe[PATH_MAX];

enum rstate { R_IDLE, R_VALIDATING, R_STARTING, R_HANDED_OVER };
static enum rstate state;
static struct server *srv;
static pid_t child = -1;
static int child_fd = -1;        /* the validator's stderr, or the new process's readiness socket */
static struct event *child_ev, *child_timer;
static struct evbuffer *child_out;

static struct sockset *find_or_add(struct sockset **arr, size_t *n, size_t *cap, const char *key)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*arr)[i].key, key) == 0)
            return &(*arr)[i];
    struct sockset *s = VEC_PUSH(*arr, *n, *cap);
    memset(s, 0, sizeof(*s));
    s->key = xstrdup(key);
    return s;
}

static bool key_ok(const char *key)
{
    return *key && !strpbrk(key, "=;,");
}

char *reload_key(const char *kind, const char *host, unsigned port)
{
    if (port == 0 && host && host[0] == '/')
        return xasprintf("%s:unix:%s", kind, host);
    bool v6 = host && strchr(host, ':');
    return xasprintf("%s:%s%s%s:%u", kind, v6 ? "[" : "", host ? host : "", v6 ? "]" : "", port);
}

/* "key=fd,fd;key=fd" */
static void parse_inherited(const char *text)
{
    char *copy = xstrdup(text), *save = NULL;
    for (char *item = strtok_r(copy, ";", &save); item; item = strtok_r(NULL, ";", &save)) {
        char *eq = strrchr(item, '=');
        if (!eq || eq == item)
            continue;
        *eq = '\0';
        struct sockset *s = find_or_add(&inherited, &ninherited, &capinherited, item);
        char *save2 = NULL;
        for (char *f = strtok_r(eq + 1, ",", &save2); f; f = strtok_r(NULL, ",", &save2)) {
            char *end;
            long fd = strtol(f, &end, 10);
            int listening = 0;
            socklen_t len = sizeof(listening);
            if (*end || fd < 3 || fd > INT_MAX || fcntl((int)fd, F_SETFD, FD_CLOEXEC) < 0 ||
                getsockopt((int)fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening) {
                log_warn("reload", "inherited socket '%s' for %s is not a listening socket: ignored", f,
                         item);
                continue;
            }
            *VEC_PUSH(s->fds, s->nfds, s->cap) = (int)fd;
        }
    }
    free(copy);
}

void reload_init(void)
{
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
    self_exe[n > 0 ? n : 0] = '\0';
    const char *socks = getenv(ENV_SOCKETS);
    if (socks)
        parse_inherited(socks);
    const char *rfd = getenv(ENV_READY_FD);
    if (rfd) {
        char *end;
        long fd = strtol(rfd, &end, 10);
        if (!*end && fd > 2 && fd <= INT_MAX && fcntl((int)fd, F_SETFD, FD_CLOEXEC) == 0)
            ready_fd = (int)fd;
    }
    /* our own reloads describe their sockets afresh */
    unsetenv(ENV_SOCKETS);
    unsetenv(ENV_READY_FD);
}

int reload_take_socket(const char *key)
{
    for (size_t i = 0; i < ninherited; i++) {
        struct sockset *s = &inherited[i];
        if (strcmp(s->key, key) != 0)
            continue;
        for (size_t j = 0; j < s->nfds; j++)
            if (s->fds[j] >= 0) {
                int fd = s->fds[j];
                s->fds[j] = -1;
                return fd;
            }
    }
    return -1;
}

void reload_add_socket(const char *key, int fd)
{
    if (!key_ok(key) || fd < 0)
        return;
    struct sockset *s = find_or_add(&mine, &nmine, &capmine, key);
    *VEC_PUSH(s->fds, s->nfds, s->cap) = fd;
}

void reload_forget_sockets(const char *key)
{
    for (size_t i = 0; i < nmine; i++)
        if (strcmp(mine[i].key, key) == 0) {
            free(mine[i].key);
            free(mine[i].fds);
            mine[i] = mine[--nmine];
            return;
        }
}

/* ------------------------------------------------- counters across a reload */

/* Counters go on where the old process left them, as across Envoy's hot
 * restart: once told "ready", the old process sends every non-zero counter
 * ("name\tcount\n"), and when it exits after its drain what it counted
 * since, then closes; the new one adds them to its own. Gauges and
 * histograms describe the process they are in and start afresh. */
static void stats_stop(void)
{
    if (stats_ev)
        event_free(stats_ev);
    stats_ev = NULL;
    if (stats_in)
        evbuffer_free(stats_in);
    stats_in = NULL;
    if (ready_fd >= 0)
        close(ready_fd);
    ready_fd = -1;
}

/* The complete lines read so far (a partial one waits for its end). */
static void import_counters(void)
{
    char *line;
    size_t len;
    while ((line = evbuffer_readln(stats_in, &len, EVBUFFER_EOL_LF)) != NULL) {
        if (len == 0) {
            log_info("reload", "took %zu counter%s over from the old process%s", stats_in_batch,
                     stats_in_batch == 1 ? "" : "s", stats_batch ? " (what it counted while draining)" : "");
            stats_batch++;
            stats_in_batch = 0;
            free(line);
            continue;
        }
        char *tab = strrchr(line, '\t'), *end;
        if (tab && tab != line) {
            *tab = '\0';
            unsigned long long v = strtoull(tab + 1, &end, 10);
            if (*end == '\0' && end != tab + 1) {
                stats_import_counter(line, v);
                stats_in_batch++;
            }
        }
        free(line);
    }
}

static void on_counters(evutil_socket_t fd, short what, void *arg)
{
    (void)arg;
    if (what & EV_TIMEOUT) {
        log_warn("reload", "the old process sent no counters within %d s: they start at zero", STATS_TAKE_S);
        stats_stop();
        return;
    }
    bool waiting = stats_batch == 0;
    int n;
    while ((n = evbuffer_read(stats_in, fd, 65536)) > 0)
        ;
    bool more = n < 0 && (errno == EAGAIN || errno == EINTR);
    import_counters();
    if (waiting && stats_batch > 0 && more) {
        /* the rest comes when the old process exits, however long it drains */
        event_del(stats_ev);
        event_add(stats_ev, NULL);
    }
    if (!more)
        stats_stop();   /* EOF (the old process is gone) or an error: what came is what we have */
}

static void take_counters(void)
{
    fcntl(ready_fd, F_SETFL, fcntl(ready_fd, F_GETFL) | O_NONBLOCK);
    stats_in = evbuffer_new();
    stats_ev = event_new(srv->base, ready_fd, EV_READ | EV_PERSIST, on_counters, NULL);
    struct timeval tv = {STATS_TAKE_S, 0};
    event_add(stats_ev, &tv);
}

/* The old process's side: bounded, it must not hang on a new process that
 * does not read. */
static void send_counters(int fd)
{
    struct evbuffer *b = evbuffer_new();
    stats_export_counters(b);
    evbuffer_add(b, "\n", 1);   /* the end of this batch */
    uint64_t deadline = mono_ms() + STATS_SEND_MS;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    while (evbuffer_get_length(b) > 0) {
        int n = evbuffer_write(b, fd);
        if (n >= 0 || errno == EINTR)
            continue;
        uint64_t now = mono_ms();
        if (errno != EAGAIN || now >= deadline) {
            log_warn("reload", "could not hand the counters over: %s",
                     errno == EAGAIN ? "the new process did not read them" : strerror(errno));
            break;
        }
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        poll(&p, 1, (int)(deadline - now));
    }
    evbuffer_free(b);
}

void reload_started(struct server *s)
{
    srv = s;
    unsigned closed = 0, taken = 0;
    for (size_t i = 0; i < ninherited; i++)
        for (size_t j = 0; j < inherited[i].nfds; j++) {
            /* a removed listener, or fewer workers: the old process still
             * accepts on its copy until it drains */
            if (inherited[i].fds[j] >= 0) {
                close(inherited[i].fds[j]);
                inherited[i].fds[j] = -1;
                closed++;
            } else {
                taken++;
            }
        }
    sd_notify_ready("serving");
    if (ready_fd >= 0) {
        log_info("reload", "adopted %u listening socket%s from the old process (%u not needed); "
                 "telling it to drain", taken, taken == 1 ? "" : "s", closed);
        static const char msg[] = "ready\n";
        if (write(ready_fd, msg, sizeof(msg) - 1) != (ssize_t)(sizeof(msg) - 1)) {
            log_warn("reload", "cannot tell the old process we are ready: %s", strerror(errno));
            close(ready_fd);
            ready_fd = -1;
            return;
        }
        take_counters();
    }
}

/* ------------------------------------------------------------ spawning */

static char **make_env(const char *sockets, int rfd, bool drop_notify)
{
    size_t n = 0;
    while (environ && environ[n])
        n++;
    char **env = xcalloc(n + 3, sizeof(*env));
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *e = environ[i];
        if (strncmp(e, ENV_SOCKETS "=", strlen(ENV_SOCKETS) + 1) == 0 ||
            strncmp(e, ENV_READY_FD "=", strlen(ENV_READY_FD) + 1) == 0 ||
            (drop_notify && strncmp(e, "NOTIFY_SOCKET=", 14) == 0))
            continue;
        env[k++] = xstrdup(e);
    }
    if (sockets)
        env[k++] = xasprintf(ENV_SOCKETS "=%s", sockets);
    if (rfd >= 0)
        env[k++] = xasprintf(ENV_READY_FD "=%d", rfd);
    return env;
}

static void free_strv(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/* fork + exec of our own binary. Accepted connections are not all
 * close-on-exec, so the child marks every descriptor above 2 close-on-exec
 * and then clears it on the ones it must pass (keep). */
static pid_t spawn(char *const argv[], char *const envp[], int out_fd, int err_fd, const int *keep,
                   size_t nkeep)
{
    long maxfd = sysconf(_SC_OPEN_MAX);
    if (maxfd < 0 || maxfd > (1L << 20))
        maxfd = 1L << 20;
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    /* the child of a threaded process: async-signal-safe calls only */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (out_fd >= 0 && out_fd != 1)
        dup2(out_fd, 1);
    if (err_fd >= 0 && err_fd != 2)
        dup2(err_fd, 2);
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) != 0)
        for (long fd = 3; fd < maxfd; fd++)
            fcntl((int)fd, F_SETFD, FD_CLOEXEC);
    for (size_t i = 0; i < nkeep; i++)
        fcntl(keep[i], F_SETFD, 0);
    execve(self_exe, argv, envp);
    _exit(127);
}

static void describe_status(int st, char *out, size_t size)
{
    if (WIFEXITED(st))
        snprintf(out, size, "exit status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(out, size, "killed by signal %d", WTERMSIG(st));
    else
        snprintf(out, size, "status 0x%x", (unsigned)st);
}

/* Reaps the child, killing it when it has not exited within a moment. */
static void reap_child(char *how, size_t size)
{
    int st = 0;
    pid_t r = 0;
    for (int i = 0; i < 100 && (r = waitpid(child, &st, WNOHANG)) == 0; i++)
        usleep(10000);
    if (r == 0) {
        kill(child, SIGKILL);
        r = waitpid(child, &st, 0);
    }
    if (r == child)
        describe_status(st, how, size);
    else
        snprintf(how, size, "waitpid: %s", strerror(errno));
    child = -1;
}

static void child_io_done(void)
{
    if (child_ev)
        event_free(child_ev);
    if (child_timer)
        event_free(child_timer);
    child_ev = child_timer = NULL;
    if (child_fd >= 0)
        close(child_fd);
    child_fd = -1;
    if (child_out)
        evbuffer_free(child_out);
    child_out = NULL;
}

static void reload_failed(const char *why)
{
    log_error("reload", "reload failed: %s; still serving the old configuration", why);
    sd_notifyf("READY=1\nSTATUS=reload failed: %s; serving the old configuration", why);
    state = R_IDLE;
}

static void watch_child(int fd, event_callback_fn on_read, event_callback_fn on_timeout, int timeout_s)
{
    child_fd = fd;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    child_ev = event_new(srv->base, fd, EV_READ | EV_PERSIST, on_read, NULL);
    child_timer = evtimer_new(srv->base, on_timeout, NULL);
    event_add(child_ev, NULL);
    struct timeval tv = {timeout_s, 0};
    evtimer_add(child_timer, &tv);
}

/* -------------------------------------------------- the new process */

static void new_process_timeout(evutil_socket_t fd, short what, void *arg)
{
    char how[64], why[128];
    kill(child, SIGKILL);
    pid_t pid = child;
    reap_child(how, sizeof(how));
    child_io_done();
    snprintf(why, sizeof(why), "the new process %d was not ready within %d s (killed)", (int)pid,
             READY_TIMEOUT_S);
    reload_failed(why);
}

static void new_process_read(evutil_socket_t fd, short what, void *arg)
{
    char buf[64];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0) {
        buf[n] = '\0';
        if (!strstr(buf, "ready"))
            return;
        pid_t pid = child;
        child = -1; /* not ours to reap: it outlives us */
        send_counters(fd);
        counters_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);   /* the rest when we exit (reload_free) */
        child_io_done();
        state = R_HANDED_OVER;
        log_info("reload", "new process %d is ready: process %d stops accepting and drains", (int)pid,
                 (int)getpid());
        /* the new process is the service's main PID now: we must not say STOPPING */
        sd_notify_disable();
        server_handover(srv);
        return;
    }
    char how[64], why[160];
    pid_t pid = child;
    reap_child(how, sizeof(how));
    child_io_done();
    snprintf(why, sizeof(why), "the new process %d stopped before it was ready (%s)", (int)pid, how);
    reload_failed(why);
}

static char *sockets_text(int **keep, size_t *nkeep)
{
    struct evbuffer *b = evbuffer_new();
    size_t cap = 0;
    *keep = NULL;
    *nkeep = 0;
    for (size_t i = 0; i < nmine; i++) {
        evbuffer_add_printf(b, "%s%s=", i ? ";" : "", mine[i].key);
        for (size_t j = 0; j < mine[i].nfds; j++) {
            evbuffer_add_printf(b, "%s%d", j ? "," : "", mine[i].fds[j]);
            *VEC_PUSH(*keep, *nkeep, cap) = mine[i].fds[j];
        }
    }
    size_t len = evbuffer_get_length(b);
    char *text = xmalloc(len + 1);
    evbuffer_remove(b, text, len);
    text[len] = '\0';
    evbuffer_free(b);
    return text;
}

static void start_new_process(void)
{
    int p[2];   /* "ready" one way, our counters the other */
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p) < 0) {
        reload_failed(strerror(errno));
        return;
    }
    int *keep;
    size_t nkeep;
    char *socks = sockets_text(&keep, &nkeep);
    size_t nsockets = nkeep;
    keep = xrealloc(keep, (nkeep + 1) * sizeof(*keep));
    keep[nkeep++] = p[1];
    char **env = make_env(socks, p[1], false);
    pid_t pid = spawn(srv->opt.argv, env, -1, -1, keep, nkeep);
    int e = errno;
    free_strv(env);
    free(keep);
    free(socks);
    close(p[1]);
    if (pid < 0) {
        close(p[0]);
        reload_failed(strerror(e));
        return;
    }
    child = pid;
    state = R_STARTING;
    log_info("reload", "configuration valid: started process %d with %zu listening socket%s", (int)pid,
             nsockets, nsockets == 1 ? "" : "s");
    watch_child(p[0], new_process_read, new_process_timeout, READY_TIMEOUT_S);
}

/* -------------------------------------------------------- validation */

static void log_lines(bool failed)
{
    char *line;
    size_t len;
    while ((line = evbuffer_readln(child_out, &len, EVBUFFER_EOL_CRLF)) != NULL) {
        if (len == 0) {
            free(line);
            continue;
        }
        if (failed && strncmp(line, "warning", 7) != 0)
            log_error("reload", "%s", line);
        else if (strncmp(line, "warning", 7) == 0)
            log_warn("reload", "%s", line);
        else
            log_info("reload", "%s", line);
        free(line);
    }
}

static void validation_done(bool timed_out)
{
    char how[64];
    if (timed_out)
        kill(child, SIGKILL);
    reap_child(how, sizeof(how));
    evbuffer_add(child_out, "\n", 1);
    bool ok = !timed_out && strcmp(how, "exit status 0") == 0;
    log_lines(!ok);
    child_io_done();
    if (timed_out) {
        reload_failed("validating the new configuration took longer than 30 s");
    } else if (!ok) {
        char why[128];
        snprintf(why, sizeof(why), "the new configuration is invalid (herald --mode validate: %s)", how);
        reload_failed(why);
    } else {
        start_new_process();
    }
}

static void validator_timeout(evutil_socket_t fd, short what, void *arg)
{
    validation_done(true);
}

static void validator_read(evutil_socket_t fd, short what, void *arg)
{
    int n = evbuffer_read(child_out, fd, 4096);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0 || evbuffer_get_length(child_out) > (1 << 20))
        validation_done(false);
}

void reload_begin(struct server *s, const char *why)
{
    srv = s;
    if (state == R_HANDED_OVER) {
        log_warn("reload", "%s ignored: this process already handed over to a new one and is draining", why);
        return;
    }
    if (state != R_IDLE) {
        log_warn("reload", "%s ignored: a reload is already in progress", why);
        return;
    }
    if (s->state != SERVER_LIVE) {
        log_warn("reload", "%s ignored: the server is %s", why, server_state_name(s->state));
        return;
    }
    if (!*self_exe) {
        log_error("reload", "%s ignored: cannot find our own binary (/proc/self/exe)", why);
        return;
    }
    log_info("reload", "%s: validating the configuration again", why);
    sd_notify_reloading();

    const struct options *o = &s->opt;
    char *argv[10];
    int k = 0;
    argv[k++] = self_exe;
    argv[k++] = (char *)"--mode";
    argv[k++] = (char *)"validate";
    if (o->config_path) {
        argv[k++] = (char *)"--config-path";
        argv[k++] = (char *)o->config_path;
    }
    if (o->config_yaml) {
        argv[k++] = (char *)"--config-yaml";
        argv[k++] = (char *)o->config_yaml;
    }
    if (o->plugin_dirs) {
        argv[k++] = (char *)"--plugin-dir";
        argv[k++] = (char *)o->plugin_dirs;
    }
    argv[k] = NULL;

    int p[2];
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (devnull < 0 || pipe2(p, O_CLOEXEC) < 0) {
        if (devnull >= 0)
            close(devnull);
        reload_failed(strerror(errno));
        return;
    }
    char **env = make_env(NULL, -1, true);
    pid_t pid = spawn(argv, env, devnull, p[1], NULL, 0);
    int e = errno;
    free_strv(env);
    close(devnull);
    close(p[1]);
    if (pid < 0) {
        close(p[0]);
        reload_failed(strerror(e));
        return;
    }
    child = pid;
    state = R_VALIDATING;
    child_out = evbuffer_new();
    watch_child(p[0], validator_read, validator_timeout, VALIDATE_TIMEOUT_S);
}

void reload_abort(void)
{
    if (state != R_VALIDATING && state != R_STARTING)
        return;
    char how[64];
    pid_t pid = child;
    kill(child, SIGKILL);
    reap_child(how, sizeof(how));
    child_io_done();
    log_warn("reload", "shutting down: reload abandoned, process %d killed", (int)pid);
    state = R_IDLE;
}

bool reload_handed_over(void)
{
    return state == R_HANDED_OVER;
}

void reload_free(void)
{
    reload_abort();
    child_io_done();
    stats_stop();
    if (counters_fd >= 0) {
        send_counters(counters_fd);   /* what we counted while draining (the workers are gone) */
        close(counters_fd);
        counters_fd = -1;
    }
    for (size_t i = 0; i < nmine; i++) {
        free(mine[i].key);
        free(mine[i].fds);
    }
    free(mine);
    mine = NULL;
    nmine = capmine = 0;
    for (size_t i = 0; i < ninherited; i++) {
        for (size_t j = 0; j < inherited[i].nfds; j++)
            if (inherited[i].fds[j] >= 0)
                close(inherited[i].fds[j]);
        free(inherited[i].key);
        free(inherited[i].fds);
    }
    free(inherited);
    inherited = NULL;
    ninherited = capinherited = 0;
    if (ready_fd >= 0)
        close(ready_fd);
    ready_fd = -1;
}
