/* test_db_attrs.c - db_attrs_set's check of who may change a row, made by
 * the database on the row as it is (review-T-Hb): the caller's view of a
 * name may be older than the row and describe another object (another
 * user's file with the same ETag, a listing or attributes cached before
 * the name was replaced); the kernel and the daemon check that view, the
 * database checks the row. Every case reads the row back with raw SQL. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db_attrs.h"
#include "test_db.h"

#define BKT "attrs-may"
#define ALICE 2001
#define BOB 2002
#define GRP 3000
#define FOREIGN 0

static int set(struct db *d, const char *key, unsigned what, uint32_t mode,
	       int64_t uid, int64_t gid, const char *etag, const char *stale,
	       const struct db_attrs_may *may, char **bound)
{
	struct db_attrs a = {.what = what,
			     .mode = mode,
			     .uid = uid,
			     .gid = gid,
			     .atime_ns = 1000000000,
			     .mtime_ns = 1000000000};
	struct actor who = {.uid = may ? (uid_t)may->uid : 0};

	snprintf(who.user, sizeof(who.user), "u%u", (unsigned)who.uid);
	snprintf(who.host, sizeof(who.host), "test");
	return db_attrs_set(d, BKT, key, &a, etag, stale, may,
			    what & DB_ATTR_RESET ? "create" : "chmod", &who,
			    NULL, bound);
}

/* key's row as "mode|uid|gid|mtime|etag" (NULL fields empty). */
static int row_is(PGconn *raw, const char *key, const char *want)
{
	const char *p[2] = {BKT, key};
	char *v = sql_val_p(raw,
			    "SELECT concat_ws('|', coalesce(mode::text, ''),"
			    " coalesce(uid::text, ''), coalesce(gid::text, ''),"
			    " coalesce(mtime_ns::text, ''), coalesce(etag, ''))"
			    " FROM file_attrs WHERE bucket = $1 AND"
			    " object_key = $2",
			    2, p);
	int same = v && want && !strcmp(v, want);

	if (!same)
		diag("row of %s: %s, want %s", key, v ? v : "(none)",
		     want ? want : "(none)");
	same |= !v && !want;
	free(v);
	return same;
}

/* The file_attr_changes rows of key, counted. */
static long changes_of(PGconn *raw, const char *key)
{
	char sql[256];

	snprintf(sql, sizeof(sql),
		 "SELECT count(*) FROM file_attr_changes WHERE bucket = '%s'"
		 " AND object_key = '%s'",
		 BKT, key);
	return sql_long(raw, sql);
}

