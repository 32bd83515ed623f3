/* test_db_keys.c - part of test_db (see test_db.c): lookups by key for
 * the reception scanner (live rows of a list of keys), the observer's
 * guarded record, the undo check, and that they use the byte-order key
 * indexes of migration 3. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "db.h"
#include "sbuf.h"
#include "test_db.h"

/* Keys with every character an array literal must escape, and UTF-8. */
void test_live_keys(struct db *d)
{
	static const char *const keys[] = {
	    "k/plain",	     "k/\"quoted\"",
	    "k/back\\slash", "k/{brace},comma",
	    "k/sp ace",	     "k/\xc3\xbcml\xc3\xa4ut",
	    "NULL",	     "k/gone",
	};
	const char *ask[10];
	struct reception_new r = {
	    .source_bucket = "keys-bucket",
	    .size = 1,
	    .etag = "e1",
	    .origin = "tool",
	};
	struct reception_live *rows = NULL;
	size_t i, n = 0, nk = sizeof(keys) / sizeof(keys[0]);
	int ins, found = 0, rc;

	for (i = 0; i < nk; i++) {
		r.object_key = keys[i];
		db_reception_record(d, &r, NULL, NULL, &ins);
		ask[i] = keys[i];
	}
	db_reception_mark_removed(d, "keys-bucket", "k/gone", "gone");
	ask[nk] = "k/never";
	ask[nk + 1] = "k/";
	rc = db_reception_live_keys(d, "keys-bucket", ask, nk + 2, &rows, &n);
	ok(rc == 0 && n == nk - 1, "live rows of exactly the keys asked (%zu)",
	   n);
	for (i = 0; rc == 0 && i < n; i++) {
		size_t j;

		for (j = 0; j < nk - 1; j++)
			if (!strcmp(rows[i].object_key, keys[j]))
				found++;
		if (i && strcmp(rows[i - 1].object_key, rows[i].object_key) > 0)
			found = -100;
	}
	ok(found == (int)nk - 1, "each one exactly, escaped, in byte order");
	db_reception_live_free(rows, n);

	rc = db_reception_live_keys(d, "keys-bucket", ask, 0, &rows, &n);
	ok(rc == 0 && n == 0 && !rows, "no keys: no rows, no query");
	rc = db_reception_live_keys(d, "other-bucket", ask, nk, &rows, &n);
	ok(rc == 0 && n == 0, "keys of another bucket are not returned");
	ok(db_reception_live_keys(d, NULL, ask, 1, &rows, &n) == -EINVAL,
	   "NULL bucket: -EINVAL");
}

/* The key's advisory lock is held by another session (seen from raw). */
static int key_lock_held(PGconn *raw)
{
	return sql_long(raw, "SELECT count(*) FROM pg_locks"
			     " WHERE locktype = 'advisory'"
			     " AND classid = 1129665364 AND granted"
			     " AND pid <> pg_backend_pid()") > 0;
}

struct guard_probe {
	PGconn *raw;
	int calls;
	int locked; /* the key lock was held during the call */
	int rc;	    /* what the check returns */
};

static int guard_check(void *arg)
{
	struct guard_probe *g = arg;

	g->calls++;
	g->locked = key_lock_held(g->raw);
	return g->rc;
}

static long rows_of(PGconn *raw, const char *bucket, const char *key)
{
	const char *p[2] = {bucket, key};
	char *v =
	    sql_val_p(raw,
		      "SELECT count(*) FROM reception_audit WHERE"
		      " source_bucket = $1::text AND object_key = $2::text",
		      2, p);
	long n = v ? strtol(v, NULL, 10) : -1;

	free(v);
	return n;
}

