/* events.h - the event lines (log.h, doc/custodyfs.1 LOGGING) of changes
 * to reception rows, shared by the reception, the promotion and the tools:
 * one line per row change, with the row's id. */
#ifndef CUSTODYFS_EVENTS_H
#define CUSTODYFS_EVENTS_H

#include <stdint.h>

#include "db.h"

/* A reception outcome on (bucket, key): event ("received", "overwritten",
 * "removed"), or, rc != 0, an "error" line for op with the errno and its
 * recorded cause. size < 0, sha256 NULL or "", id <= 0, origin, reason and
 * who NULL: left out. */
void events_reception(const char *event, const char *op, int rc,
		      const char *bucket, const char *key, long long size,
		      const char *sha256, int64_t id, const char *origin,
		      const char *reason, const struct actor *who);

/* The "removed" line of the reception row (id row) a promotion closed:
 * reason=promoted, dest_bucket, dest_key, journal, and who asked for it
 * (uid (uid_t)-1 and "" fields: left out). */
void events_promoted(const char *bucket, const char *key, uint64_t size,
		     int64_t row, const char *dest_bucket, const char *dest_key,
		     int64_t journal, const struct actor *who);

#endif
