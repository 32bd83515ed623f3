/* db_chain.c - reading and verifying the hash chains; see db_chain.h.
 *
 * The walk recomputes each row_hash here, from the columns' values, with
 * the encoding of doc/custodyfs.1, TAMPER EVIDENCE (the database's trigger,
 * custodyfs_chain_encode in migration 9, is the other implementation):
 *
 *   field(v)  = "~" if v is NULL, else decimal(len(v)) ":" v  (UTF-8 bytes)
 *   encode(r) = field("custodyfs-chain-v1") field(table) field(col)...
 *   row_hash  = hex(SHA-256(unhex(prev_hash) || encode(r)))
 *
 * per lane (chain_lane 0 to 7), in chain_seq order,
 * over the columns of db_chain_cols in order, timestamps as microseconds
 * since the Unix epoch in decimal. The first link's prev_hash is 64 zeros.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <openssl/evp.h>

#include "db_chain.h"
#include "db_internal.h"
#include "log.h"

#define CHAIN_GENESIS                                                          \
	"0000000000000000000000000000000000000000000000000000000000000000"
#define CHAIN_FETCH "2000"
#define CHAIN_WALK_TIMEOUT_MS (15 * 60 * 1000)

const char *const db_chain_tables[DB_CHAIN_NTABLES] = {
    "projects_registry", "reception_audit", "storage_audit",
    "audit_chain_events"};

/* Each table's hashed columns, in order (custodyfs_chain_columns). */
static const char *const db_chain_cols[DB_CHAIN_NTABLES][20] = {
    {"id", "prefix", "created_at", "created_by", NULL},
    {"id", "source_bucket", "file_name", "object_key", "size_bytes",
     "uploaded_at", "xxh128", "sha256", "received_by", "etag", "origin",
     "received_uid", "received_user", "received_host", NULL},
    {"id",	   "project_prefix", "project_name", "dest_bucket",
     "dest_key",   "size_bytes",     "moved_at",     "source_bucket",
     "source_key", "reception_id",   "outcome",	     "duplicate_of",
     "xxh128",	   "sha256",	     "moved_by",     "moved_uid",
     "moved_user", "moved_host",     "journal_id",   NULL},
    {"id", "table_name", "row_id", "kind", "removed_at", "removal_reason",
     "name", "event_at", "event_by", "gap_lane", "gap_seq", "gap_prev",
     "gap_hash", NULL},
};

static int chain_is_ts(const char *col)
{
	return !strcmp(col, "created_at") || !strcmp(col, "uploaded_at") ||
	       !strcmp(col, "moved_at") || !strcmp(col, "removed_at") ||
	       !strcmp(col, "event_at");
}

int db_chain_table_index(const char *name)
{
	int i;

	for (i = 0; name && i < DB_CHAIN_NTABLES; i++)
		if (!strcmp(name, db_chain_tables[i]))
			return i;
	return -1;
}

/* clang-format off */
/* One table's part of the heads: each lane's last link (the index on
 * (chain_lane, chain_seq), read backwards), a deleted one vouched for by
 * its 'deleted' event included (custodyfs_chain_deleted). */
static const char db_sql_heads_part[] =
	"%sSELECT '%s', l::text, x.chain_seq::text, x.row_hash,"
	" to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
	" FROM generate_series(0, %d) l LEFT JOIN LATERAL (SELECT chain_seq,"
	" row_hash FROM (SELECT chain_seq, row_hash FROM %s WHERE chain_lane = l"
	" UNION ALL SELECT e.gap_seq, e.gap_hash FROM audit_chain_events e"
	" WHERE e.kind = 'deleted' AND e.table_name = '%s' AND e.gap_lane = l) y"
	" ORDER BY chain_seq DESC LIMIT 1) x ON true";
/* clang-format on */

