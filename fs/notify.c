/* notify.c - readiness and stopping for systemd's Type=notify services.
 *
 * The daemon is ready when the database is open and migrated (cfs_setup),
 * the mount exists (fuse_mount), the workers run, and both buckets answer a
 * listing. The first three are done before notify_start(); the store is
 * probed here, in a thread of its own, so that a store that is down at boot
 * delays READY=1 (and systemd's start timeout, then Restart=, applies)
 * without keeping the FUSE loop from serving. Without $NOTIFY_SOCKET (not
 * started by systemd) nothing is probed and nothing is sent.
 *
 * systemd's watchdog (WatchdogSec=, $WATCHDOG_USEC): monitor.c decides
 * when the daemon is healthy and sends WATCHDOG=1 through
 * notify_watchdog(), from the start (also while READY=1 waits for the
 * store: the daemon is healthy meanwhile) until STOPPING=1.
 *
 * Built with libsystemd (meson option systemd, auto) the messages go
 * through sd_notify(3); without it notify_start() logs that readiness is
 * not reported and a Type=notify unit cannot be used. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs.h"
#include "log.h"
#include "notify.h"

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#define NOTIFY_MAX_DELAY_S 30

static pthread_mutex_t notify_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t notify_cond = PTHREAD_COND_INITIALIZER;
static int notify_stop_req; /* protected by notify_lock */
static int notify_ready;    /* protected by notify_lock: READY=1 sent */
static pthread_t notify_thread;
/* Written by the main thread only: set before monitor_start(), cleared
 * after monitor_stop() (notify_join), so the monitor thread may read it. */
static int notify_started;

static void notify_send(const char *msg)
{
#ifdef HAVE_LIBSYSTEMD
	int rc = sd_notify(0, msg);

	if (rc < 0)
		log_warn("sd_notify: %s", strerror(-rc));
#else
	(void)msg;
#endif
}

/* 0 when bucket answers a one-key listing, else -errno. */
static int notify_probe(const char *bucket)
{
	struct s3_list_result r = {0};
	int rc = s3_list_page(cfs->s3, bucket, NULL, NULL, NULL, 1, &r);

	s3xml_list_free(&r);
	return rc;
}

/* Waits up to s seconds; 1 when asked to stop meanwhile. */
static int notify_sleep(unsigned s)
{
	struct timespec until;
	int stop;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += s;
	pthread_mutex_lock(&notify_lock);
	while (!notify_stop_req &&
	       pthread_cond_timedwait(&notify_cond, &notify_lock, &until) == 0)
		;
	stop = notify_stop_req;
	pthread_mutex_unlock(&notify_lock);
	return stop;
}

static void *notify_main(void *arg)
{
	unsigned delay = 1;
	char msg[512];
	const char *bucket;
	int rc;

	(void)arg;
	for (;;) {
		bucket = cfs->cfg.reception_bucket;
		rc = notify_probe(bucket);
		if (!rc) {
			bucket = cfs->cfg.storage_bucket;
			rc = notify_probe(bucket);
		}
		if (!rc)
			break;
		log_warn("not ready yet: bucket %s: %s (trying again in %u s)",
			 bucket, strerror(-rc), delay);
		/* systemctl status shows why the start is pending. */
		snprintf(msg, sizeof(msg),
			 "STATUS=waiting for the store: bucket %s: %s", bucket,
			 strerror(-rc));
		notify_send(msg);
		if (notify_sleep(delay))
			return NULL;
		delay = delay * 2 > NOTIFY_MAX_DELAY_S ? NOTIFY_MAX_DELAY_S
						       : delay * 2;
	}
	snprintf(msg, sizeof(msg),
		 "READY=1\nSTATUS=mounted %s (reception bucket %s, storage "
		 "bucket %s)",
		 cfs->mountpoint, cfs->cfg.reception_bucket,
		 cfs->cfg.storage_bucket);
	/* Under the lock notify_stopping() sends STOPPING=1 with: never
	 * READY=1 after it. */
	pthread_mutex_lock(&notify_lock);
	if (!notify_stop_req) {
		notify_send(msg);
		notify_ready = 1;
	}
	pthread_mutex_unlock(&notify_lock);
	return NULL;
}

int notify_start(void)
{
	const char *sock = getenv("NOTIFY_SOCKET");
	int rc;

	if (!sock || !*sock)
		return 0;
#ifndef HAVE_LIBSYSTEMD
	log_warn("NOTIFY_SOCKET is set but this custodyfs was built without "
		 "libsystemd: readiness is not reported (use Type=simple)");
	return 0;
#endif
	rc = pthread_create(&notify_thread, NULL, notify_main, NULL);
	if (rc)
		return -rc;
	notify_started = 1;
	return 0;
}

int notify_status(const char *status)
{
	char msg[512];
	int sent = 0;

	snprintf(msg, sizeof(msg), "STATUS=%s", status);
	/* Under the lock READY=1 and STOPPING=1 are sent with: only between
	 * the two. */
	pthread_mutex_lock(&notify_lock);
	if (notify_ready && !notify_stop_req) {
		notify_send(msg);
		sent = 1;
	}
	pthread_mutex_unlock(&notify_lock);
	return sent;
}

uint64_t notify_watchdog_usec(void)
{
	const char *sock = getenv("NOTIFY_SOCKET");
	const char *wd = getenv("WATCHDOG_USEC");

	if (!sock || !*sock || !wd || !*wd)
		return 0;
#ifdef HAVE_LIBSYSTEMD
	uint64_t usec = 0;
	int rc = sd_watchdog_enabled(0, &usec);

	if (rc < 0) {
		log_warn("WATCHDOG_USEC=%s: %s: systemd's watchdog is not "
			 "served",
			 wd, strerror(-rc));
		return 0;
	}
	/* rc == 0: $WATCHDOG_PID names another process (ours forked). */
	return rc > 0 ? usec : 0;
#else
	log_warn("WATCHDOG_USEC is set but this custodyfs was built without "
		 "libsystemd: systemd's watchdog is not served (remove "
		 "WatchdogSec=)");
	return 0;
#endif
}

int notify_watchdog(void)
{
	int sent = 0;

	/* Under the lock STOPPING=1 is sent with: never a ping after it. */
	pthread_mutex_lock(&notify_lock);
	if (notify_started && !notify_stop_req) {
		notify_send("WATCHDOG=1");
		sent = 1;
	}
	pthread_mutex_unlock(&notify_lock);
	return sent;
}

void notify_stopping(void)
{
	if (!notify_started)
		return;
	pthread_mutex_lock(&notify_lock);
	notify_stop_req = 1;
	pthread_cond_broadcast(&notify_cond);
	notify_send("STOPPING=1");
	pthread_mutex_unlock(&notify_lock);
}

void notify_join(void)
{
	if (!notify_started)
		return;
	/* A probe in flight ends within the S3 client's bounded retries; the
	 * workers are done by now, so nothing waits on it but the exit. */
	pthread_join(notify_thread, NULL);
	notify_started = 0;
}
