/* notify.h - systemd readiness (Type=notify) for the daemon. */
#ifndef CUSTODYFS_NOTIFY_H
#define CUSTODYFS_NOTIFY_H

#include <stdint.h>

/* Called by main() once the database is set up, the mount exists and the
 * workers run (after fuse_daemonize: it starts a thread). When started by
 * systemd ($NOTIFY_SOCKET), a thread probes both buckets, with backoff up to
 * 30 s, until they answer, then sends READY=1 and a STATUS= line. 0, or
 * -errno when the thread cannot start. Uses cfs->s3 and cfs->cfg, which
 * must outlive notify_stopping(). */
int notify_start(void);

/* Sends STATUS=status (one line) when READY=1 was sent and STOPPING=1 not
 * yet, and returns 1; else sends nothing (before READY=1 the STATUS= line
 * says what the start waits for) and returns 0. Thread-safe. */
int notify_status(const char *status);

/* systemd's watchdog interval for this process, in microseconds: the
 * $WATCHDOG_USEC of a unit with WatchdogSec= (with $NOTIFY_SOCKET, and
 * $WATCHDOG_PID ours or unset), or 0 (none; a malformed one, or a build
 * without libsystemd, is logged). Reads the environment: call before any
 * thread could change it. */
uint64_t notify_watchdog_usec(void);

/* Sends WATCHDOG=1 (it tells systemd the daemon is healthy; the caller
 * decides that) when notify_start() started and STOPPING=1 is not sent
 * yet, and returns 1; else sends nothing and returns 0. Thread-safe. */
int notify_watchdog(void);

/* Sends STOPPING=1 (when notify_start() started) and tells the probe
 * thread to stop; call once the FUSE loop has ended. */
void notify_stopping(void);

/* Waits for the probe thread (bounded by the S3 client's timeouts and
 * retries); call after notify_stopping(), before the S3 client and the
 * config are freed. */
void notify_join(void);

#endif
