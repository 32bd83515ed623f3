/* chain.c - the chain anchors in the store; see chain.h. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chain.h"
#include "log.h"
#include "s3xml.h"

/* An anchor is a few hundred bytes; anything bigger is not one of ours. */
#define CHAIN_ANCHOR_MAX 16384

int chain_anchor_write(struct db *d, struct s3_client *s3, const char *bucket,
		       const char *host, char *key, size_t key_len,
		       struct db_chain_head heads[DB_CHAIN_NHEADS])
{
	struct db_chain_head h[DB_CHAIN_NHEADS];
	char now[40], k[512], body[8192];
	struct timespec ts;
	uint64_t us;
	size_t len;
	int rc, t;

	if (!d || !s3 || !bucket || !host)
		return -EINVAL;
	rc = db_chain_heads(d, h, now);
	if (rc)
		return rc;
	len = (size_t)snprintf(body, sizeof(body),
			       "custodyfs-chain-anchor 1\ntime %s\nhost %s\n",
			       now, host);
	for (t = 0; t < DB_CHAIN_NHEADS && len < sizeof(body); t++)
		len += (size_t)snprintf(
		    body + len, sizeof(body) - len, "head %s %d %lld %s\n",
		    h[t].table, h[t].lane, (long long)h[t].seq, h[t].row_hash);
	if (len >= sizeof(body))
		return -ENAMETOOLONG;
	clock_gettime(CLOCK_REALTIME, &ts);
	us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
	snprintf(k, sizeof(k), "%s%016" PRIu64 "-%s-%ld.txt",
		 CHAIN_ANCHOR_PREFIX, UINT64_C(9999999999999999) - us, host,
		 (long)getpid());
	rc = s3_put_buf(s3, bucket, k, body, len, NULL, 0, NULL);
	if (rc) {
		log_warn("chain: anchor %s not written: %s", k, strerror(-rc));
		return rc;
	}
	log_info("chain: anchor %s written", k);
	if (key)
		snprintf(key, key_len, "%s", k);
	if (heads)
		memcpy(heads, h, sizeof(h));
	return 0;
}

/* Parses an anchor's text into heads (seq -1: that lane not named).
 * 0 or -EINVAL. */
static int chain_anchor_parse(char *text, char time_out[40],
			      struct db_chain_head h[DB_CHAIN_NHEADS])
{
	char *line, *save = NULL;
	int first = 1, t, lane, k;

	for (k = 0; k < DB_CHAIN_NHEADS; k++)
		h[k].seq = -1;
	time_out[0] = '\0';
	for (line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char tab[32], hash[80];
		long long seq;

		if (first) {
			if (strcmp(line, "custodyfs-chain-anchor 1"))
				return -EINVAL;
			first = 0;
		} else if (!strncmp(line, "time ", 5)) {
			snprintf(time_out, 40, "%s", line + 5);
		} else if (!strncmp(line, "head ", 5)) {
			if (sscanf(line + 5, "%31s %d %lld %79s", tab, &lane,
				   &seq, hash) != 4 ||
			    seq < 0 || strlen(hash) != 64 || lane < 0 ||
			    lane >= DB_CHAIN_LANES)
				return -EINVAL;
			t = db_chain_table_index(tab);
			if (t < 0)
				continue; /* a table of a newer version */
			k = t * DB_CHAIN_LANES + lane;
			snprintf(h[k].table, sizeof(h[k].table), "%s",
				 db_chain_tables[t]);
			h[k].lane = lane;
			h[k].seq = seq;
			/* 64 hex digits, checked above */
			memcpy(h[k].row_hash, hash, 64);
			h[k].row_hash[64] = 0;
		}
	}
	return first ? -EINVAL : 0;
}

/* One anchor against the database. 0 (r->broken set on a mismatch) or
 * -errno. */
static int chain_anchor_one(struct db *d, struct s3_client *s3,
			    const char *bucket, const char *key,
			    struct chain_anchor_report *r)
{
	struct db_chain_head h[DB_CHAIN_NHEADS];
	char *buf, when[40], hash[65];
	size_t got = 0;
	int64_t id;
	int rc, t, k, found;

	buf = malloc(CHAIN_ANCHOR_MAX + 1);
	if (!buf)
		return -ENOMEM;
	rc = s3_get_range(s3, bucket, key, 0, CHAIN_ANCHOR_MAX, buf, &got);
	if (rc)
		goto out;
	buf[got] = '\0';
	if (got >= CHAIN_ANCHOR_MAX || chain_anchor_parse(buf, when, h)) {
		r->broken = 1;
		snprintf(r->anchor, sizeof(r->anchor), "%s", key);
		snprintf(r->brk.table, sizeof(r->brk.table), "-");
		r->brk.row_id = -1;
		r->brk.lane = -1;
		r->brk.seq = -1;
		snprintf(r->brk.reason, sizeof(r->brk.reason),
			 "the anchor is not one custodyfs wrote");
		goto out;
	}
	if (!r->n_anchors)
		snprintf(r->newest_time, sizeof(r->newest_time), "%s", when);
	for (k = 0; k < DB_CHAIN_NHEADS; k++) {
		t = k / DB_CHAIN_LANES;
		if (h[k].seq <= 0)
			continue;
		rc = db_chain_hash_at(d, db_chain_tables[t], h[k].lane,
				      h[k].seq, hash, &id, &found);
		if (rc)
			goto out;
		if (found && !strcmp(hash, h[k].row_hash))
			continue;
		r->broken = 1;
		snprintf(r->anchor, sizeof(r->anchor), "%s", key);
		snprintf(r->brk.table, sizeof(r->brk.table), "%s",
			 db_chain_tables[t]);
		r->brk.lane = h[k].lane;
		r->brk.seq = h[k].seq;
		r->brk.row_id = found ? id : -1;
		if (found)
			snprintf(r->brk.reason, sizeof(r->brk.reason),
				 "lane %d: row id %lld (chain_seq %lld) has "
				 "row_hash %.16s..., the anchor of %s says "
				 "%.16s...: the chain was rewritten",
				 h[k].lane, (long long)id, (long long)h[k].seq,
				 hash, when, h[k].row_hash);
		else
			snprintf(r->brk.reason, sizeof(r->brk.reason),
				 "lane %d: chain_seq %lld, anchored at %s, is "
				 "not in the database: rows deleted or the "
				 "chain rewritten",
				 h[k].lane, (long long)h[k].seq, when);
		break;
	}
out:
	free(buf);
	return rc;
}