static int pg_heads(struct pg_ctx *x, void *arg)
{
	void **a = arg;
	struct db_chain_head *h = a[0];
	char *now = a[1];
	PGresult *res = NULL;
	char sql[4096];
	size_t len;
	int rc, i, t, k, lane;

	for (k = 0; k < DB_CHAIN_NHEADS; k++) {
		snprintf(h[k].table, sizeof(h[k].table), "%s",
			 db_chain_tables[k / DB_CHAIN_LANES]);
		h[k].lane = k % DB_CHAIN_LANES;
		h[k].seq = 0;
		snprintf(h[k].row_hash, sizeof(h[k].row_hash), "%s",
			 CHAIN_GENESIS);
	}
	for (t = 0, len = 0; t < DB_CHAIN_NTABLES; t++)
		len += (size_t)snprintf(
		    sql + len, sizeof(sql) - len, db_sql_heads_part,
		    t ? " UNION ALL " : "", db_chain_tables[t],
		    DB_CHAIN_LANES - 1, db_chain_tables[t], db_chain_tables[t]);
	rc = pg_exec(x, sql, 0, NULL, &res);
	if (rc)
		goto out;
	now[0] = '\0';
	for (i = 0; i < PQntuples(res); i++) {
		t = db_chain_table_index(PQgetvalue(res, i, 0));
		lane = atoi(PQgetvalue(res, i, 1));
		snprintf(now, 40, "%s", PQgetvalue(res, i, 4));
		if (t < 0 || lane < 0 || lane >= DB_CHAIN_LANES)
			continue;
		k = t * DB_CHAIN_LANES + lane;
		if (PQgetisnull(res, i, 2))
			continue; /* an empty lane */
		h[k].seq = strtoll(PQgetvalue(res, i, 2), NULL, 10);
		snprintf(h[k].row_hash, sizeof(h[k].row_hash), "%s",
			 PQgetvalue(res, i, 3));
	}
out:
	PQclear(res);
	return rc;
}

int db_chain_heads(struct db *d, struct db_chain_head out[DB_CHAIN_NHEADS],
		   char now[40])
{
	void *a[2] = {out, now};

	if (!d || !out || !now)
		return -EINVAL;
	return db_run(d, "chain heads", 1, 0, pg_heads, a);
}

/* ---- the walk ---- */

static void chain_field(EVP_MD_CTX *md, const char *v, int null)
{
	char len[24];
	int n;

	if (null) {
		EVP_DigestUpdate(md, "~", 1);
		return;
	}
	n = snprintf(len, sizeof(len), "%zu:", strlen(v));
	EVP_DigestUpdate(md, len, (size_t)n);
	EVP_DigestUpdate(md, v, strlen(v));
}

/* 0 and out, or -1 when hex is not 64 hex digits. */
static int chain_unhex(const char *hex, unsigned char out[32])
{
	int i;

	if (strlen(hex) != 64)
		return -1;
	for (i = 0; i < 32; i++) {
		unsigned v;

		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (unsigned char)v;
	}
	return 0;
}