void test_attrs_may(struct db *d, PGconn *raw)
{
	int64_t alice_groups[] = {ALICE}, bob_groups[] = {BOB, GRP};
	struct db_attrs_may alice = {.kind = DB_MAY_CHMOD,
				     .uid = ALICE,
				     .groups = alice_groups,
				     .ngroups = 1,
				     .def_uid = FOREIGN,
				     .def_gid = FOREIGN,
				     .def_mode = 0644};
	struct db_attrs_may bob = alice;
	char *bound = NULL;
	long before;

	bob.uid = BOB;
	bob.groups = bob_groups;
	bob.ngroups = 2;

	/* Bob's 0600 file, bound to his object "e-same": Alice's old file
	 * had the same bytes, so her stale view names the same ETag. */
	ok(set(d, "k1", DB_ATTR_MODE | DB_ATTR_OWNER | DB_ATTR_MTIME, 0600, BOB,
	       BOB, "e-same", NULL, NULL, NULL) == 0 &&
	       set(d, "k1", DB_ATTR_MTIME, 0, 0, 0, "e-same", NULL, &bob,
		   NULL) == 0,
	   "Bob's k1 (set up unchecked), his change of its time allowed");
	ok(row_is(raw, "k1", "384|2002|2002|1000000000|e-same"),
	   "k1: Bob's 0600, bound to e-same");
	before = changes_of(raw, "k1");
	ok(set(d, "k1", DB_ATTR_MODE, 0666, 0, 0, "e-same", NULL, &alice,
	       NULL) == -EPERM,
	   "Alice's chmod of Bob's row, naming its own ETag: EPERM");
	alice.kind = DB_MAY_CHOWN;
	ok(set(d, "k1", DB_ATTR_OWNER, 0, ALICE, ALICE, "e-same", NULL, &alice,
	       NULL) == -EPERM,
	   "Alice's chown to herself: EPERM");
	alice.kind = DB_MAY_TIMES;
	ok(set(d, "k1", DB_ATTR_MTIME, 0, 0, 0, "e-same", NULL, &alice, NULL) ==
	       -EPERM,
	   "Alice's explicit utime: EPERM");
	alice.kind = DB_MAY_TOUCH;
	ok(set(d, "k1", DB_ATTR_MTIME, 0, 0, 0, "e-same", NULL, &alice, NULL) ==
	       -EACCES,
	   "Alice's touch (both times now) of a 0600 file: EACCES");
	ok(set(d, "k1", DB_ATTR_MTIME, 0, 0, 0, NULL, NULL, &alice, NULL) ==
	       -EACCES,
	   "... also naming no ETag (an unbound view)");
	ok(row_is(raw, "k1", "384|2002|2002|1000000000|e-same") &&
	       changes_of(raw, "k1") == before,
	   "k1 unchanged and nothing logged");

	/* What the rules allow. */
	alice.kind = DB_MAY_CHMOD;
	ok(set(d, "k1", DB_ATTR_MODE, 0600, 0, 0, "e-same", NULL, &alice,
	       NULL) == -EPERM,
	   "a chmod by another, even one that changes nothing: EPERM");
	bob.kind = DB_MAY_CHMOD;
	ok(set(d, "k1", DB_ATTR_MODE, 06770, 0, 0, "e-same", NULL, &bob,
	       NULL) == 0,
	   "the owner's chmod 6770");
	before = changes_of(raw, "k1");
	alice.kind = DB_MAY_KILL;
	ok(set(d, "k1", DB_ATTR_MODE, 0777, 0, 0, "e-same", NULL, &alice,
	       NULL) == -EPERM &&
	       row_is(raw, "k1", "3576|2002|2002|1000000000|e-same") &&
	       changes_of(raw, "k1") == before,
	   "a write's set-id clearing by one who may not write: EPERM, "
	   "nothing logged");
	alice_groups[0] = BOB;
	ok(set(d, "k1", DB_ATTR_MODE, 0777, 0, 0, "e-same", NULL, &alice,
	       NULL) == 0 &&
	       row_is(raw, "k1", "504|2002|2002|1000000000|e-same") &&
	       changes_of(raw, "k1") == before + 1,
	   "by a member of the file's group (g+w): setuid and setgid "
	   "(group-executable) cleared from the row's mode, not the "
	   "caller's view (0777): 0770, logged");
	alice_groups[0] = ALICE;
	alice.kind = DB_MAY_CHMOD;
	ok(set(d, "k1", DB_ATTR_MODE, 0666, 0, 0, "e-same", NULL, &alice,
	       NULL) == -EPERM &&
	       row_is(raw, "k1", "504|2002|2002|1000000000|e-same"),
	   "another's chmod: EPERM, k1 0770");
	bob.kind = DB_MAY_CHOWN;
	ok(set(d, "k1", DB_ATTR_OWNER, 0, BOB, GRP, "e-same", NULL, &bob,
	       NULL) == 0 &&
	       row_is(raw, "k1", "504|2002|3000|1000000000|e-same"),
	   "the owner gives k1 to one of his groups");
	ok(set(d, "k1", DB_ATTR_OWNER, 0, BOB, ALICE, "e-same", NULL, &bob,
	       NULL) == -EPERM,
	   "not to a group he is not in");
	ok(set(d, "k1", DB_ATTR_OWNER, 0, ALICE, GRP, "e-same", NULL, &bob,
	       NULL) == -EPERM,
	   "nor to another user");
	alice.kind = DB_MAY_TOUCH;
	alice_groups[0] = GRP;
	ok(set(d, "k1", DB_ATTR_MTIME, 0, 0, 0, "e-same", NULL, &alice, NULL) ==
	       0,
	   "a touch by a member of the file's group, which may write");
	alice_groups[0] = ALICE;
	ok(set(d, "k1", DB_ATTR_MTIME, 0, 0, 0, "e-same", NULL, &alice, NULL) ==
	       -EACCES,
	   "and not by another (0770)");
	ok(set(d, "k1", DB_ATTR_OWNER, 0, ALICE, ALICE, "e-same", NULL, NULL,
	       NULL) == 0 &&
	       row_is(raw, "k1", "504|2001|2001|1000000000|e-same"),
	   "root (nothing checked) gives k1 to Alice");
	{
		struct db_attrs_may root = bob;
		struct db_attrs kg = {
		    .what = DB_ATTR_OWNER, .uid = -1, .gid = GRP};
		struct actor who = {.uid = 0};

		root.uid = 0;
		root.kind = DB_MAY_CHOWN;
		ok(db_attrs_set(d, BKT, "k1", &kg, "e-same", NULL, &root,
				"chown", &who, NULL, NULL) == 0 &&
		       kg.uid == ALICE && kg.gid == GRP &&
		       row_is(raw, "k1", "504|2001|3000|1000000000|e-same"),
		   "root's chgrp (uid -1) keeps the row's owner, whatever "
		   "the caller's view says; the owner returned");
	}

	/* A write's clearing, by the owner: the kernel's rule on the row's
	 * mode, whatever mode the caller sends. */
	{
		static const unsigned from[] = {06755, 06745, 04700, 02775,
						02765, 07777, 0644};
		static const unsigned want[] = {0755,  02745, 0700, 0775,
						02765, 01777, 0644};
		struct db_attrs x;
		struct actor who = {.uid = BOB};
		char k[16];
		size_t i;

		bob.kind = DB_MAY_KILL;
		for (i = 0; i < sizeof(from) / sizeof(*from); i++) {
			snprintf(k, sizeof(k), "kill%zu", i);
			set(d, k, DB_ATTR_MODE | DB_ATTR_OWNER, from[i], BOB,
			    BOB, "e-k", NULL, NULL, NULL);
			memset(&x, 0, sizeof(x));
			x.what = DB_ATTR_MODE;
			x.mode = 01;
			ok(db_attrs_set(d, BKT, k, &x, "e-k", NULL, &bob,
					"kill_priv", &who, NULL, NULL) == 0 &&
			       x.mode == want[i],
			   "a kill of %04o leaves %04o (got %04o)", from[i],
			   want[i], x.mode);
		}
		/* Through a descriptor open for writing (its permission
		 * checked at open): allowed to one who may not write now. */
		alice.kind = DB_MAY_KILL;
		set(d, "kill9", DB_ATTR_MODE | DB_ATTR_OWNER, 04644, BOB, BOB,
		    "e-k", NULL, NULL, NULL);
		x.what = DB_ATTR_MODE;
		x.mode = 0644;
		ok(db_attrs_set(d, BKT, "kill9", &x, "e-k", NULL, &alice,
				"kill_priv", &who, NULL, NULL) == -EPERM,
		   "a kill by one who may not write: EPERM");
		alice.kind = DB_MAY_KILL_OPEN;
		ok(db_attrs_set(d, BKT, "kill9", &x, "e-k", NULL, &alice,
				"kill_priv", &who, NULL, NULL) == 0 &&
		       row_is(raw, "kill9", "420|2002|2002||e-k"),
		   "by a writer through its open descriptor: cleared");
		/* A partial chown without may on a row with no owner: what
		 * was not returned stays as given. */
		set(d, "kill10", DB_ATTR_MODE, 0640, 0, 0, "e-k", NULL, NULL,
		    NULL);
		memset(&x, 0, sizeof(x));
		x.what = DB_ATTR_OWNER;
		x.uid = -1;
		x.gid = GRP;
		ok(db_attrs_set(d, BKT, "kill10", &x, "e-k", NULL, NULL,
				"chown", &who, NULL, NULL) == 0 &&
		       x.uid == -1 && x.gid == GRP,
		   "a partial chown unchecked: no owner made up (%lld:%lld)",
		   (long long)x.uid, (long long)x.gid);
	}

	/* Stale rows: bound to another object than the one named. */
	ok(set(d, "k2", DB_ATTR_MODE | DB_ATTR_OWNER | DB_ATTR_MTIME, 0600, BOB,
	       BOB, "e-bob", NULL, NULL, NULL) == 0,
	   "Bob's k2 bound to e-bob");
	alice.kind = DB_MAY_CHMOD;
	ok(set(d, "k2", DB_ATTR_MODE, 0644, 0, 0, "e-alice-old", NULL, &alice,
	       &bound) == -ESTALE &&
	       bound && !strcmp(bound, "e-bob"),
	   "Alice names her old object: ESTALE, the row's ETag returned");
	free(bound);
	bound = NULL;
	ok(set(d, "k2", DB_ATTR_MODE, 0640, 0, 0, "e-alice-old", "e-bob",
	       &alice, NULL) == -EPERM &&
	       row_is(raw, "k2", "384|2002|2002|1000000000|e-bob"),
	   "confirmed stale: the defaults (the foreign owner's) decide: "
	   "EPERM, Bob's row unchanged");
	alice.def_uid = ALICE;
	ok(set(d, "k2", DB_ATTR_MODE, 0640, 0, 0, "e-new", "e-bob", &alice,
	       NULL) == 0 &&
	       row_is(raw, "k2", "416||||e-new"),
	   "the foreign owner's change of a confirmed stale row resets it");
	alice.def_uid = FOREIGN;

	/* Between a refusal and the change made again on a row the store
	 * showed stale, Bob's create reset the row: unbound, his. */
	ok(set(d, "k4", DB_ATTR_MODE | DB_ATTR_OWNER, 0600, BOB, BOB, "e-gone",
	       NULL, NULL, NULL) == 0 &&
	       set(d, "k4", DB_ATTR_RESET | DB_ATTR_MODE | DB_ATTR_OWNER, 0600,
		   BOB, BOB, NULL, NULL, NULL, NULL) == 0,
	   "k4: Bob's new file, its row reset (unbound)");
	alice.kind = DB_MAY_CHMOD;
	alice.def_uid = ALICE;
	ok(set(d, "k4", DB_ATTR_MODE, 0640, 0, 0, "e-alice", "e-gone", &alice,
	       NULL) == -EPERM &&
	       row_is(raw, "k4", "384|2002|2002||"),
	   "Alice's change made again after the store's answer: EPERM on "
	   "Bob's unbound row, even as the foreign owner");
	alice.def_uid = FOREIGN;

	/* A key without a row: the defaults decide. */
	ok(set(d, "k3", DB_ATTR_MODE, 0600, 0, 0, "e-foreign", NULL, &alice,
	       NULL) == -EPERM &&
	       row_is(raw, "k3", NULL),
	   "Alice's chmod of a foreign object: EPERM, no row made");
	alice.def_mode = 0666;
	alice.kind = DB_MAY_TOUCH;
	ok(set(d, "k3", DB_ATTR_MTIME, 0, 0, 0, "e-foreign", NULL, &alice,
	       NULL) == 0 &&
	       row_is(raw, "k3", "|||1000000000|e-foreign"),
	   "a touch of a foreign object others may write (0666): its row");
}

