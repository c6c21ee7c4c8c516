/* Access logs: the core side of herald/access_log.h (format parser, shared
 * output files). */
#ifndef HERALD_CORE_ACCESS_LOG_H
#define HERALD_CORE_ACCESS_LOG_H

#include "herald/access_log.h"

/* Reopens every access log file (logrotate's SIGUSR1). Main thread; workers
 * keep writing meanwhile: the new file takes the old descriptor's number. */
void access_log_reopen_all(void);
/* Whether l's format has an operator whose name starts with prefix: what a
 * writer need not gather per request when no log line asks for it. */
bool access_log_uses(const struct herald_access_log *l, const char *prefix);
/* A thread that wrote access log lines frees its line buffer. */
void access_log_thread_exit(void);

#endif