static void chain_break(struct db_chain_walk *w, int t, int lane, int64_t id,
			int64_t seq, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static void chain_break(struct db_chain_walk *w, int t, int lane, int64_t id,
			int64_t seq, const char *fmt, ...)
{
	va_list ap;

	w->broken = 1;
	snprintf(w->brk.table, sizeof(w->brk.table), "%s", db_chain_tables[t]);
	w->brk.lane = lane;
	w->brk.row_id = id;
	w->brk.seq = seq;
	va_start(ap, fmt);
	vsnprintf(w->brk.reason, sizeof(w->brk.reason), fmt, ap);
	va_end(ap);
}

/* The walk's SELECT for table t: chain_seq, id, prev_hash, row_hash, then
 * the hashed columns as text (timestamps as epoch microseconds). */
static char *chain_select(int t, int lane)
{
	size_t cap = 4096, len = 0;
	char *s = malloc(cap);
	int i;

	if (!s)
		return NULL;
	len += (size_t)snprintf(s + len, cap - len,
				"DECLARE custodyfs_chain_cur NO SCROLL CURSOR "
				"FOR SELECT chain_seq::text, id::text, "
				"prev_hash, row_hash");
	for (i = 0; db_chain_cols[t][i]; i++) {
		const char *c = db_chain_cols[t][i];

		if (chain_is_ts(c))
			len += (size_t)snprintf(s + len, cap - len,
						", (extract(epoch FROM %s) * "
						"1000000)::bigint::text",
						c);
		else
			len += (size_t)snprintf(s + len, cap - len,
						", %s::text", c);
	}
	snprintf(s + len, cap - len,
		 " FROM %s x WHERE x.chain_lane = %d"
		 " ORDER BY x.chain_seq", /* the column, not its text */
		 db_chain_tables[t], lane);
	return s;
}

struct chain_state {
	int lane;
	int64_t seq;   /* last link's chain_seq */
	int64_t id;    /* its id, -1 before the first */
	char hash[65]; /* its row_hash */
	EVP_MD_CTX *md;
};

/* clang-format off */
/* The 'deleted' event vouching for link (lane, seq) of a table: written
 * by the AFTER DELETE trigger custodyfs_chain_deleted (migration 9). */
static const char db_sql_vouched[] =
	"SELECT gap_prev, gap_hash FROM audit_chain_events"
	" WHERE kind = 'deleted' AND table_name = $1::text"
	" AND gap_lane = $2::integer AND gap_seq = $3::bigint"
	" ORDER BY id LIMIT 1";
/* clang-format on */

/* Steps st over link st->seq + 1 when a 'deleted' event vouches for it
 * (its gap_prev is st's hash): 1 when it did, 0 when not, or -errno. */
static int pg_chain_vouched(struct pg_ctx *x, int t, struct chain_state *st)
{
	PGresult *res = NULL;
	char lane[16], seq[24];
	const char *p[3];
	int rc;

	snprintf(lane, sizeof(lane), "%d", st->lane);
	snprintf(seq, sizeof(seq), "%lld", (long long)(st->seq + 1));
	p[0] = db_chain_tables[t];
	p[1] = lane;
	p[2] = seq;
	rc = pg_exec(x, db_sql_vouched, 3, p, &res);
	if (rc)
		goto out;
	if (PQntuples(res) == 0 || PQgetisnull(res, 0, 0) ||
	    PQgetisnull(res, 0, 1) || strcmp(PQgetvalue(res, 0, 0), st->hash) ||
	    strlen(PQgetvalue(res, 0, 1)) != 64)
		goto out; /* rc 0: not vouched */
	st->seq++;
	snprintf(st->hash, sizeof(st->hash), "%s", PQgetvalue(res, 0, 1));
	rc = 1;
out:
	PQclear(res);
	return rc;
}

/* Checks one fetched row; 1 when it breaks the chain (w filled), or
 * -errno. A gap before it is accepted link by link where a 'deleted'
 * event vouches for it. */
static int chain_row(struct pg_ctx *x, struct db_chain_walk *w, int t,
		     struct chain_state *st, PGresult *res, int r)
{
	int64_t seq = strtoll(PQgetvalue(res, r, 0), NULL, 10);
	int64_t id = strtoll(PQgetvalue(res, r, 1), NULL, 10);
	const char *prev = PQgetvalue(res, r, 2);
	const char *stored = PQgetvalue(res, r, 3);
	unsigned char bin[32], dig[32];
	char hex[65];
	unsigned dlen = 0;
	int i, v;

	while (seq > st->seq + 1) {
		v = pg_chain_vouched(x, t, st);
		if (v < 0)
			return v;
		if (!v)
			break;
	}
	if (seq > st->seq + 2) {
		chain_break(
		    w, t, st->lane, id, st->seq + 1,
		    "lane %d: chain_seq %lld to %lld missing before row "
		    "id %lld (chain_seq %lld): deleted",
		    st->lane, (long long)(st->seq + 1), (long long)(seq - 1),
		    (long long)id, (long long)seq);
		return 1;
	}
	if (seq == st->seq + 2) {
		chain_break(
		    w, t, st->lane, id, st->seq + 1,
		    "lane %d: chain_seq %lld missing before row id %lld "
		    "(chain_seq %lld): deleted",
		    st->lane, (long long)(st->seq + 1), (long long)id,
		    (long long)seq);
		return 1;
	}
	if (seq != st->seq + 1) {
		chain_break(w, t, st->lane, id, seq,
			    "row id %lld repeats chain_seq %lld", (long long)id,
			    (long long)seq);
		return 1;
	}
	if (PQgetisnull(res, r, 2) || strcmp(prev, st->hash)) {
		chain_break(w, t, st->lane, id, seq,
			    "row id %lld (chain_seq %lld): prev_hash is not "
			    "the row_hash of the link before it",
			    (long long)id, (long long)seq);
		return 1;
	}
	if (chain_unhex(st->hash, bin)) {
		chain_break(w, t, st->lane, id, seq,
			    "row id %lld (chain_seq %lld): prev_hash is not "
			    "64 hex digits",
			    (long long)id, (long long)seq);
		return 1;
	}
	EVP_DigestInit_ex(st->md, EVP_sha256(), NULL);
	EVP_DigestUpdate(st->md, bin, sizeof(bin));
	chain_field(st->md, "custodyfs-chain-v1", 0);
	chain_field(st->md, db_chain_tables[t], 0);
	for (i = 0; db_chain_cols[t][i]; i++)
		chain_field(st->md, PQgetvalue(res, r, 4 + i),
			    PQgetisnull(res, r, 4 + i));
	EVP_DigestFinal_ex(st->md, dig, &dlen);
	for (i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", dig[i]);
	if (PQgetisnull(res, r, 3) || strcmp(hex, stored)) {
		chain_break(w, t, st->lane, id, seq,
			    "row id %lld (chain_seq %lld): content does not "
			    "match its row_hash: edited",
			    (long long)id, (long long)seq);
		return 1;
	}
	st->seq = seq;
	st->id = id;
	snprintf(st->hash, sizeof(st->hash), "%s", stored);
	return 0;
}

/* clang-format off */
static const char db_sql_unlinked[] =
	"SELECT id::text FROM %s WHERE chain_seq IS NULL OR chain_lane IS NULL"
	" OR chain_lane NOT BETWEEN 0 AND 7 ORDER BY id LIMIT 1";
/* A row whose removed_at / removal_reason is not its newest event's. */
static const char db_sql_removed_check[] =
	"SELECT r.id::text, r.chain_seq::text FROM %s r"
	" LEFT JOIN LATERAL (SELECT e.removed_at, e.removal_reason"
	"  FROM audit_chain_events e WHERE e.table_name = $1::text"
	"  AND e.row_id = r.id AND e.kind = 'removed'"
	"  ORDER BY e.id DESC LIMIT 1) e ON true"
	" WHERE (r.removed_at, r.removal_reason)"
	"  IS DISTINCT FROM (e.removed_at, e.removal_reason)"
	" ORDER BY r.id LIMIT 1";
/* A row still there although a 'deleted' event vouches for its link or
 * its id. */
static const char db_sql_vouched_present[] =
	"SELECT r.id::text, r.chain_lane, r.chain_seq::text FROM %s r"
	" JOIN audit_chain_events e ON e.kind = 'deleted'"
	"  AND e.table_name = $1::text AND (e.row_id = r.id"
	"  OR (e.gap_lane = r.chain_lane AND e.gap_seq = r.chain_seq))"
	" ORDER BY r.id LIMIT 1";
static const char db_sql_named_check[] =
	"SELECT r.id::text, r.chain_seq::text FROM projects_registry r"
	" LEFT JOIN LATERAL (SELECT e.name FROM audit_chain_events e"
	"  WHERE e.table_name = 'projects_registry' AND e.row_id = r.id"
	"  AND e.kind = 'named' ORDER BY e.id DESC LIMIT 1) e ON true"
	" WHERE r.name IS DISTINCT FROM e.name"
	" ORDER BY r.id LIMIT 1";
/* clang-format on */

/* One lane of table t. 0 (w->broken may be set) or -errno. */
static int pg_walk_lane(struct pg_ctx *x, struct db_chain_walk *w, int t,
			int lane)
{
	struct chain_state st = {lane, 0, -1, CHAIN_GENESIS, NULL};
	int k = t * DB_CHAIN_LANES + lane;
	PGresult *res = NULL;
	char *sel = NULL;
	int rc, i, n, open = 0;

	st.md = EVP_MD_CTX_new();
	if (!st.md)
		return -ENOMEM;
	sel = chain_select(t, lane);
	if (!sel) {
		rc = -ENOMEM;
		goto out;
	}
	rc = pg_exec(x, sel, 0, NULL, NULL);
	if (rc)
		goto out;
	open = 1;
	for (;;) {
		rc =
		    pg_exec(x, "FETCH " CHAIN_FETCH " FROM custodyfs_chain_cur",
			    0, NULL, &res);
		if (rc)
			goto out;
		n = PQntuples(res);
		for (i = 0; i < n; i++) {
			w->rows[t]++;
			rc = chain_row(x, w, t, &st, res, i);
			if (rc) {
				if (rc > 0)
					rc = 0;
				goto out;
			}
		}
		PQclear(res);
		res = NULL;
		if (n == 0)
			break;
	}
	/* deleted links at the lane's end, vouched for */
	while ((rc = pg_chain_vouched(x, t, &st)) > 0)
		;
	if (rc)
		goto out;
	snprintf(w->heads[k].table, sizeof(w->heads[k].table), "%s",
		 db_chain_tables[t]);
	w->heads[k].lane = lane;
	w->heads[k].seq = st.seq;
	snprintf(w->heads[k].row_hash, sizeof(w->heads[k].row_hash), "%s",
		 st.hash);
out:
	PQclear(res);
	if (open)
		pg_exec(x, "CLOSE custodyfs_chain_cur", 0, NULL, NULL);
	free(sel);
	EVP_MD_CTX_free(st.md);
	return rc;
}

/* One table: no row outside the lanes, then each lane. 0 (w->broken may
 * be set) or -errno. */
static int pg_walk_table(struct pg_ctx *x, struct db_chain_walk *w, int t)
{
	PGresult *res = NULL;
	const char *p[1];
	char sql[512];
	int rc, lane;

	snprintf(sql, sizeof(sql), db_sql_unlinked, db_chain_tables[t]);
	rc = pg_exec(x, sql, 0, NULL, &res);
	if (rc)
		return rc;
	if (PQntuples(res) > 0) {
		int64_t id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);

		chain_break(w, t, -1, id, -1,
			    "row id %lld has no chain link: inserted with the "
			    "chain trigger disabled",
			    (long long)id);
		PQclear(res);
		return 0;
	}
	PQclear(res);
	snprintf(sql, sizeof(sql), db_sql_vouched_present, db_chain_tables[t]);
	p[0] = db_chain_tables[t];
	rc = pg_exec(x, sql, 1, p, &res);
	if (rc)
		return rc;
	if (PQntuples(res) > 0) {
		int64_t id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);

		chain_break(w, t, atoi(PQgetvalue(res, 0, 1)), id,
			    strtoll(PQgetvalue(res, 0, 2), NULL, 10),
			    "row id %lld is still in the table although an "
			    "audit_chain_events 'deleted' event vouches for "
			    "its deletion: forged event",
			    (long long)id);
		PQclear(res);
		return 0;
	}
	PQclear(res);
	for (lane = 0; lane < DB_CHAIN_LANES && !w->broken; lane++) {
		rc = pg_walk_lane(x, w, t, lane);
		if (rc)
			return rc;
	}
	return 0;
}

