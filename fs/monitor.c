/* monitor.c - see monitor.h.
 *
 * One thread wakes every [fs] metrics_interval seconds, writes the metrics
 * file (when [fs] metrics_file is set) and sends the STATUS= line (through
 * notify.c, which knows whether READY=1 was sent). The file is written
 * whole to a hidden temporary name in the same directory ("." prefix, no
 * ".prom": the textfile collector ignores it) and renamed over the target,
 * so a scrape never reads half a file. It holds counts and timings only:
 * no key, no bucket, no credential; its one label is the mountpoint.
 *
 * Under a unit with WatchdogSec= ($WATCHDOG_USEC) the same thread also
 * wakes every half interval and sends WATCHDOG=1, but only while the
 * daemon is healthy: the FUSE loop takes requests (one of its threads
 * waits for the next, or one came back with one within the interval:
 * fuseinit.c). Else it sends nothing, and once a whole interval passed
 * without a ping systemd kills the daemon (WatchdogSignal=, SIGABRT) and
 * Restart= starts it again. An outage of the store or the database is not
 * a hang of the daemon: a restart would not end it and would cut every
 * open file, so it never stops the pings (the operations fail with EIO
 * and the daemon recovers when the server is back). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "counters.h"
#include "db.h"
#include "fs.h"
#include "fuseinit.h"
#include "log.h"
#include "monitor.h"
#include "notify.h"

static pthread_mutex_t mon_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t mon_cond = PTHREAD_COND_INITIALIZER;
static int mon_stop_req; /* protected by mon_lock */
static pthread_t mon_thread;
static int mon_started;	     /* only the main thread touches it */
static int mon_last_error;   /* only the writer touches it (then main) */
static uint64_t mon_wd_usec; /* set before the thread starts; 0: no watchdog */
static int mon_wd_sick;	     /* only the writer touches it */

/* Creates a temporary file of our own in dfd, named after base (hidden:
 * "." prefix, no ".prom", so the textfile collector ignores it) with a
 * random part: O_EXCL, so nothing planted there (a FIFO, a hard link, a
 * file of someone else's) is ever opened; O_NONBLOCK never waits on one.
 * The descriptor, its name in name, or -errno. */
static int monitor_open_temp(int dfd, const char *base, char *name, size_t len)
{
	unsigned long long r;
	int i, fd;

	for (i = 0; i < 16; i++) {
		if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
			return -EIO;
		if ((size_t)snprintf(name, len, ".%s.%ld.%016llx.tmp", base,
				     (long)getpid(), r) >= len)
			return -ENAMETOOLONG;
		fd = openat(dfd, name,
			    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
				O_NONBLOCK | O_CLOEXEC,
			    0644);
		if (fd >= 0)
			return fd;
		if (errno != EEXIST)
			return -errno;
	}
	return -EEXIST;
}

int monitor_write_file(const char *path, const char *mountpoint)
{
	char mp[1024], labels[1100], name[NAME_MAX + 1];
	char *dcopy = NULL, *bcopy = NULL;
	const char *base;
	FILE *f = NULL;
	int dfd = -1, fd = -1, rc;

	if (ctr_prom_escape(mountpoint ? mountpoint : "", mp, sizeof(mp)))
		return -ENAMETOOLONG;
	snprintf(labels, sizeof(labels), "mountpoint=\"%s\"", mp);
	dcopy = strdup(path);
	bcopy = strdup(path);
	if (!dcopy || !bcopy) {
		rc = -ENOMEM;
		goto out;
	}
	base = basename(bcopy);
	/* The temporary file and its rename are in this one directory, opened
	 * once: a path component swapped meanwhile cannot split them. */
	dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		rc = -errno;
		goto out;
	}
	fd = monitor_open_temp(dfd, base, name, sizeof(name));
	if (fd < 0) {
		rc = fd;
		fd = -1;
		goto out;
	}
	/* 0644 whatever the umask: node_exporter runs as another user. */
	if (fchmod(fd, 0644) != 0) {
		rc = -errno;
		goto out_unlink;
	}
	f = fdopen(fd, "w");
	if (!f) {
		rc = -errno;
		goto out_unlink;
	}
	fd = -1; /* f owns it */
	rc = ctr_write_prom(f, labels);
	if (fclose(f) != 0 && !rc)
		rc = -errno;
	f = NULL;
	if (rc)
		goto out_unlink;
	if (renameat(dfd, name, dfd, base) != 0) {
		rc = -errno;
		goto out_unlink;
	}
	goto out;
out_unlink:
	unlinkat(dfd, name, 0);
out:
	if (f)
		fclose(f);
	if (fd >= 0)
		close(fd);
	if (dfd >= 0)
		close(dfd);
	free(dcopy);
	free(bcopy);
	return rc;
}

/* Writes the file; logs a failure once until it works again. */
static void monitor_write(void)
{
	int rc;

	if (!cfs->cfg.metrics_file)
		return;
	rc = monitor_write_file(cfs->cfg.metrics_file, cfs->mountpoint);
	if (rc && rc != mon_last_error)
		log_warn("metrics file %s: %s (trying again every %d s)",
			 cfs->cfg.metrics_file, strerror(-rc),
			 cfs->cfg.metrics_interval_s);
	else if (!rc && mon_last_error)
		log_info("metrics file %s: written again",
			 cfs->cfg.metrics_file);
	mon_last_error = rc;
}