int chain_anchor_check(struct db *d, struct s3_client *s3, const char *bucket,
		       struct chain_anchor_report *r)
{
	struct s3_list_result l = {0};
	size_t i;
	int rc;

	if (!d || !s3 || !bucket || !r)
		return -EINVAL;
	memset(r, 0, sizeof(*r));
	/* Newest first (the key's digits count down): one page. */
	rc = s3_list_page(s3, bucket, CHAIN_ANCHOR_PREFIX, NULL, NULL,
			  CHAIN_ANCHORS_CHECKED, &l);
	if (rc)
		goto out;
	for (i = 0; i < l.n_entries && i < CHAIN_ANCHORS_CHECKED; i++) {
		const char *key = l.entries[i].key;

		if (!i)
			snprintf(r->newest, sizeof(r->newest), "%s", key);
		rc = chain_anchor_one(d, s3, bucket, key, r);
		if (rc)
			goto out;
		r->n_anchors++;
		if (r->broken)
			break;
	}
out:
	s3xml_list_free(&l);
	return rc;
}

/* ---- a mount's periodic anchors ---- */

struct chain_anchorer {
	struct db *d;
	struct s3_client *s3;
	char *bucket, *host;
	int interval_s;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int stopping; /* protected by lock */
};

/* Do a and b name the same links? */
static int chain_heads_same(const struct db_chain_head *a,
			    const struct db_chain_head *b)
{
	int t;

	for (t = 0; t < DB_CHAIN_NHEADS; t++)
		if (a[t].seq != b[t].seq ||
		    strcmp(a[t].row_hash, b[t].row_hash))
			return 0;
	return 1;
}

static void *chain_anchorer_main(void *arg)
{
	struct chain_anchorer *a = arg;
	struct db_chain_head last[DB_CHAIN_NHEADS], now[DB_CHAIN_NHEADS];
	char when[40];
	int have = 0, stop = 0, rc;

	while (!stop) {
		struct timespec until;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += a->interval_s;
		pthread_mutex_lock(&a->lock);
		while (!a->stopping &&
		       pthread_cond_timedwait(&a->cond, &a->lock, &until) !=
			   ETIMEDOUT)
			;
		stop = a->stopping;
		pthread_mutex_unlock(&a->lock);
		if (stop)
			break;
		rc = db_chain_heads(a->d, now, when);
		if (rc) {
			log_warn("chain: heads not read (%s): anchor tried "
				 "again in %d s",
				 strerror(-rc), a->interval_s);
			continue;
		}
		if (have && chain_heads_same(last, now))
			continue;
		/* chain_anchor_write reads the heads again: what it writes
		 * is at least as new as now. */
		if (!chain_anchor_write(a->d, a->s3, a->bucket, a->host, NULL,
					0, last))
			have = 1;
	}
	return NULL;
}

struct chain_anchorer *chain_anchorer_start(struct db *d, struct s3_client *s3,
					    const char *bucket,
					    const char *host, int interval_s)
{
	struct chain_anchorer *a;
	int rc;

	if (!d || !s3 || !bucket || !host || interval_s <= 0) {
		errno = EINVAL;
		return NULL;
	}
	a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->d = d;
	a->s3 = s3;
	a->interval_s = interval_s;
	a->bucket = strdup(bucket);
	a->host = strdup(host);
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->cond, NULL);
	if (!a->bucket || !a->host) {
		rc = ENOMEM;
		goto fail;
	}
	rc = pthread_create(&a->thread, NULL, chain_anchorer_main, a);
	if (rc)
		goto fail;
	return a;
fail:
	pthread_cond_destroy(&a->cond);
	pthread_mutex_destroy(&a->lock);
	free(a->bucket);
	free(a->host);
	free(a);
	errno = rc;
	return NULL;
}

void chain_anchorer_stop(struct chain_anchorer *a)
{
	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	a->stopping = 1;
	pthread_cond_signal(&a->cond);
	pthread_mutex_unlock(&a->lock);
	pthread_join(a->thread, NULL);
	pthread_cond_destroy(&a->cond);
	pthread_mutex_destroy(&a->lock);
	free(a->bucket);
	free(a->host);
	free(a);
}
