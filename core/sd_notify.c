/* sd_notify(3) without libsystemd: one AF_UNIX datagram per message. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "sd_notify.h"

static bool disabled;

static int send_to(const char *path, const char *msg, size_t len)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t plen = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || plen < 2 || plen > sizeof(sun.sun_path)) {
        errno = EINVAL;
        return -1;
    }
    memcpy(sun.sun_path, path, plen);
    if (path[0] == '@')
        sun.sun_path[0] = '\0'; /* abstract namespace: the name is not NUL-terminated */
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (path[0] == '/'));
    if (path[0] == '/' && plen == sizeof(sun.sun_path))
        alen--;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    ssize_t n = sendto(fd, msg, len, MSG_NOSIGNAL, (struct sockaddr *)&sun, alen);
    int e = errno;
    close(fd);
    errno = e;
    return n == (ssize_t)len ? 0 : -1;
}

int sd_notifyf(const char *fmt, ...)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (disabled || !path || !*path)
        return 0;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(msg))
        n = (int)strlen(msg);
    if (send_to(path, msg, (size_t)n) < 0) {
        log_warn("main", "sd_notify to %s: %s", path, strerror(errno));
        return -1;
    }
    log_debug("main", "sd_notify: %.*s", n, msg);
    return 0;
}

void sd_notify_ready(const char *status)
{
    sd_notifyf("READY=1\nMAINPID=%ld\nSTATUS=%s", (long)getpid(), status ? status : "serving");
}

void sd_notify_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned long long usec = (unsigned long long)ts.tv_sec * 1000000ULL;
    usec += (unsigned long long)ts.tv_nsec / 1000;
    sd_notifyf("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading the configuration", usec);
}

void sd_notify_stopping(void)
{
    sd_notifyf("STOPPING=1\nSTATUS=draining connections");
}

void sd_notify_disable(void)
{
    disabled = true;
}
