/* notify.h - systemd readiness (Type=notify) for the daemon. */
#ifndef CUSTODYFS_NOTIFY_H
#define CUSTODYFS_NOTIFY_H

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

/* Sends STOPPING=1 (when notify_start() started) and tells the probe
 * thread to stop; call once the FUSE loop has ended. */
void notify_stopping(void);

/* Waits for the probe thread (bounded by the S3 client's timeouts and
 * retries); call after notify_stopping(), before the S3 client and the
 * config are freed. */
void notify_join(void);

#endif