void test_record_guarded(struct db *d, PGconn *raw)
{
	struct reception_new r = {
	    .source_bucket = "guard-bucket",
	    .object_key = "g/file",
	    .size = 3,
	    .xxh128 = "0123456789abcdef0123456789abcdef",
	    .sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495"
		      "991b7852b855",
	    .etag = "etag-a",
	    .origin = "foreign",
	};
	struct guard_probe pr = {.raw = raw};
	struct db_record_guard g = {
	    .check = guard_check, .arg = &pr, .based_ms_ago = -1};
	int64_t id = 0, id_a = 0, id_b = 0;
	int ins = -1, rc;

	/* expect no live row, and there is none: the check runs under the
	 * key lock, then the row goes in */
	rc = db_reception_record_guarded(d, &r, "replaced", &g, &id_a, &ins);
	ok(rc == 0 && ins == 1 && id_a > 0, "guarded insert (rc %d)", rc);
	ok(pr.calls == 1 && pr.locked, "check ran once, under the key lock");

	/* same etag live: logged already, whatever the guard */
	pr.calls = 0;
	g.expect_live = 12345;
	rc = db_reception_record_guarded(d, &r, "replaced", &g, &id, &ins);
	ok(rc == 0 && ins == 0 && id == id_a && pr.calls == 0,
	   "same etag live: no insert, its id, check not run");

	/* another etag, but the live row is not the one expected: stale */
	r.etag = "etag-b";
	g.expect_live = 0;
	rc = db_reception_record_guarded(d, &r, "replaced", &g, &id, &ins);
	ok(rc == -ESTALE && pr.calls == 0 &&
	       rows_of(raw, "guard-bucket", "g/file") == 1,
	   "live row changed since read: -ESTALE, nothing written");

	/* the check refuses: nothing written, its errno returned */
	g.expect_live = id_a;
	pr.rc = -ENOENT;
	rc = db_reception_record_guarded(d, &r, "replaced", &g, &id, &ins);
	ok(rc == -ENOENT && pr.calls == 1 &&
	       rows_of(raw, "guard-bucket", "g/file") == 1,
	   "check fails: its errno, nothing written");

	/* expectation met, check passes: the old row is retired */
	pr.rc = 0;
	rc = db_reception_record_guarded(d, &r, "replaced", &g, &id_b, &ins);
	ok(rc == 0 && ins == 1 && id_b > id_a &&
	       rows_of(raw, "guard-bucket", "g/file") == 2,
	   "expected live row: replaced (rc %d)", rc);
	{
		char q[160];

		snprintf(q, sizeof(q),
			 "SELECT removal_reason FROM reception_audit"
			 " WHERE id = %" PRId64,
			 id_a);
		ok(sql_is(raw, q, "replaced"), "the old row got the reason");
	}
	/* no guard: plain record */
	r.etag = "etag-c";
	rc = db_reception_record_guarded(d, &r, "replaced", NULL, &id, &ins);
	ok(rc == 0 && ins == 1, "NULL guard: a plain record");
	/* no guard, the same upload seen again by an observer: its live
	 * row logs it already (review E9: the guard was dereferenced) */
	{
		int64_t id_c = id;

		rc = db_reception_record_guarded(d, &r, "replaced", NULL, &id,
						 &ins);
		ok(rc == 0 && ins == 0 && id == id_c,
		   "NULL guard, same upload live: no insert, its id");
	}

	/* the uploader (origin mount): a live row with its etag is another
	 * upload of the same bytes unless an unknown outcome is read back */
	r.origin = "mount";
	g.expect_live = -1;
	g.readback = 1;
	pr.calls = 0;
	rc = db_reception_record_guarded(d, &r, "replaced", &g, &id_a, &ins);
	ok(rc == 0 && ins == 0 && id_a == id && pr.calls == 0,
	   "mount, read back: a live row with its etag is its row");
	g.readback = 0;
	rc = db_reception_record_guarded(d, &r, "replaced", &g, &id_b, &ins);
	ok(rc == 0 && ins == 1 && id_b > id && pr.calls == 1,
	   "mount, no read back: same etag is a distinct upload, new row");

	/* an observer over a NULL-etag row (seed): only the same size is
	 * the same upload */
	sql_ok(raw, "INSERT INTO reception_audit (source_bucket, file_name,"
		    " object_key, size_bytes) VALUES ('guard-bucket', 's',"
		    " 'g/seed', 3)");
	r.object_key = "g/seed";
	r.origin = "foreign";
	g.check = NULL;
	rc = db_reception_record_guarded(d, &r, "replaced", &g, &id, &ins);
	ok(rc == 0 && ins == 0, "observer, NULL etag, same size: logged");
	r.size = 4;
	rc = db_reception_record_guarded(d, &r, "replaced", &g, &id, &ins);
	ok(rc == 0 && ins == 1 && rows_of(raw, "guard-bucket", "g/seed") == 2,
	   "observer, NULL etag, other size: replaced");
}

