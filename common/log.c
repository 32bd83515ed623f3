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

/* A log line's bytes at most (longer ones are cut): keys are at most
 * 1024 bytes, 4 times that escaped. */
#define LOG_LINE_MAX 8192

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

/* buf with control characters (an uploader's key may hold an escape
 * sequence) as \xNN, into out (len bytes, cut to fit). */
static void log_escape(const char *buf, char *out, size_t len)
{
	const unsigned char *p = (const unsigned char *)buf;
	size_t o = 0;

	for (; *p && o + 5 < len; p++) {
		if (*p < 0x20 || *p == 0x7f)
			o += (size_t)snprintf(out + o, len - o, "\\x%02x", *p);
		else
			out[o++] = (char)*p;
	}
	out[o] = '\0';
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	static const char *names[] = {"error", "warning", "info", "debug"};
	static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
	char raw[LOG_LINE_MAX], line[LOG_LINE_MAX];
	va_list ap;

	if (lvl > log_max)
		return;
	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	log_escape(raw, line, sizeof(line));
	if (log_use_syslog) {
		syslog(prio[lvl], "%s", line);
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
		fprintf(stderr, "%s.%03ldZ %s[%s]: %s\n", ts,
			now.tv_nsec / 1000000L, log_ident, names[lvl], line);
		if (log_status_line[0]) {
			fputs(log_status_line, stderr);
			fflush(stderr);
		}
		pthread_mutex_unlock(&log_lock);
	}
}