/* The last file_attr_changes row of key as "op|from_key|mtime" . */
static int last_change_is(PGconn *raw, const char *key, const char *want)
{
	const char *p[2] = {BKT, key};
	char *v = sql_val_p(raw,
			    "SELECT concat_ws('|', op, coalesce(from_key, ''),"
			    " coalesce(mtime_ns::text, ''))"
			    " FROM file_attr_changes WHERE bucket = $1 AND"
			    " object_key = $2 ORDER BY id DESC LIMIT 1",
			    2, p);
	int same = v && !strcmp(v, want);

	if (!same)
		diag("last change of %s: %s, want %s", key, v ? v : "(none)",
		     want);
	free(v);
	return same;
}

/* db_attrs_move_claim (review-held5 N3, review-stale F1/F2, review-stale2
 * R1/R2): an open file renamed to a free name claims it with its own row,
 * moved and logged as a move; a row at the target is taken only when the
 * caller says so (it found nothing stored there), a live claim never; a
 * source row not bound to the file's objects is not moved. */
void test_attrs_move_claim(struct db *d, PGconn *raw)
{
	struct db_attrs in = {.what = DB_ATTR_MODE | DB_ATTR_OWNER,
			      .mode = 0640,
			      .uid = ALICE,
			      .gid = ALICE};
	struct db_attrs out;
	struct db_claim held = {0}, held2 = {0};
	struct actor who = {.uid = ALICE};
	long before;

	snprintf(who.user, sizeof(who.user), "alice");
	snprintf(who.host, sizeof(who.host), "test");
	ok(set(d, "mc/x.tmp", DB_ATTR_MODE | DB_ATTR_OWNER | DB_ATTR_MTIME,
	       0600, ALICE, ALICE, "e-x", NULL, NULL, NULL) == 0,
	   "Alice's x.tmp row, bound to e-x, with a time");
	ok(set(d, "mc/y", DB_ATTR_MODE | DB_ATTR_OWNER, 0644, BOB, BOB, "e-old",
	       NULL, NULL, NULL) == 0,
	   "a row at y, bound (an object stored there, or a stale row)");
	before = changes_of(raw, "mc/y");
	ok(db_attrs_move_claim(d, BKT, "mc/x.tmp", "mc/y", "e-x", NULL, &in,
			       "m1#1", 60, 0, &who, &out, &held) == -EEXIST &&
	       held.found && !held.live && held.etag &&
	       !strcmp(held.etag, "e-old"),
	   "not taken without take: EEXIST, the row there returned");
	ok(row_is(raw, "mc/y", "420|2002|2002||e-old") &&
	       row_is(raw, "mc/x.tmp", "384|2001|2001|1000000000|e-x") &&
	       changes_of(raw, "mc/y") == before,
	   "... nothing changed, nothing logged");
	/* K4: take takes only the row seen (held), never one made since */
	ok(set(d, "mc/k", DB_ATTR_MODE | DB_ATTR_OWNER, 0644, BOB, BOB, "e-1",
	       NULL, NULL, NULL) == 0 &&
	       db_attrs_move_claim(d, BKT, "mc/x.tmp", "mc/k", "e-x", NULL, &in,
				   "m1#9", 60, 0, &who, &out,
				   &held2) == -EEXIST &&
	       held2.etag && !strcmp(held2.etag, "e-1"),
	   "k: a row bound to e-1 seen");
	ok(sql_ok(raw, "UPDATE file_attrs SET mode = 384, etag = 'e-2'"
		       " WHERE bucket = '" BKT "' AND object_key = 'mc/k'"),
	   "... then another object's row there (e-2)");
	before = changes_of(raw, "mc/k");
	ok(db_attrs_move_claim(d, BKT, "mc/x.tmp", "mc/k", "e-x", NULL, &in,
			       "m1#9", 60, 1, &who, &out, &held2) == -EEXIST &&
	       held2.etag && !strcmp(held2.etag, "e-2"),
	   "with take of the e-1 row seen: EEXIST, the e-2 row returned");
	db_claim_free(&held2);
	ok(row_is(raw, "mc/k", "384|2002|2002||e-2") &&
	       row_is(raw, "mc/x.tmp", "384|2001|2001|1000000000|e-x") &&
	       changes_of(raw, "mc/k") == before,
	   "... nothing changed, nothing logged");
	ok(db_attrs_move_claim(d, BKT, "mc/x.tmp", "mc/y", "e-other", "e-x",
			       &in, "m1#1", 60, 1, &who, &out, &held) == 0,
	   "with take of the row seen: x.tmp's row (bound to one of the "
	   "file's ETags) moves to y as m1#1's claim");
	ok(row_is(raw, "mc/y", "384|2001|2001|1000000000|") &&
	       row_is(raw, "mc/x.tmp", NULL),
	   "y: x.tmp's mode, owner and time, unbound; x.tmp: no row");
	ok(out.what == (DB_ATTR_MODE | DB_ATTR_OWNER | DB_ATTR_MTIME) &&
	       out.mode == 0600 && out.uid == ALICE &&
	       out.mtime_ns == 1000000000,
	   "the row's attributes returned (no atime: not set)");
	ok(last_change_is(raw, "mc/y", "move|mc/x.tmp|1000000000"),
	   "logged as a move from x.tmp");
	ok(sql_long(raw, "SELECT count(*) FROM file_attrs WHERE bucket = '" BKT
			 "' AND object_key = 'mc/y' AND claimed_by = 'm1#1'"
			 " AND claim_until > now()") == 1,
	   "a live claim of m1#1");
	/* another create's live claim at the target: never taken */
	ok(db_attrs_claim(d, BKT, "mc/z", &in, "m2#1", 60, 1, NULL, &who, NULL,
			  &held) == 0,
	   "m2's create claims z");
	db_claim_free(&held);
	before = changes_of(raw, "mc/z");
	ok(db_attrs_move_claim(d, BKT, "mc/y", "mc/z", NULL, NULL, &in, "m1#2",
			       60, 1, &who, &out, &held) == -EEXIST &&
	       held.found && held.live,
	   "over m2's live claim at z, even with take: EEXIST, live");
	db_claim_free(&held);
	ok(row_is(raw, "mc/y", "384|2001|2001|1000000000|") &&
	       row_is(raw, "mc/z", "416|2001|2001||") &&
	       changes_of(raw, "mc/z") == before,
	   "... nothing changed, nothing logged");
	/* a source row that is not the file's (another create's since) */
	ok(set(d, "mc/s.tmp", DB_ATTR_MODE | DB_ATTR_OWNER, 0755, BOB, BOB,
	       "e-bob", NULL, NULL, NULL) == 0,
	   "Bob's row at s.tmp");
	ok(db_attrs_move_claim(d, BKT, "mc/s.tmp", "mc/v", "e-x", NULL, &in,
			       "m1#3", 60, 0, &who, &out, &held) == 0 &&
	       row_is(raw, "mc/v", "416|2001|2001||") &&
	       row_is(raw, "mc/s.tmp", "493|2002|2002||e-bob") &&
	       out.mode == 0640 && out.uid == ALICE,
	   "a source row bound to another object stays; v claimed with "
	   "Alice's 0640");
	ok(last_change_is(raw, "mc/v", "create||"), "... logged as a create");
	/* a source with no row */
	ok(db_attrs_move_claim(d, BKT, "mc/none", "mc/w", "e-x", NULL, &in,
			       "m1#4", 60, 0, &who, &out, &held) == 0 &&
	       row_is(raw, "mc/w", "416|2001|2001||") &&
	       out.what == (DB_ATTR_MODE | DB_ATTR_OWNER),
	   "no row at the source: w claimed with 0640, Alice's");
	/* review-k L4: a rename's move of m1's claim (y) over m2's live
	 * claim (z) fails, nothing changed, in its transaction (an open new
	 * file's rename moves its row first and stops there); to a free
	 * name the claim moves, still m1's and live */
	ok(db_set_claimer(d, "m1") == 0, "this process is m1");
	before = changes_of(raw, "mc/z");
	ok(db_attrs_move(d, BKT, "mc/y", "mc/z", 0, NULL, NULL, &who) == -EBUSY,
	   "y's row moved over m2's live claim at z: EBUSY");
	ok(row_is(raw, "mc/y", "384|2001|2001|1000000000|") &&
	       row_is(raw, "mc/z", "416|2001|2001||") &&
	       changes_of(raw, "mc/z") == before,
	   "... nothing changed, nothing logged");
	ok(db_attrs_move(d, BKT, "mc/y", "mc/u", 0, NULL, NULL, &who) == 0 &&
	       row_is(raw, "mc/y", NULL) &&
	       row_is(raw, "mc/u", "384|2001|2001|1000000000|") &&
	       sql_long(raw,
			"SELECT count(*) FROM file_attrs WHERE bucket = '" BKT
			"' AND object_key = 'mc/u' AND claimed_by = 'm1#1'"
			" AND claim_until > now()") == 1,
	   "to a free name u: moved, still m1#1's live claim");
	ok(db_set_claimer(d, NULL) == 0, "no claimer again");
}

