/* log.h - leveled logging to stderr (foreground) or syslog (daemon).
 *
 * Never pass secrets (keys, passwords, Authorization headers, signed URLs)
 * to these functions. A line's control characters (an uploader's key may
 * hold an escape sequence) are written as \xNN, on either sink; a line is
 * cut at 8 KiB. Thread-safe. */
#ifndef CUSTODYFS_LOG_H
#define CUSTODYFS_LOG_H

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* Selects the sink. use_syslog=0 writes to stderr. Call once at start-up. */
void log_init(const char *ident, int use_syslog, enum log_level max_level);
void log_set_level(enum log_level max_level);
void log_msg(enum log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A status line kept at the bottom of stderr (a progress bar on a
 * terminal): text (one line, no newline) is drawn in place now, erased
 * before each log line and drawn again after it; NULL or "" erases it and
 * ends it. Only for stderr sinks (log_init use_syslog 0). Thread-safe. */
void log_status(const char *text);

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

#endif