struct undo_probe {
	PGconn *raw;
	int calls;
	int locked;
	int rc;
};

static int undo_fn(void *arg)
{
	struct undo_probe *u = arg;

	u->calls++;
	u->locked = key_lock_held(u->raw);
	return u->rc;
}

void test_unrowed_do(struct db *d, PGconn *raw)
{
	struct reception_new r = {
	    .source_bucket = "undo-bucket",
	    .object_key = "u/file",
	    .size = 1,
	    .etag = "etag-1",
	    .origin = "mount",
	};
	struct undo_probe u = {.raw = raw};
	int rowed = -1, other, rc, ins;

	rc = db_reception_unrowed_do(d, "undo-bucket", "u/file", "etag-1",
				     undo_fn, &u, &rowed, NULL);
	ok(rc == 0 && rowed == 0 && u.calls == 1 && u.locked,
	   "no row records the etag: fn runs under the key lock");

	db_reception_record(d, &r, NULL, NULL, &ins);
	u.calls = 0;
	rc = db_reception_unrowed_do(d, "undo-bucket", "u/file", "etag-1",
				     undo_fn, &u, &rowed, NULL);
	ok(rc == 0 && rowed == 1 && u.calls == 0,
	   "a live row records it: rowed, fn not run");
	other = -1;
	rc = db_reception_unrowed_do(d, "undo-bucket", "u/file", "etag-2",
				     undo_fn, &u, &rowed, &other);
	ok(rc == 0 && rowed == 0 && other == 1 && u.calls == 0,
	   "a live row of another object: an overwrite (other), fn not run");
	rc = db_reception_unrowed_do(d, "undo-bucket", "u/file", "etag-1",
				     undo_fn, &u, &rowed, &other);
	ok(rc == 0 && rowed == 1 && other == 0 && u.calls == 0,
	   "its own live row: rowed, not other");

	db_reception_mark_removed(d, "undo-bucket", "u/file", "deleted");
	rc = db_reception_unrowed_do(d, "undo-bucket", "u/file", "etag-1",
				     undo_fn, &u, &rowed, NULL);
	ok(rc == 0 && rowed == 0 && u.calls == 1,
	   "only a removed row records it (an earlier upload of the same "
	   "bytes): not rowed, fn runs");

	rc = db_reception_unrowed_do(d, "undo-bucket", "u/file", "etag-2",
				     undo_fn, &u, &rowed, NULL);
	ok(rc == 0 && rowed == 0 && u.calls == 2,
	   "another etag of the same key: fn runs");
	u.rc = -EIO;
	rc = db_reception_unrowed_do(d, "undo-bucket", "u/other", "etag-1",
				     undo_fn, &u, &rowed, NULL);
	ok(rc == -EIO && u.calls == 3, "fn's error is returned");
	ok(db_reception_unrowed_do(d, "undo-bucket", "u/file", "", undo_fn, &u,
				   &rowed, NULL) == -EINVAL,
	   "empty etag: -EINVAL");
}

/* Every row of sql's first column, one per line (malloc'd), or NULL. */
static char *sql_lines(PGconn *c, const char *sql)
{
	PGresult *res = PQexec(c, sql);
	struct sbuf b = SBUF_INIT;
	int i;

	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		diag("SQL failed: %s: %s", sql, PQerrorMessage(c));
		PQclear(res);
		return NULL;
	}
	for (i = 0; i < PQntuples(res); i++)
		sbuf_addf(&b, "%s%s", i ? "; " : "", PQgetvalue(res, i, 0));
	PQclear(res);
	return sbuf_detach(&b);
}

/* Index scans of reception_audit (any of its indexes; which one is the
 * planner's choice: with a "C" default collation the older live-key index
 * serves too), and its sequential scans in *seq, as the statistics show
 * them once flushed. */
static long idx_scans_seq(PGconn *raw, long *seq)
{
	char *v, *w;
	long n;

	PQclear(PQexec(raw, "SELECT pg_stat_clear_snapshot()"));
	v = sql_val(raw, "SELECT sum(idx_scan) FROM pg_stat_user_indexes"
			 " WHERE relname = 'reception_audit'");
	w = sql_val(raw, "SELECT seq_scan FROM pg_stat_user_tables"
			 " WHERE relname = 'reception_audit'");
	n = v ? strtol(v, NULL, 10) : -1;
	if (seq)
		*seq = w ? strtol(w, NULL, 10) : -1;
	free(v);
	free(w);
	return n;
}

