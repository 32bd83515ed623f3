/* monitor.h - the daemon's periodic metrics: the counters and histograms
 * (counters.h) written as a Prometheus text file for node_exporter's
 * textfile collector ([fs] metrics_file, every [fs] metrics_interval
 * seconds), and systemd's STATUS= line with the key counters. */
#ifndef CUSTODYFS_MONITOR_H
#define CUSTODYFS_MONITOR_H

/* Starts the writer thread (after fuse_daemonize: it starts a thread) when
 * a metrics file is configured or systemd started the daemon
 * ($NOTIFY_SOCKET); else does nothing. Uses cfs->cfg and cfs->mountpoint,
 * which must outlive monitor_stop(). 0, or -errno when the thread cannot
 * start. */
int monitor_start(void);

/* Stops and joins the writer thread, then writes the metrics file once
 * more (the final counts of a clean unmount). Call once the FUSE loop and
 * the custody workers are done, before the config is freed. Safe when
 * monitor_start() did nothing. */
void monitor_stop(void);

/* Writes the metrics file now: the counters with mountpoint's label, to a
 * temporary file this call creates in path's directory (a random name,
 * O_EXCL|O_NOFOLLOW|O_NONBLOCK: nothing planted under a name there is
 * opened or waited on; mode 0644) renamed over path within that same
 * directory, opened once. 0, or -errno: -ENOMEM; -ENAMETOOLONG (a
 * mountpoint too long for the label, or a name too long for a temporary
 * one); -EIO (a write failed, or no random bytes); -EEXIST (16 random names
 * taken); open(2), fchmod(2) and renameat(2)'s own (-EACCES, -ENOENT: no
 * such directory, -ENOTDIR, -EROFS, -ENOSPC ...). The temporary file is
 * gone on every failure. */
int monitor_write_file(const char *path, const char *mountpoint);

#endif