/* Is claimer c's liveness lock held (a query's text; c a literal)? */
#define LOCK_HELD(c)                                                           \
	"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND"        \
	" granted AND objsubid = 1 AND objid = (hashtextextended('" c "',"     \
	" 7310303) & 4294967295)::oid"

/* Does claimer c have a heartbeat (db_live_watch)? 1 or 0. */
#define BEAT_OF(c) "SELECT count(*) FROM live_heartbeat WHERE claimer = '" c "'"

/* db_attrs_copy_hidden, db_attrs_sweep_hidden, db_set_claimer's liveness
 * lock (review-k L3, L5; review-hide H1-H3): the hide of a rename's open
 * target copies its row to the hidden name, tagged with the process's
 * claimer and never a claim; the name keeps its own; another mount's live
 * claim is never copied; the sweep drops the tagged rows of processes whose
 * liveness lock is free (gone), whatever their host, and never those of a
 * process holding it (this one, or another's on another connection). */
void test_attrs_hidden(struct db *d, PGconn *raw)
{
	struct db_attrs in = {.what = DB_ATTR_MODE | DB_ATTR_OWNER,
			      .mode = 0640,
			      .uid = ALICE,
			      .gid = ALICE};
	struct db_claim held = {0};
	struct actor who = {.uid = BOB};
	long before, dropped = -1;
	int freed = 0;

	snprintf(who.user, sizeof(who.user), "bob");
	snprintf(who.host, sizeof(who.host), "test");
	ok(set(d, "hd/y", DB_ATTR_MODE | DB_ATTR_OWNER | DB_ATTR_MTIME, 0600,
	       BOB, BOB, "e-y", NULL, NULL, NULL) == 0,
	   "Bob's y, 0600, bound to e-y");
	ok(db_set_claimer(d, "th:999999:1.5") == 0,
	   "claimer th:999999:1.5 (its liveness lock taken)");
	ok(sql_long(raw,
		    "SELECT count(*) FROM pg_locks WHERE locktype ="
		    " 'advisory' AND granted AND objid = (hashtextextended("
		    "'th:999999:1.5', 7310303) & 4294967295)::oid") == 1,
	   "... held by a session");
	ok(db_attrs_copy_hidden(d, BKT, "hd/y", "hd/.fuse_hidden01", &who) == 0,
	   "y's row copied to .fuse_hidden01");
	ok(row_is(raw, "hd/y", "384|2002|2002|1000000000|e-y") &&
	       row_is(raw, "hd/.fuse_hidden01", "384|2002|2002|1000000000|e-y"),
	   "... y keeps its row; the hidden name has the same");
	ok(sql_is(raw,
		  "SELECT claimed_by || '|' || coalesce(claim_until::text, '')"
		  " FROM file_attrs WHERE bucket = '" BKT "'"
		  " AND object_key = 'hd/.fuse_hidden01'",
		  "th:999999:1.5!hidden|"),
	   "... tagged th:999999:1.5!hidden, no claim_until");
	ok(last_change_is(raw, "hd/.fuse_hidden01", "create|hd/y|1000000000"),
	   "... logged as a create from y");
	ok(db_set_claimer(d, "th:2:1.0") == 0 &&
	       db_attrs_copy_hidden(d, BKT, "hd/y", "hd/.fuse_hidden02",
				    &who) == 0,
	   "a copy by th:2:1.0 (th:999999:1.5's lock let go with it)");
	/* another host's live process: its lock held on another session */
	ok(sql_ok(raw, "SELECT pg_advisory_lock(hashtextextended("
		       "'other:3:1.0', 7310303))") &&
	       sql_ok(raw, "INSERT INTO file_attrs (bucket, object_key, mode,"
			   " uid, gid, ctime, updated_by, etag, claimed_by)"
			   " VALUES ('" BKT "', 'hd/.fuse_hidden03', 384, 2002,"
			   " 2002, now(), 'o', 'e-y', 'other:3:1.0!hidden')"),
	   "other:3:1.0 (alive: its lock held) has a hidden row");
	/* review-hide H6: two processes count the same hidden name */
	before = changes_of(raw, "hd/.fuse_hidden03");
	ok(db_attrs_copy_hidden(d, BKT, "hd/y", "hd/.fuse_hidden03", &who) ==
		   -EEXIST &&
	       row_is(raw, "hd/.fuse_hidden03", "384|2002|2002||e-y") &&
	       sql_is(raw,
		      "SELECT claimed_by FROM file_attrs WHERE bucket = '" BKT
		      "' AND object_key = 'hd/.fuse_hidden03'",
		      "other:3:1.0!hidden") &&
	       changes_of(raw, "hd/.fuse_hidden03") == before,
	   "a copy onto other:3's hidden row: EEXIST, its row kept as it "
	   "was, nothing logged");
	/* another mount's live claim is never copied */
	ok(db_attrs_claim(d, BKT, "hd/z", &in, "m2#1", 60, 1, NULL, &who, NULL,
			  &held) == 0,
	   "m2's create claims z");
	db_claim_free(&held);
	ok(db_attrs_copy_hidden(d, BKT, "hd/z", "hd/.fuse_hidden04", &who) ==
		   0 &&
	       row_is(raw, "hd/.fuse_hidden04", NULL) &&
	       changes_of(raw, "hd/.fuse_hidden04") == 0,
	   "z's live claim (m2's): nothing copied, nothing logged");
	before = changes_of(raw, "hd/y");
	ok(db_attrs_sweep_hidden(d, BKT, &who, &dropped) == 0 && dropped == 1,
	   "the sweep drops one row (%ld)", dropped);
	ok(row_is(raw, "hd/.fuse_hidden01", NULL) &&
	       row_is(raw, "hd/.fuse_hidden02",
		      "384|2002|2002|1000000000|e-y") &&
	       row_is(raw, "hd/.fuse_hidden03", "384|2002|2002||e-y") &&
	       row_is(raw, "hd/y", "384|2002|2002|1000000000|e-y") &&
	       row_is(raw, "hd/z", "416|2001|2001||") &&
	       changes_of(raw, "hd/y") == before,
	   "... th:999999's (gone); this process's, other:3's (alive), y and "
	   "z's claim stay");
	ok(last_change_is(raw, "hd/.fuse_hidden01", "drop||1000000000"),
	   "... logged as a drop");
	/* review-37 F2: other:3 writes no heartbeat (a daemon of before
	 * migration 17): a free lock alone is not its death yet */
	ok(sql_ok(raw, "SELECT pg_advisory_unlock(hashtextextended("
		       "'other:3:1.0', 7310303))") &&
	       db_attrs_sweep_hidden(d, BKT, &who, &dropped) == 0 &&
	       dropped == 0 &&
	       row_is(raw, "hd/.fuse_hidden03", "384|2002|2002||e-y"),
	   "other:3's lock free, no heartbeat row: the sweep keeps its row "
	   "(gone only once seen free for DB_LIVE_NOBEAT_MS)");
	ok(db_attrs_drop_spare(d, BKT, "hd/.fuse_hidden03", 0, &who) == 0 &&
	       row_is(raw, "hd/.fuse_hidden03", "384|2002|2002||e-y"),
	   "... a drop sparing live tags spares it too");
	ok(sql_ok(raw, "INSERT INTO live_heartbeat (claimer, seen_at, grace)"
		       " VALUES ('other:3:1.0', clock_timestamp() -"
		       " interval '31 s', interval '30 s')") &&
	       db_attrs_sweep_hidden(d, BKT, &who, &dropped) == 0 &&
	       dropped == 1 && row_is(raw, "hd/.fuse_hidden03", NULL) &&
	       row_is(raw, "hd/.fuse_hidden02", "384|2002|2002|1000000000|e-y"),
	   "other:3 gone (its heartbeat 31 s old): its row goes at the next "
	   "sweep, this process's stays");
	/* review-31 R1, review-36 R1/R2: a live process whose liveness
	 * session ended (its lock free for a while) keeps its rows: its
	 * heartbeat (written by the watch through the pool) is fresh, and it
	 * takes the lock again within DB_LIVE_WATCH_MS */
	ok(db_live_watch(d, 0) == 0, "the liveness watch runs");
	for (int i = 0; i < 100 && sql_long(raw, BEAT_OF("th:2:1.0")) != 1; i++)
		usleep(20000);
	ok(sql_long(raw, BEAT_OF("th:2:1.0")) == 1,
	   "... and writes th:2's heartbeat (grace 30 s)");
	ok(sql_ok(raw, "SELECT pg_terminate_backend(l.pid) FROM pg_locks l"
		       " WHERE l.locktype = 'advisory' AND l.granted AND"
		       " l.objsubid = 1 AND l.objid = (hashtextextended("
		       "'th:2:1.0', 7310303) & 4294967295)::oid"),
	   "th:2's liveness session ends (as a database restart would)");
	for (int i = 0; i < 50 && !freed; i++) {
		freed = sql_long(raw, LOCK_HELD("th:2:1.0")) == 0;
		if (!freed)
			usleep(20000);
	}
	ok(freed && db_attrs_sweep_hidden(d, BKT, &who, &dropped) == 0 &&
	       dropped == 0 &&
	       row_is(raw, "hd/.fuse_hidden02", "384|2002|2002|1000000000|e-y"),
	   "... a sweep while its lock is free keeps its row: its heartbeat "
	   "is fresh");
	for (int i = 0; i < 250 && sql_long(raw, LOCK_HELD("th:2:1.0")) != 1;
	     i++)
		usleep(20000);
	ok(sql_long(raw, LOCK_HELD("th:2:1.0")) == 1,
	   "... and the watch takes the lock again");
	/* a gone process: lock free, heartbeat past its grace */
	ok(sql_ok(raw, "INSERT INTO file_attrs (bucket, object_key, mode,"
		       " uid, gid, ctime, updated_by, etag, claimed_by) VALUES"
		       " ('" BKT "', 'hd/.fuse_hidden07', 384, 2002, 2002,"
		       " now(), 'o', 'e-y', 'stale:5:1.0!hidden'),"
		       " ('" BKT "', 'hd/.fuse_hidden08', 384, 2002, 2002,"
		       " now(), 'o', 'e-y', 'fresh:6:1.0!hidden')") &&
	       sql_ok(raw, "INSERT INTO live_heartbeat (claimer, seen_at,"
			   " grace) VALUES ('stale:5:1.0', clock_timestamp() -"
			   " interval '31 s', interval '30 s'), ('fresh:6:1.0',"
			   " clock_timestamp() - interval '20 s',"
			   " interval '30 s')"),
	   "stale:5 (heartbeat 31 s old) and fresh:6 (20 s) have hidden "
	   "rows, their locks free");
	ok(db_attrs_sweep_hidden(d, BKT, &who, &dropped) == 0 && dropped == 1 &&
	       row_is(raw, "hd/.fuse_hidden07", NULL) &&
	       row_is(raw, "hd/.fuse_hidden08", "384|2002|2002||e-y"),
	   "the sweep drops stale:5's row only (%ld)", dropped);
	ok(sql_is(raw,
		  "SELECT changed_by || '|' || coalesce(changed_uid::text, '-')"
		  " || '|' || coalesce(changed_user, '-') || '|' ||"
		  " changed_host FROM file_attr_changes WHERE bucket = '" BKT
		  "' AND object_key = 'hd/.fuse_hidden07' ORDER BY id DESC"
		  " LIMIT 1",
		  "custodyfs sweep of stale:5:1.0|-|-|test"),
	   "... logged as the sweep's, not a user's (review-36 R7)");
	ok(db_live_beats_sweep(d) >= 1 &&
	       sql_long(raw, BEAT_OF("stale:5:1.0")) == 0 &&
	       sql_long(raw, BEAT_OF("fresh:6:1.0")) == 1 &&
	       sql_long(raw, BEAT_OF("th:2:1.0")) == 1,
	   "db_live_beats_sweep drops stale:5's heartbeat only");
	ok(sql_ok(raw, "DELETE FROM file_attrs WHERE bucket = '" BKT "' AND"
		       " object_key = 'hd/.fuse_hidden08'") &&
	       sql_ok(raw, "DELETE FROM live_heartbeat WHERE claimer ="
			   " 'fresh:6:1.0'"),
	   "fresh:6's row and heartbeat removed");
	/* review-31 R6: a tree drop sparing claims spares a live tag too */
	ok(sql_ok(raw, "INSERT INTO file_attrs (bucket, object_key, mode,"
		       " uid, gid, ctime, updated_by, etag, claimed_by) VALUES"
		       " ('" BKT "', 'hs/.fuse_hidden05', 384, 2002, 2002,"
		       " now(), 'o', 'e-y', 'th:2:1.0!hidden'),"
		       " ('" BKT "', 'hs/.fuse_hidden06', 384, 2002, 2002,"
		       " now(), 'o', 'e-y', 'dead:4:1.0!hidden'),"
		       " ('" BKT "', 'hs/x', 384, 2002, 2002, now(), 'o',"
		       " 'e-x', NULL)") &&
	       sql_ok(raw, "INSERT INTO live_heartbeat (claimer, seen_at,"
			   " grace) VALUES ('dead:4:1.0', clock_timestamp() -"
			   " interval '31 s', interval '30 s')"),
	   "hs/: a hidden row of this process (alive), one of a gone one, x");
	ok(db_attrs_drop_spare(d, BKT, "hs", 1, &who) == 0 &&
	       row_is(raw, "hs/.fuse_hidden05", "384|2002|2002||e-y") &&
	       row_is(raw, "hs/.fuse_hidden06", NULL) &&
	       row_is(raw, "hs/x", NULL) &&
	       changes_of(raw, "hs/.fuse_hidden05") == 0,
	   "drop_spare of the tree: the live process's hidden row stays "
	   "(not logged), the gone one's and x go");
	ok(db_attrs_drop(d, BKT, "hs", 1, &who) == 0 &&
	       row_is(raw, "hs/.fuse_hidden05", NULL),
	   "... db_attrs_drop (no spare) drops it");
	ok(db_set_claimer(d, NULL) == 0 &&
	       sql_long(raw, BEAT_OF("th:2:1.0") " AND seen_at ="
						 " '-infinity'") == 1 &&
	       db_attrs_sweep_hidden(d, BKT, &who, &dropped) == 0 &&
	       dropped == 1 && row_is(raw, "hd/.fuse_hidden02", NULL),
	   "no claimer any more (th:2's lock let go, its heartbeat ended): "
	   "its row goes too");
}