static long idx_scans(PGconn *raw)
{
	return idx_scans_seq(raw, NULL);
}

/* Waits (bounded) for idx_scans to exceed before. */
static long idx_scans_after(PGconn *raw, long before)
{
	long n = before;
	int i;

	for (i = 0; i < 50 && n <= before; i++) {
		struct timespec ts = {0, 200000000L};

		nanosleep(&ts, NULL);
		n = idx_scans(raw);
	}
	return n;
}

/* The listing-page query and the prefix query use the byte-order index
 * (migration 3) on a table big enough for the planner to care. */
void test_key_indexes(const char *conninfo, PGconn *raw)
{
	struct db *d = open_or_die(conninfo, 1);
	int i;
	const char *keys[3] = {"bulk/000017", "bulk/019999", "bulk/none"};
	struct reception_live *rows = NULL;
	size_t n = 0;
	long before, after, seq0 = -1, seq1 = -2;
	char *plan;
	int rc;

	ok(db_migrate(d) == 0, "migrate (index test database)");
	/* The migration's own scans reach the statistics when its backend
	 * exits: start counting after that. */
	db_close(d);
	for (i = 0; i < 100 && sql_long(raw, "SELECT count(*) FROM"
					     " pg_stat_activity WHERE datname ="
					     " current_database() AND pid <>"
					     " pg_backend_pid()") != 0;
	     i++) {
		struct timespec ts = {0, 100000000L};

		nanosleep(&ts, NULL);
	}
	d = open_or_die(conninfo, 1);
	ok(sql_ok(raw, "INSERT INTO reception_audit (source_bucket, file_name,"
		       " object_key, size_bytes, etag)"
		       " SELECT 'idx-bucket', 'f' || g,"
		       " 'bulk/' || lpad(g::text, 6, '0'), 1, md5(g::text)"
		       " FROM generate_series(1, 20000) g") &&
	       sql_ok(raw, "ANALYZE reception_audit"),
	   "20,000 rows");

	plan =
	    sql_lines(raw, "EXPLAIN (COSTS OFF) SELECT id FROM reception_audit"
			   " WHERE source_bucket = 'idx-bucket'"
			   " AND removed_at IS NULL"
			   " AND object_key COLLATE \"C\" >= 'bulk/0001'"
			   " AND object_key COLLATE \"C\" < 'bulk/0001' ||"
			   " chr(1114111)");
	ok(plan && strstr(plan, "Index") && strstr(plan, "key_c") &&
	       !strstr(plan, "Seq Scan"),
	   "EXPLAIN: a prefix range uses a byte-order key index (%s)",
	   plan ? plan : "no plan");
	free(plan);

	before = idx_scans_seq(raw, &seq0);
	rc = db_reception_live_keys(d, "idx-bucket", keys, 3, &rows, &n);
	ok(rc == 0 && n == 2, "two of three keys live");
	db_reception_live_free(rows, n);
	after = idx_scans_after(raw, before);
	ok(after > before,
	   "db_reception_live_keys scanned the index (idx_scan %ld -> %ld)",
	   before, after);

	before = after;
	rc = db_reception_live(d, "idx-bucket", "bulk/0199", 0, &rows, &n);
	ok(rc == 0 && n == 100, "prefix bulk/0199: 100 rows (%zu)", n);
	db_reception_live_free(rows, n);
	after = idx_scans_after(raw, before);
	ok(after > before,
	   "db_reception_live (prefix) scanned the index (%ld -> %ld)", before,
	   after);

	before = idx_scans(raw);
	rc = db_reception_unrowed_do(d, "idx-bucket", "bulk/000500", "nomatch",
				     NULL, NULL, NULL, NULL);
	after = idx_scans_after(raw, before);
	ok(rc == 0 && after > before,
	   "the undo check scanned a key index (%ld -> %ld)", before, after);
	idx_scans_seq(raw, &seq1);
	ok(seq1 == seq0 && seq0 >= 0,
	   "no sequential scan of reception_audit meanwhile (%ld -> %ld)", seq0,
	   seq1);
	db_close(d);
}

