/* log.c - see log.h. */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "s3err.h"

static int log_use_syslog; /* set once by log_init */
static enum log_level log_max = LOG_LVL_INFO;
static const char *log_ident = "custodyfs";
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER; /* stderr lines */
static char log_status_line[512]; /* protected by log_lock: "" when none */
static pthread_once_t log_journal_once = PTHREAD_ONCE_INIT;
static int log_journal; /* set once (log_journal_once): stderr is journald's */

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

/* Is stderr the stream JOURNAL_STREAM ("DEV:INO") names (sd-daemon(3))? */
static void log_journal_detect(void)
{
	const char *v = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	char tail;

	if (!v || sscanf(v, "%llu:%llu%c", &dev, &ino, &tail) != 2)
		return;
	if (fstat(STDERR_FILENO, &st) != 0)
		return;
	log_journal = (unsigned long long)st.st_dev == dev &&
		      (unsigned long long)st.st_ino == ino;
}

void log_init(const char *ident, int use_syslog, enum log_level max_level)
{
	pthread_once(&log_journal_once, log_journal_detect);
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

/* The bytes at p that a log line must not hold as they are: returns how
 * many bytes the next character takes (at least 1) and sets *esc when they
 * are to be written as \xNN. Escaped: bytes below 0x20, 0x7f, every byte
 * that is not part of valid UTF-8 (each on its own), and the code points
 * that break or forge lines or reorder what a reader sees: C1 controls
 * (U+0080-U+009F, NEL among them), U+200E/U+200F, U+2028/U+2029,
 * U+202A-U+202E, U+2066-U+2069 and U+FEFF. */
static size_t log_char(const unsigned char *p, int *esc)
{
	unsigned cp;
	size_t n, i;

	*esc = 0;
	if (*p < 0x80) {
		*esc = *p < 0x20 || *p == 0x7f;
		return 1;
	}
	if (*p >= 0xc2 && *p <= 0xdf) {
		n = 2;
		cp = *p & 0x1fu;
	} else if (*p >= 0xe0 && *p <= 0xef) {
		n = 3;
		cp = *p & 0x0fu;
	} else if (*p >= 0xf0 && *p <= 0xf4) {
		n = 4;
		cp = *p & 0x07u;
	} else {
		*esc = 1; /* 0x80-0xc1 (a stray or overlong lead), 0xf5-0xff */
		return 1;
	}
	for (i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80) {
			*esc = 1; /* cut short (a NUL ends it too) */
			return 1;
		}
		cp = (cp << 6) | (p[i] & 0x3fu);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
	    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
		*esc = 1; /* overlong, past Unicode, or a surrogate */
		return 1;
	}
	*esc = (cp >= 0x80 && cp <= 0x9f) || cp == 0x200e || cp == 0x200f ||
	       cp == 0x2028 || cp == 0x2029 || (cp >= 0x202a && cp <= 0x202e) ||
	       (cp >= 0x2066 && cp <= 0x2069) || cp == 0xfeff;
	return n;
}

/* buf with what log_char escapes as \xNN, into out (len bytes, cut to fit
 * at a character's boundary). */
static void log_escape(const char *buf, char *out, size_t len)
{
	const unsigned char *p = (const unsigned char *)buf;
	size_t o = 0, n, i;
	int esc;

	while (*p) {
		n = log_char(p, &esc);
		if (o + (esc ? 4 * n : n) + 1 > len)
			break;
		for (i = 0; i < n; i++) {
			if (esc)
				o += (size_t)snprintf(out + o, len - o,
						      "\\x%02x", p[i]);
			else
				out[o++] = (char)p[i];
		}
		p += n;
	}
	out[o] = '\0';
}

size_t log_quote(char *out, size_t len, const char *v)
{
	const unsigned char *p = (const unsigned char *)(v ? v : "");
	size_t o = 0, n, i;
	int esc;

	if (!len)
		return 0;
	if (len < 3) {
		out[0] = '\0';
		return 0;
	}
	out[o++] = '"';
	while (*p) {
		n = log_char(p, &esc);
		if (!esc && n == 1 && (*p == '"' || *p == '\\')) {
			if (o + 2 + 2 > len)
				goto cut;
			out[o++] = '\\';
			out[o++] = (char)*p;
		} else {
			if (o + (esc ? 4 * n : n) + 2 > len)
				goto cut;
			for (i = 0; i < n; i++) {
				if (esc)
					o += (size_t)snprintf(out + o, len - o,
							      "\\x%02x", p[i]);
				else
					out[o++] = (char)p[i];
			}
		}
		p += n;
	}
	out[o++] = '"';
	out[o] = '\0';
	return o;
cut:
	out[o++] = '"';
	out[o] = '\0';
	return (size_t)-1;
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
		return;
	}
	pthread_once(&log_journal_once, log_journal_detect);
	if (log_journal) {
		/* journald takes the priority from "<N>" and records the
		 * time and the ident itself */
		pthread_mutex_lock(&log_lock);
		fprintf(stderr, "<%d>%s\n", prio[lvl], line);
		fflush(stderr);
		pthread_mutex_unlock(&log_lock);
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

int log_level_parse(const char *s, enum log_level *out)
{
	static const struct {
		const char *name;
		enum log_level lvl;
	} names[] = {
	    {"error", LOG_LVL_ERROR},  {"err", LOG_LVL_ERROR},
	    {"warning", LOG_LVL_WARN}, {"warn", LOG_LVL_WARN},
	    {"info", LOG_LVL_INFO},    {"debug", LOG_LVL_DEBUG},
	};
	size_t i;

	if (!s)
		return -EINVAL;
	if (s[0] >= '0' && s[0] <= '3' && !s[1]) {
		*out = (enum log_level)(s[0] - '0');
		return 0;
	}
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (!strcasecmp(s, names[i].name)) {
			*out = names[i].lvl;
			return 0;
		}
	}
	return -EINVAL;
}

