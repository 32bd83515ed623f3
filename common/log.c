/* log.c - see log.h. */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>
#include <time.h>

static int log_use_syslog; /* set once by log_init */
static enum log_level log_max = LOG_LVL_INFO;
static const char *log_ident = "custodyfs";
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER; /* stderr lines */
static char log_status_line[512]; /* protected by log_lock: "" when none */

/* Erase the status line: back to column 0, clear to the end of line. */
#define LOG_ERASE "\r\033[K"

void log_status(const char *text)
{
	pthread_mutex_lock(&log_lock);
	if (text && *text) {
		snprintf(log_status_line, sizeof(log_status_line), "%s", text);
		fprintf(stderr, LOG_ERASE "%s", log_status_line);
	} else if (log_status_line[0]) {
		log_status_line[0] = '\0';
		fputs(LOG_ERASE, stderr);
	}
	fflush(stderr);
	pthread_mutex_unlock(&log_lock);
}

void log_init(const char *ident, int use_syslog, enum log_level max_level)
{
	log_ident = ident ? ident : "custodyfs";
	log_use_syslog = use_syslog;
	log_max = max_level;
	if (use_syslog)
		openlog(log_ident, LOG_PID, LOG_DAEMON);
}

void log_set_level(enum log_level max_level)
{
	log_max = max_level;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	static const char *names[] = {"error", "warning", "info", "debug"};
	static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
	va_list ap;

	if (lvl > log_max)
		return;
	va_start(ap, fmt);
	if (log_use_syslog) {
		vsyslog(prio[lvl], fmt, ap);
	} else {
		char ts[32];
		struct timespec now;
		struct tm tm;

		clock_gettime(CLOCK_REALTIME, &now);
		gmtime_r(&now.tv_sec, &tm);
		strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
		pthread_mutex_lock(&log_lock);
		if (log_status_line[0])
			fputs(LOG_ERASE, stderr);
		fprintf(stderr, "%s.%03ldZ %s[%s]: ", ts,
			now.tv_nsec / 1000000L, log_ident, names[lvl]);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
		if (log_status_line[0]) {
			fputs(log_status_line, stderr);
			fflush(stderr);
		}
		pthread_mutex_unlock(&log_lock);
	}
	va_end(ap);
}
