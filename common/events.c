/* events.c - see events.h. */
#include "events.h"

#include "log.h"

void events_reception(const char *event, const char *op, int rc,
		      const char *bucket, const char *key, long long size,
		      const char *sha256, int64_t id, const char *origin,
		      const char *reason, const struct actor *who)
{
	struct log_ev ev;

	log_ev_begin(&ev, rc ? "error" : event);
	if (rc) {
		log_ev_str(&ev, "op", op);
		log_ev_err(&ev, rc);
	}
	log_ev_str(&ev, "bucket", bucket);
	log_ev_str(&ev, "key", key);
	if (size >= 0)
		log_ev_int(&ev, "size", size);
	if (sha256 && *sha256)
		log_ev_str(&ev, "sha256", sha256);
	if (id > 0)
		log_ev_int(&ev, "id", (long long)id);
	log_ev_str(&ev, "origin", origin);
	log_ev_str(&ev, "reason", reason);
	if (who)
		log_ev_who(&ev, (unsigned long)who->uid, who->user, who->host);
	log_ev_duration(&ev);
	log_ev_emit(&ev, rc ? LOG_LVL_ERROR : LOG_LVL_INFO);
}

void events_promoted(const char *bucket, const char *key, uint64_t size,
		     int64_t row, const char *dest_bucket, const char *dest_key,
		     int64_t journal, const struct actor *who)
{
	struct log_ev ev;

	log_ev_begin(&ev, "removed");
	log_ev_str(&ev, "bucket", bucket);
	log_ev_str(&ev, "key", key);
	log_ev_int(&ev, "size", (long long)size);
	log_ev_int(&ev, "id", (long long)row);
	log_ev_str(&ev, "reason", "promoted");
	log_ev_str(&ev, "dest_bucket", dest_bucket);
	log_ev_str(&ev, "dest_key", dest_key);
	log_ev_int(&ev, "journal", (long long)journal);
	if (who)
		log_ev_who(&ev, (unsigned long)who->uid, who->user, who->host);
	log_ev_duration(&ev);
	log_ev_emit(&ev, LOG_LVL_INFO);
}
