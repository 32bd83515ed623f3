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
 * temporary file in path's directory (mode 0644, opened with O_NOFOLLOW)
 * renamed over path. 0, or -errno: -ENOMEM; -ENAMETOOLONG (a mountpoint
 * too long for the label); -EIO (a write failed); open(2), fchmod(2) and
 * rename(2)'s own (-EACCES, -ENOENT: no such directory, -EROFS, -ENOSPC,
 * -ELOOP ...). The temporary file is gone on every failure. */
int monitor_write_file(const char *path, const char *mountpoint);

#endif
