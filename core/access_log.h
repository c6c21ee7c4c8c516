/* Access logs: the core side of herald/access_log.h (format parser, shared
 * output files). */
#ifndef HERALD_CORE_ACCESS_LOG_H
#define HERALD_CORE_ACCESS_LOG_H

#include "herald/access_log.h"

/* Reopens every access log file (logrotate's SIGUSR1). Main thread; workers
 * keep writing meanwhile: the new file takes the old descriptor's number. */
void access_log_reopen_all(void);
/* A thread that wrote access log lines frees its line buffer. */
void access_log_thread_exit(void);

#endif