/* The mutable columns against their newest events. */
static int pg_walk_mutable(struct pg_ctx *x, struct db_chain_walk *w)
{
	static const int tabs[] = {1, 2};
	PGresult *res = NULL;
	const char *p[1];
	char sql[1024];
	size_t k;
	int rc;

	for (k = 0; k < sizeof(tabs) / sizeof(tabs[0]); k++) {
		int t = tabs[k];

		snprintf(sql, sizeof(sql), db_sql_removed_check,
			 db_chain_tables[t]);
		p[0] = db_chain_tables[t];
		rc = pg_exec(x, sql, 1, p, &res);
		if (rc)
			return rc;
		if (PQntuples(res) > 0) {
			int64_t id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);

			chain_break(w, t, -1, id,
				    strtoll(PQgetvalue(res, 0, 1), NULL, 10),
				    "row id %lld: removed_at/removal_reason "
				    "differ from its newest audit_chain_events "
				    "'removed' event: edited",
				    (long long)id);
			PQclear(res);
			return 0;
		}
		PQclear(res);
		res = NULL;
	}
	rc = pg_exec(x, db_sql_named_check, 0, NULL, &res);
	if (rc)
		return rc;
	if (PQntuples(res) > 0) {
		int64_t id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);

		chain_break(w, 0, -1, id,
			    strtoll(PQgetvalue(res, 0, 1), NULL, 10),
			    "row id %lld: name differs from its newest "
			    "audit_chain_events 'named' event: edited",
			    (long long)id);
	}
	PQclear(res);
	return 0;
}