/* A rename's check of its target (review K1) and the read back of its
 * rows after a lost COMMIT (K4). */
void test_rename_guard(struct db *d, PGconn *raw)
{
	struct reception_new r = {
	    .source_bucket = "rguard-bucket",
	    .size = 5,
	    .sha256 = "5555555555555555555555555555555555555555555555555555"
		      "555555555555",
	    .origin = "mount",
	};
	struct guard_probe pr = {.raw = raw};
	struct db_rename_src src = {.etag = "e-a",
				    .check = guard_check,
				    .check_arg = &pr,
				    .superseded_reason = "gone meanwhile"};
	struct db_renamed ren;
	int ins, sup = -1, done = -1, live = -1;
	int64_t v_id = 0;

	r.object_key = "rg/a";
	r.etag = "e-a";
	db_reception_record(d, &r, NULL, NULL, &ins);
	r.object_key = "rg/b";
	r.etag = "e-g";
	db_reception_record(d, &r, NULL, NULL, &ins);
	src.superseded = &sup;
	ok(db_reception_rename_readback(d, "rguard-bucket", "rg/a", "rg/b",
					"e-a", "e-a", &done, &live,
					NULL) == 0 &&
	       done == 0,
	   "rename read back: not renamed yet");

	pr.rc = -EIO;
	ok(db_reception_rename_ret(d, "rguard-bucket", "rg/a", "rg/b", "e-a",
				   &src, 5, NULL, &ren) == -EIO &&
	       pr.calls == 1 && pr.locked && sup == 0 &&
	       rows_of(raw, "rguard-bucket", "rg/a") == 1 &&
	       rows_of(raw, "rguard-bucket", "rg/b") == 1,
	   "rename check fails (under the key lock): nothing written");

	pr.rc = -ESTALE;
	ok(db_reception_rename_ret(d, "rguard-bucket", "rg/a", "rg/b", "e-a",
				   &src, 5, NULL, &ren) == 0 &&
	       sup == 1 && ren.id > 0 && ren.from_id > 0 &&
	       ren.replaced_id == 0,
	   "target replaced since the copy: renamed, superseded");
	ok(sql_is(raw,
		  "SELECT string_agg(concat_ws('|', object_key, etag,"
		  " coalesce(removal_reason, 'live')), ',' ORDER BY id)"
		  " FROM reception_audit WHERE source_bucket ="
		  " 'rguard-bucket'",
		  "rg/a|e-a|renamed to rg/b,rg/b|e-g|live,"
		  "rg/b|e-a|gone meanwhile"),
	   "its row logged removed, the target's live row left alone");
	ok(db_reception_rename_readback(d, "rguard-bucket", "rg/a", "rg/b",
					"e-a", "e-a", &done, &live,
					&ren) == 0 &&
	       done == 1 && live == 0 && ren.id > ren.from_id,
	   "rename read back: committed, its row removed");
	ok(db_reception_rename_readback(d, "rguard-bucket", "rg/a", "rg/b",
					"e-a", "e-other", &done, NULL,
					NULL) == 0 &&
	       done == 0,
	   "rename read back: another copy's ETag is not this rename");

	/* The copy is still there: the target's live row is replaced. */
	r.object_key = "rg/c";
	r.etag = "e-c";
	db_reception_record(d, &r, NULL, NULL, &ins);
	src.etag = "e-c";
	pr.rc = 0;
	ok(db_reception_rename_ret(d, "rguard-bucket", "rg/c", "rg/b", "e-c",
				   &src, 5, NULL, &ren) == 0 &&
	       sup == 0 && ren.replaced_id > 0,
	   "target still the copy: renamed over it");
	ok(sql_is(raw,
		  "SELECT string_agg(concat_ws('|', etag,"
		  " coalesce(removal_reason, 'live')), ',' ORDER BY id)"
		  " FROM reception_audit WHERE object_key = 'rg/b'",
		  "e-g|replaced by rename from rg/c,e-a|gone meanwhile,"
		  "e-c|live"),
	   "the target's rows then");
	ok(db_reception_rename_readback(d, "rguard-bucket", "rg/c", "rg/b",
					"e-c", "e-c", &done, &live,
					NULL) == 0 &&
	       done == 1 && live == 1,
	   "rename read back: committed, its row live");

	/* A staged copy checked against rg/v's row (review L3), then rg/v
	 * uploaded again before the rows: rg/w's rows are written, the new
	 * upload's row at rg/v stays. */
	r.object_key = "rg/v";
	r.etag = "e-v";
	db_reception_record(d, &r, NULL, &v_id, &ins);
	r.object_key = "rg/w";
	r.etag = "e-w";
	db_reception_record(d, &r, NULL, NULL, &ins);
	sql_ok(raw, "UPDATE reception_audit SET removed_at = now(),"
		    " removal_reason = 'overwritten' WHERE object_key = 'rg/v'"
		    " AND removed_at IS NULL");
	r.object_key = "rg/v";
	r.etag = "e-v2";
	db_reception_record(d, &r, NULL, NULL, &ins);
	src.etag = "e-v";
	src.require = 1;
	ok(db_reception_rename_ret(d, "rguard-bucket", "rg/v", "rg/w", "e-v",
				   &src, 5, NULL, &ren) == -EBADMSG &&
	       rows_of(raw, "rguard-bucket", "rg/w") == 1,
	   "source uploaded again, copy not verified: -EBADMSG");
	src.verified = 1;
	src.checked_id = v_id + 1000000; /* the live row is not newer */
	ok(db_reception_rename_ret(d, "rguard-bucket", "rg/v", "rg/w", "e-v",
				   &src, 5, NULL, &ren) == -EBADMSG &&
	       rows_of(raw, "rguard-bucket", "rg/w") == 1,
	   "verified copy, no newer live row at the source: -EBADMSG (N1)");
	src.checked_id = v_id;
	ok(db_reception_rename_ret(d, "rguard-bucket", "rg/v", "rg/w", "e-v",
				   &src, 5, NULL, &ren) == -ESTALE &&
	       rows_of(raw, "rguard-bucket", "rg/w") == 1,
	   "verified copy without its hashes: -ESTALE, nothing written");
	src.sha256 = "7777777777777777777777777777777777777777777777777777"
		     "777777777777";
	ok(db_reception_rename_ret(d, "rguard-bucket", "rg/v", "rg/w", "e-v",
				   &src, 5, NULL, &ren) == 0 &&
	       ren.src_moved == 1 && ren.from_id == 0 && ren.replaced_id > 0 &&
	       ren.id > 0 && sup == 0,
	   "verified copy, source uploaded again: renamed, source left");
	ok(sql_is(raw,
		  "SELECT string_agg(concat_ws('|', object_key, etag,"
		  " left(sha256, 1), coalesce(removal_reason, 'live')), ','"
		  " ORDER BY id) FROM reception_audit WHERE object_key IN"
		  " ('rg/v', 'rg/w')",
		  "rg/v|e-v|5|overwritten,rg/w|e-w|5|replaced by rename from "
		  "rg/v,rg/v|e-v2|5|live,rg/w|e-v|7|live"),
	   "the new upload's row live, the target's row the staged hashes");

	/* Written again after a lost COMMIT (review L3): only while the
	 * first call's marker is there. */
	r.object_key = "rg/x";
	r.etag = "e-x";
	db_reception_record(d, &r, NULL, NULL, &ins);
	src.etag = "e-x";
	src.verified = 0;
	src.again = 1;
	src.token = "tok-x";
	ok(db_reception_rename_ret(d, "rguard-bucket", "rg/x", "rg/y", "e-x",
				   &src, 5, NULL, &ren) == -EALREADY &&
	       rows_of(raw, "rguard-bucket", "rg/x") == 1 &&
	       rows_of(raw, "rguard-bucket", "rg/y") == 0,
	   "again without the marker: -EALREADY, nothing written");
	ok(db_reception_renaming(d, "rguard-bucket", "rg/y", "tok-x", 60) ==
		   0 &&
	       db_reception_rename_ret(d, "rguard-bucket", "rg/x", "rg/y",
				       "e-x", &src, 5, NULL, &ren) == 0 &&
	       rows_of(raw, "rguard-bucket", "rg/y") == 1 &&
	       sql_long(raw, "SELECT count(*) FROM file_attrs_pending WHERE"
			     " token = 'tok-x'") == 0,
	   "again with the marker: renamed, the marker deleted");
}