/* systemctl status shows the key counters: a STATUS= line when they
 * changed since the last one sent (READY=1's "mounted" line stands for
 * the zeros). */
static void monitor_status(char *last, size_t last_len)
{
	char msg[400];

	snprintf(
	    msg, sizeof(msg),
	    "mounted %s: received %" PRIu64 " (%" PRIu64
	    " bytes), promoted %" PRIu64 " (duplicates %" PRIu64
	    "), conflicts %" PRIu64 ", errors %" PRIu64,
	    cfs->mountpoint, ctr_get(CTR_RECEIVED), ctr_get(CTR_BYTES_RECEIVED),
	    ctr_get(CTR_COPIED) + ctr_get(CTR_RESTORED) + ctr_get(CTR_ADOPTED),
	    ctr_get(CTR_DUP_PATH) + ctr_get(CTR_DUP_CONTENT),
	    ctr_get(CTR_CONFLICTS),
	    ctr_get(CTR_ERR_RECEPTION) + ctr_get(CTR_ERR_PROMOTION));
	if (!last[0]) { /* the first: the zeros, not sent */
		snprintf(last, last_len, "%s", msg);
		return;
	}
	if (strcmp(msg, last) && notify_status(msg))
		snprintf(last, last_len, "%s", msg);
}

static int64_t monitor_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Is the daemon healthy? 1, or 0 with the reason in why. */
static int monitor_healthy(char *why, size_t why_len)
{
	long long within = (long long)mon_wd_usec * 1000LL, idle = 0;

	if (!fuseinit_loop_alive(within, &idle)) {
		snprintf(why, why_len,
			 "the FUSE loop took no request for %lld ms (every "
			 "thread busy)",
			 idle / 1000000LL);
		return 0;
	}
	return 1;
}

/* One watchdog beat: WATCHDOG=1 when healthy; a change is logged once. */
static void monitor_watchdog(void)
{
	char why[256];

	if (!monitor_healthy(why, sizeof(why))) {
		if (!mon_wd_sick)
			log_error("watchdog: not telling systemd the daemon is "
				  "alive: %s (systemd restarts it after %llu "
				  "ms without)",
				  why,
				  (unsigned long long)(mon_wd_usec / 1000));
		mon_wd_sick = 1;
		return;
	}
	if (notify_watchdog() && mon_wd_sick)
		log_info("watchdog: healthy again, telling systemd");
	mon_wd_sick = 0;
}

static void *monitor_main(void *arg)
{
	int64_t now, next_write = 0, next_beat = 0, until_ns;
	int64_t write_ns = (int64_t)cfs->cfg.metrics_interval_s * 1000000000LL;
	int64_t beat_ns = (int64_t)mon_wd_usec * 500LL; /* half, in ns */
	struct timespec until;
	char last[400] = "";
	int stop = 0;

	(void)arg;
	while (!stop) {
		now = monitor_now_ns();
		if (now >= next_write) {
			monitor_write();
			monitor_status(last, sizeof(last));
			next_write = now + write_ns;
		}
		if (mon_wd_usec && now >= next_beat) {
			monitor_watchdog();
			next_beat = now + beat_ns;
		}
		until_ns = mon_wd_usec && next_beat < next_write ? next_beat
								 : next_write;
		until.tv_sec = (time_t)(until_ns / 1000000000LL);
		until.tv_nsec = (long)(until_ns % 1000000000LL);
		pthread_mutex_lock(&mon_lock);
		while (!mon_stop_req && pthread_cond_timedwait(
					    &mon_cond, &mon_lock, &until) == 0)
			;
		stop = mon_stop_req;
		pthread_mutex_unlock(&mon_lock);
	}
	return NULL;
}

int monitor_start(void)
{
	const char *sock = getenv("NOTIFY_SOCKET");
	pthread_condattr_t ca;
	int rc;

	if (!cfs->cfg.metrics_file && (!sock || !*sock))
		return 0;
	mon_wd_usec = notify_watchdog_usec();
	if (mon_wd_usec && mon_wd_usec < 2000) /* a beat of at least 1 ms */
		mon_wd_usec = 2000;
	if (mon_wd_usec)
		log_info("watchdog: telling systemd every %llu ms while the "
			 "FUSE loop and the database answer",
			 (unsigned long long)(mon_wd_usec / 2000));
	/* The waits are on the monotonic clock: a clock step neither
	 * delays a watchdog beat nor bunches them. */
	rc = pthread_condattr_init(&ca);
	if (rc)
		return -rc;
	rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (!rc) {
		pthread_cond_destroy(&mon_cond);
		rc = pthread_cond_init(&mon_cond, &ca);
	}
	pthread_condattr_destroy(&ca);
	if (rc)
		return -rc;
	rc = pthread_create(&mon_thread, NULL, monitor_main, NULL);
	if (rc)
		return -rc;
	mon_started = 1;
	return 0;
}

void monitor_stop(void)
{
	if (!mon_started)
		return;
	pthread_mutex_lock(&mon_lock);
	mon_stop_req = 1;
	pthread_cond_broadcast(&mon_cond);
	pthread_mutex_unlock(&mon_lock);
	pthread_join(mon_thread, NULL);
	mon_started = 0;
	monitor_write(); /* the final counts */
}