static int pg_walk(struct pg_ctx *x, void *arg)
{
	struct db_chain_walk *w = arg;
	int rc, t;

	memset(w, 0, sizeof(*w));
	rc = pg_exec(x,
		     "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, "
		     "READ ONLY",
		     0, NULL, NULL);
	if (rc)
		return rc;
	for (t = 0; t < DB_CHAIN_NTABLES && !w->broken; t++) {
		rc = pg_walk_table(x, w, t);
		if (rc)
			return rc;
	}
	if (!w->broken)
		rc = pg_walk_mutable(x, w);
	return rc;
}

int db_chain_walk(struct db *d, struct db_chain_walk *w)
{
	if (!d || !w)
		return -EINVAL;
	/* One FETCH is quick; the mutable-column checks read whole tables
	 * (a million rows: seconds): bounded, but not by the hot path's
	 * bound. */
	return db_run_timed(d, "chain walk", 1, 0, CHAIN_WALK_TIMEOUT_MS,
			    pg_walk, w);
}

struct hash_at_arg {
	const char *table;
	int lane;
	int64_t seq;
	char *hash;
	int64_t *id;
	int *found;
};

static int pg_hash_at(struct pg_ctx *x, void *arg)
{
	struct hash_at_arg *a = arg;
	PGresult *res = NULL;
	char sql[512], seq[24], lane[16];
	const char *p[3];
	int rc;

	snprintf(sql, sizeof(sql),
		 "SELECT row_hash, id::text FROM %s WHERE chain_lane = "
		 "$2::integer AND chain_seq = $1::bigint"
		 " UNION ALL (SELECT gap_hash, row_id::text"
		 " FROM audit_chain_events WHERE kind = 'deleted'"
		 " AND table_name = $3::text AND gap_lane = $2::integer"
		 " AND gap_seq = $1::bigint ORDER BY id LIMIT 1)",
		 a->table);
	snprintf(seq, sizeof(seq), "%lld", (long long)a->seq);
	snprintf(lane, sizeof(lane), "%d", a->lane);
	p[0] = seq;
	p[1] = lane;
	p[2] = a->table;
	rc = pg_exec(x, sql, 3, p, &res);
	if (rc)
		goto out;
	*a->found = PQntuples(res) > 0;
	if (*a->found) {
		snprintf(a->hash, 65, "%s", PQgetvalue(res, 0, 0));
		*a->id = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
	}
out:
	PQclear(res);
	return rc;
}

int db_chain_hash_at(struct db *d, const char *table, int lane, int64_t seq,
		     char row_hash[65], int64_t *row_id, int *found)
{
	struct hash_at_arg a = {table, lane, seq, row_hash, row_id, found};

	if (!d || db_chain_table_index(table) < 0 || !row_hash || !row_id ||
	    !found)
		return -EINVAL;
	/* the name is one of db_chain_tables: safe to put in the SQL */
	a.table = db_chain_tables[db_chain_table_index(table)];
	return db_run(d, "chain hash at", 0, 0, pg_hash_at, &a);
}
