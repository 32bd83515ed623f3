/* log.h - leveled logging to stderr (foreground) or syslog (daemon), and
 * outcome events in key=value form (doc/custodyfs.1, LOGGING).
 *
 * Never pass secrets (keys, passwords, Authorization headers, signed URLs)
 * to these functions. A line's control characters (an uploader's key may
 * hold an escape sequence), C1 controls, Unicode line and paragraph
 * separators, bidi marks and overrides, U+FEFF and every byte that is not
 * valid UTF-8 are written as \xNN (each byte), on either sink; a line is
 * cut at 8 KiB. Thread-safe. */
#ifndef CUSTODYFS_LOG_H
#define CUSTODYFS_LOG_H

#include <stddef.h>

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* Writes v (NULL: "") into out (len bytes) between double quotes, with
 * '"' as \", '\\' as \\, and as \xNN each byte of: bytes below 0x20 and
 * 0x7f, bytes that are not valid UTF-8, C1 controls (U+0080-U+009F),
 * U+200E/U+200F, U+2028/U+2029, U+202A-U+202E, U+2066-U+2069 and U+FEFF;
 * other UTF-8 as it is. Returns the length written, or (size_t)-1 when v
 * did not fit (out then holds a quoted prefix cut at a character). The one
 * form for untrusted text (keys, names, a server's message) in any line:
 * log_info("renamed %s", q) with q from log_quote. */
size_t log_quote(char *out, size_t len, const char *v);

/* Selects the sink. use_syslog=0 writes to stderr. Call once at start-up.
 * On stderr, when it is the journal's stream (JOURNAL_STREAM names its
 * device and inode, sd-daemon(3)), each line is "<N>" (its syslog
 * priority) and the message, without the time and ident journald records
 * itself; else "TIME ident[level]: message". Found on the first line when
 * log_init was not called (the batch tools). */
void log_init(const char *ident, int use_syslog, enum log_level max_level);
void log_set_level(enum log_level max_level);
void log_msg(enum log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A status line kept at the bottom of stderr (a progress bar on a
 * terminal): text (one line, no newline) is drawn in place now, erased
 * before each log line and drawn again after it; NULL or "" erases it and
 * ends it. Only for stderr sinks (log_init use_syslog 0). Thread-safe. */
void log_status(const char *text);

/* Parses a level name (error, warning or warn, info, debug) or a digit
 * 0..3 into *out. 0, or -EINVAL. */
int log_level_parse(const char *s, enum log_level *out);

/* ---- events: one line per outcome, in key=value form -------------------
 *
 * A line is "event=NAME" then " key=value" pairs in the order added. A
 * value is written bare when it is not empty and holds only printable ASCII
 * other than space, '"', '\\' and '='; otherwise it is written as
 * log_quote writes it. A line that would pass
 * LOG_EV_MAX bytes ends with "truncated=1" instead of the pairs that do not
 * fit. Never add a secret, a URL or a conninfo. Use on one thread. */
#define LOG_EV_MAX 7936
struct log_ev {
	char buf[LOG_EV_MAX];
	size_t len;
	int full;
};

void log_ev_begin(struct log_ev *e, const char *event);
/* v NULL: the pair is left out. */
void log_ev_str(struct log_ev *e, const char *k, const char *v);
void log_ev_int(struct log_ev *e, const char *k, long long v);
/* errno=<name> (EIO...) for rc (a negative or positive errno), then what
 * errmap recorded in this thread since log_op_begin: s3_code=, http=,
 * curl=, sqlstate=. */
void log_ev_err(struct log_ev *e, int rc);
/* uid=, user= and host= of the caller: uid left out when it is
 * (unsigned long)-1 (an upload by another route: nobody known), user and
 * host when NULL or "". */
void log_ev_who(struct log_ev *e, unsigned long uid, const char *user,
		const char *host);
/* duration_ms= since this thread's log_op_begin, when one is running. */
void log_ev_duration(struct log_ev *e);
/* Writes the line at lvl (info for outcomes, error for errors). */
void log_ev_emit(struct log_ev *e, enum log_level lvl);

/* Marks the start of an operation in this thread (a FUSE request, one
 * file of a batch): duration_ms counts from here, and errmap's recorded
 * cause is cleared. log_op_end stops the clock. */
void log_op_begin(void);
void log_op_end(void);

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

#endif
