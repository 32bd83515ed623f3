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

/* Sends STOPPING=1 (when notify_start() started) and joins the probe
 * thread; call once the FUSE loop has ended, before the S3 client is
 * freed. */
void notify_stopping(void);

#endif