/* ---- events ------------------------------------------------------------ */

static __thread struct timespec log_op_start; /* tv_sec 0: none running */

void log_op_begin(void)
{
	clock_gettime(CLOCK_MONOTONIC, &log_op_start);
	if (!log_op_start.tv_sec && !log_op_start.tv_nsec)
		log_op_start.tv_nsec = 1;
	errmap_cause_clear();
}

void log_op_end(void)
{
	log_op_start.tv_sec = 0;
	log_op_start.tv_nsec = 0;
}

/* Room for " truncated=1" is kept at the end of every line. */
#define LOG_EV_TAIL 16

static void log_ev_put(struct log_ev *e, const char *s, size_t n)
{
	memcpy(e->buf + e->len, s, n);
	e->len += n;
	e->buf[e->len] = '\0';
}

void log_ev_begin(struct log_ev *e, const char *event)
{
	e->len = 0;
	e->full = 0;
	e->buf[0] = '\0';
	log_ev_put(e, "event=", 6);
	log_ev_put(e, event, strlen(event));
}

/* Bare: not empty, and only printable ASCII other than space, '"', '\\'
 * and '=' (anything else, UTF-8 too, goes between quotes: a reader that
 * splits on Unicode white space must see one value). */
static int log_ev_bare(const char *v)
{
	const unsigned char *p = (const unsigned char *)v;

	if (!*p)
		return 0;
	for (; *p; p++)
		if (*p <= 0x20 || *p >= 0x7f || *p == '"' || *p == '\\' ||
		    *p == '=')
			return 0;
	return 1;
}

void log_ev_str(struct log_ev *e, const char *k, const char *v)
{
	size_t start = e->len, lim = sizeof(e->buf) - LOG_EV_TAIL, n, q;
	char *b = e->buf;

	if (!v || e->full)
		return;
	/* Written in place; undone when it does not fit below lim. */
	n = start;
	if (n + strlen(k) + 2 >= lim)
		goto full;
	n += (size_t)snprintf(b + n, lim - n, " %s=", k);
	if (log_ev_bare(v)) {
		size_t l = strlen(v);

		if (n + l >= lim)
			goto full;
		memcpy(b + n, v, l);
		n += l;
	} else {
		q = log_quote(b + n, lim - n, v);
		if (q == (size_t)-1)
			goto full;
		n += q;
	}
	b[n] = '\0';
	e->len = n;
	return;
full:
	e->len = start;
	b[start] = '\0';
	log_ev_put(e, " truncated=1", 12);
	e->full = 1;
}

void log_ev_int(struct log_ev *e, const char *k, long long v)
{
	char num[32];

	snprintf(num, sizeof(num), "%lld", v);
	log_ev_str(e, k, num);
}

void log_ev_err(struct log_ev *e, int rc)
{
	struct errmap_cause c;
	const char *name;
	char num[16];

	if (rc < 0)
		rc = -rc;
	name = strerrorname_np(rc);
	if (!name) {
		snprintf(num, sizeof(num), "%d", rc);
		name = num;
	}
	log_ev_str(e, "errno", name);
	errmap_cause(&c);
	if (c.s3_code[0])
		log_ev_str(e, "s3_code", c.s3_code);
	if (c.http_status)
		log_ev_int(e, "http", c.http_status);
	if (c.curl_code)
		log_ev_int(e, "curl", c.curl_code);
	if (c.sqlstate[0])
		log_ev_str(e, "sqlstate", c.sqlstate);
}

void log_ev_who(struct log_ev *e, unsigned long uid, const char *user,
		const char *host)
{
	if (uid != (unsigned long)-1 && uid != (unsigned long)(uid_t)-1)
		log_ev_int(e, "uid", (long long)uid);
	if (user && *user)
		log_ev_str(e, "user", user);
	if (host && *host)
		log_ev_str(e, "host", host);
}

void log_ev_duration(struct log_ev *e)
{
	struct timespec now;
	long long ms;

	if (!log_op_start.tv_sec && !log_op_start.tv_nsec)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (long long)(now.tv_sec - log_op_start.tv_sec) * 1000 +
	     (now.tv_nsec - log_op_start.tv_nsec) / 1000000;
	log_ev_int(e, "duration_ms", ms < 0 ? 0 : ms);
}

void log_ev_emit(struct log_ev *e, enum log_level lvl)
{
	log_msg(lvl, "%s", e->buf);
}
