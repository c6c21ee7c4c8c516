/* A client of systemd's notification protocol ($NOTIFY_SOCKET, one datagram
 * of "KEY=value\n" lines), without libsystemd. */
#ifndef HERALD_SD_NOTIFY_H
#define HERALD_SD_NOTIFY_H

/* Sends the formatted lines to $NOTIFY_SOCKET ("/path" or "@abstract").
 * 0 (also when $NOTIFY_SOCKET is unset or notifications are off), -1 on error. */
int sd_notifyf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "READY=1" with MAINPID=getpid(), so that a reloaded process becomes the main one. */
void sd_notify_ready(const char *status);
/* "RELOADING=1" with MONOTONIC_USEC (systemd 253+ Type=notify-reload wants it). */
void sd_notify_reloading(void);
void sd_notify_stopping(void);
/* After a reload handover: the old process must not speak for the service any more. */
void sd_notify_disable(void);

#endif