static int count_calls(void *arg)
{
	++*(int *)arg;
	return 0;
}

/* db_reception_remove_spare's absent: no object (0), or one (-ESTALE). */
static int no_object(void *arg)
{
	(void)arg;
	return 0;
}

static int an_object(void *arg)
{
	(void)arg;
	return -ESTALE;
}

/* review-k L6, L7: a removal that removed nothing in the store, or a
 * directory's, spares another mount's live claim (its new file lands
 * there); rmdir sees such a claim under the directory (no listing does).
 * d has no claimer here: every live claim is another's. */
void test_attrs_spare(struct db *d, PGconn *raw)
{
	struct db_attrs in = {.what = DB_ATTR_MODE | DB_ATTR_OWNER,
			      .mode = 0600,
			      .uid = BOB,
			      .gid = BOB};
	struct reception_new r = {.source_bucket = BKT,
				  .object_key = "sp/s",
				  .size = 1,
				  .etag = "e-s",
				  .origin = "mount"};
	struct db_claim held = {0};
	struct actor who = {.uid = ALICE};
	int64_t id = 0;
	int ins = 0, calls = 0, spared = -1;

	snprintf(who.user, sizeof(who.user), "alice");
	snprintf(who.host, sizeof(who.host), "test");
	ok(db_attrs_claim(d, BKT, "sp/dx/h", &in, "m2:1#1", 60, 1, NULL, &who,
			  NULL, &held) == 0,
	   "m2 claims sp/dx/h");
	db_claim_free(&held);
	ok(set(d, "sp/d/g", DB_ATTR_MODE | DB_ATTR_OWNER, 0644, ALICE, ALICE,
	       "e-g", NULL, NULL, NULL) == 0,
	   "a bound row at sp/d/g");
	ok(db_attrs_others_claim_under(d, BKT, "sp/d") == 0,
	   "under sp/d: no claim (sp/dx/h is not under it, nor a bound row)");
	ok(db_attrs_claim(d, BKT, "sp/d/e/f", &in, "m2:1#2", 60, 1, NULL, &who,
			  NULL, &held) == 0,
	   "m2 claims sp/d/e/f");
	db_claim_free(&held);
	ok(db_attrs_others_claim_under(d, BKT, "sp/d") == 1 &&
	       db_attrs_others_claim_under(d, BKT, "sp") == 1 &&
	       db_attrs_others_claim_under(d, BKT, "sp/d/e/f") == 0,
	   "under sp/d and sp: m2's claim; under the claimed key itself: none");
	ok(db_set_claimer(d, "m2:1") == 0 &&
	       db_attrs_others_claim_under(d, BKT, "sp/d") == 0 &&
	       db_set_claimer(d, NULL) == 0,
	   "for m2 itself, its own claim is not another's");
	ok(db_attrs_drop_spare(d, BKT, "sp/d", 1, &who) == 0 &&
	       row_is(raw, "sp/d/g", NULL) &&
	       row_is(raw, "sp/d/e/f", "384|2002|2002||"),
	   "drop_spare of the tree: the bound row goes, m2's claim stays");
	ok(sql_ok(raw, "UPDATE file_attrs SET claim_until = now() -"
		       " interval '1 second' WHERE bucket = '" BKT
		       "' AND object_key = 'sp/d/e/f'") &&
	       db_attrs_others_claim_under(d, BKT, "sp/d") == 0 &&
	       db_attrs_drop_spare(d, BKT, "sp/d", 1, &who) == 0 &&
	       row_is(raw, "sp/d/e/f", NULL),
	   "a lapsed claim: not counted, and dropped");
	ok(db_attrs_drop(d, BKT, "sp/dx", 1, &who) == 0 &&
	       row_is(raw, "sp/dx/h", NULL),
	   "db_attrs_drop ends a live claim (an unlink of a stored object)");

	/* db_reception_remove_spare */
	ok(db_attrs_claim(d, BKT, "sp/y", &in, "m2:1#3", 60, 1, NULL, &who,
			  NULL, &held) == 0,
	   "m2 claims sp/y (no object, no live row)");
	db_claim_free(&held);
	ok(db_reception_remove_spare(d, BKT, "sp/y", "deleted", count_calls,
				     no_object, &calls, NULL, NULL,
				     &spared) == 0 &&
	       spared == 1 && calls == 0 &&
	       sql_long(raw, "SELECT count(*) FROM reception_removals WHERE"
			     " source_bucket = '" BKT
			     "' AND object_key = 'sp/y'") == 0,
	   "remove_spare at m2's claim, no live row, no object: nothing done, "
	   "spared");
	ok(db_reception_remove_spare(d, BKT, "sp/y", "deleted", count_calls,
				     an_object, &calls, NULL, NULL,
				     &spared) == 0 &&
	       spared == 0 && calls == 1 &&
	       sql_long(raw, "SELECT count(*) FROM reception_removals WHERE"
			     " source_bucket = '" BKT
			     "' AND object_key = 'sp/y'") == 1,
	   "remove_spare at m2's claim, no live row, an object there "
	   "(review-31 R4): fn called, the removal noted");
	calls = 0;
	ok(db_reception_remove_spare(d, BKT, "sp/n", "deleted", count_calls,
				     an_object, &calls, NULL, NULL,
				     &spared) == 0 &&
	       spared == 0 && calls == 1 &&
	       sql_long(raw, "SELECT count(*) FROM reception_removals WHERE"
			     " source_bucket = '" BKT
			     "' AND object_key = 'sp/n'") == 1,
	   "remove_spare with no claim: fn called, the removal noted");
	db_reception_record(d, &r, NULL, &id, &ins);
	ok(ins && db_attrs_claim(d, BKT, "sp/s", &in, "m2:1#4", 60, 1, NULL,
				 &who, NULL, &held) == 0,
	   "sp/s: a live row, and m2's claim");
	db_claim_free(&held);
	calls = 0;
	ok(db_reception_remove_spare(d, BKT, "sp/s", "deleted", count_calls,
				     an_object, &calls, NULL, NULL,
				     &spared) == 0 &&
	       spared == 0 && calls == 1 &&
	       sql_long(raw, "SELECT count(*) FROM reception_audit WHERE"
			     " source_bucket = '" BKT "' AND object_key ="
			     " 'sp/s' AND removed_at IS NULL") == 0,
	   "remove_spare of a recorded object: removed (claim or not)");
}
