/* test_db_attrs_defer.c - db_attrs_defer and its kin (review-hide H5): an
 * open new file renamed over a stored object keeps the target's row as it
 * is; its attributes are the target's pending row until its close
 * publishes them; the name it came from is free at once. Every case reads
 * the rows back with raw SQL. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_attrs.h"
#include "test_db.h"

#define BKT "attrs-defer"
#define ALICE 2001
#define BOB 2002

/* key's row as "mode|uid|gid|etag|claimed_by" (NULL fields empty), or
 * NULL when it has none; compared with want. */
static int row_is(PGconn *raw, const char *key, const char *want)
{
	const char *p[2] = {BKT, key};
	char *v = sql_val_p(raw,
			    "SELECT concat_ws('|', coalesce(mode::text, ''),"
			    " coalesce(uid::text, ''), coalesce(gid::text, ''),"
			    " coalesce(etag, ''), coalesce(claimed_by, ''))"
			    " FROM file_attrs WHERE bucket = $1 AND"
			    " object_key = $2",
			    2, p);
	int same = (!v && !want) || (v && want && !strcmp(v, want));

	if (!same)
		diag("row of %s: %s, want %s", key, v ? v : "(none)",
		     want ? want : "(none)");
	free(v);
	return same;
}

/* key's pending rows as "token|from_key|mode|uid|etag;..." by token. */
static int pending_is(PGconn *raw, const char *key, const char *want)
{
	const char *p[2] = {BKT, key};
	char *v = sql_val_p(raw,
			    "SELECT coalesce(string_agg(concat_ws('|', token,"
			    " coalesce(from_key, ''), coalesce(mode::text, ''),"
			    " coalesce(uid::text, ''), coalesce(etag, '')), ';'"
			    " ORDER BY token), '') FROM file_attrs_pending"
			    " WHERE bucket = $1 AND object_key = $2",
			    2, p);
	int same = v && !strcmp(v, want);

	if (!same)
		diag("pending rows of %s: %s, want %s", key, v ? v : "(none)",
		     want);
	free(v);
	return same;
}

/* key's file_attr_changes as "op|from_key|mode|uid|etag;..." by id. */
static int log_is(PGconn *raw, const char *key, const char *want)
{
	const char *p[2] = {BKT, key};
	char *v = sql_val_p(raw,
			    "SELECT coalesce(string_agg(concat_ws('|', op,"
			    " coalesce(from_key, ''), coalesce(mode::text, ''),"
			    " coalesce(uid::text, ''), coalesce(etag, '')), ';'"
			    " ORDER BY id), '') FROM file_attr_changes"
			    " WHERE bucket = $1 AND object_key = $2",
			    2, p);
	int same = v && !strcmp(v, want);

	if (!same)
		diag("changes of %s: %s, want %s", key, v ? v : "(none)", want);
	free(v);
	return same;
}

/* review n17: a stored file's deferral records its own attributes, never
 * another file's row at its name (X2); a stored rename over the name of a
 * deferred publish fails as over a live claim (X1). */
static void test_attrs_defer_n17(struct db *d, PGconn *raw,
				 const struct actor *who)
{
	struct db_attrs own = {.what = DB_ATTR_MODE | DB_ATTR_OWNER,
			       .mode = 0600,
			       .uid = ALICE,
			       .gid = ALICE};
	struct db_attrs cin = {.what = DB_ATTR_MODE | DB_ATTR_OWNER,
			       .mode = 0644,
			       .uid = 2003,
			       .gid = 2003};
	struct db_attrs got = {0};
	struct db_claim held = {0};
	int had = 0, pending = 0;

	ok(sql_ok(raw, "INSERT INTO file_attrs (bucket, object_key, mode, uid,"
		       " gid, atime_ns, mtime_ns, ctime, updated_by, etag)"
		       " VALUES ('" BKT "', 'df/t1', 384, 2001, 2001, 5, 7,"
		       " now(), 'a', 'e-t1'), ('" BKT "', 'df/u', 384, 2002,"
		       " 2002, NULL, NULL, now(), 'b', 'e-u'), ('" BKT
		       "', 'df/t3', 420, 2003, 2003, NULL, NULL, now(), 'c',"
		       " 'e-c3'), ('" BKT "', 'df/u3', 384, 2002, 2002, NULL,"
		       " NULL, now(), 'b', 'e-u3')") &&
	       db_attrs_claim(d, BKT, "df/t2", &cin, "other:2:1.0#7", 60, 1,
			      NULL, who, NULL, &held) == 0,
	   "n17: Alice's t1 (0600, e-t1, times 5/7), Bob's u and u3; C's "
	   "claim of t2 (other mount), C's stored t3 (e-c3)");
	db_claim_free(&held);
	ok(db_attrs_defer(d, BKT, "df/t1", "df/u", "tok5", 60, NULL, "e-t1",
			  NULL, &own, who, &got) == 0 &&
	       pending_is(raw, "df/u", "tok5|df/t1|384|2001|") &&
	       row_is(raw, "df/t1", NULL) &&
	       log_is(raw, "df/t1", "drop||384|2001|e-t1") &&
	       got.mode == 0600 && got.uid == ALICE &&
	       (got.what & DB_ATTR_ATIME) && got.atime_ns == 5 &&
	       (got.what & DB_ATTR_MTIME) && got.mtime_ns == 7,
	   "n17: its own row at t1: its times recorded, the row dropped");
	ok(db_attrs_copy_rename(d, BKT, "df/u3", "df/u", "tok6", 60, who, NULL,
				&had, &pending, NULL) == -EBUSY &&
	       db_attrs_copy(d, BKT, "df/u3", "df/u", who, NULL, NULL, NULL) ==
		   -EBUSY &&
	       row_is(raw, "df/u", "384|2002|2002|e-u|") &&
	       row_is(raw, "df/u3", "384|2002|2002|e-u3|") &&
	       pending_is(raw, "df/u", "tok5|df/t1|384|2001|") &&
	       log_is(raw, "df/u", "") && log_is(raw, "df/u3", ""),
	   "n17 X1: a stored rename over u (a live deferred publish): EBUSY, "
	   "nothing changed");
	ok(db_attrs_defer(d, BKT, "df/t2", "df/u3", "tok7", 60, NULL, "e-t2",
			  NULL, &own, who, &got) == 0 &&
	       pending_is(raw, "df/u3", "tok7|df/t2|384|2001|") &&
	       row_is(raw, "df/t2", "420|2003|2003||other:2:1.0#7") &&
	       log_is(raw, "df/t2", "create||420|2003|") &&
	       !(got.what & (DB_ATTR_ATIME | DB_ATTR_MTIME)),
	   "n17 X2: C's claim at t2: its own attributes pending, C's claim "
	   "untouched, nothing logged at t2");
	ok(db_attrs_defer_undo(d, BKT, "df/u3", "tok7", "df/t2", NULL, 60, 0,
			       who) == -EBUSY &&
	       pending_is(raw, "df/u3", "tok7|df/t2|384|2001|"),
	   "n17: its undo over C's claim at t2: EBUSY, pending kept");
	ok(db_attrs_unpend(d, BKT, "df/u3", "tok7") == 0 &&
	       db_attrs_defer(d, BKT, "df/t3", "df/u3", "tok8", 60, NULL,
			      "e-t3", NULL, &own, who, &got) == 0 &&
	       pending_is(raw, "df/u3", "tok8|df/t3|384|2001|") &&
	       row_is(raw, "df/t3", "420|2003|2003|e-c3|") &&
	       log_is(raw, "df/t3", ""),
	   "n17 X2: C's stored object's row at t3: untouched, not logged");
	ok(db_attrs_unpend(d, BKT, "df/u3", "tok8") == 0 &&
	       db_attrs_unpend(d, BKT, "df/u", "tok5") == 0 &&
	       pending_is(raw, "df/u3", "") && pending_is(raw, "df/u", ""),
	   "n17: pending rows unpended");
}

/* review-34: a stored file's deferral records its own row at from as it
 * is now (another mount's chmod kept: Z5), and another owner's row there
 * bound to the same ETag (the same content) is not its own (Z3). */
static void test_attrs_defer_z34(struct db *d, PGconn *raw,
				 const struct actor *who)
{
	struct db_attrs held = {.what = DB_ATTR_MODE | DB_ATTR_OWNER,
				.mode = 0644,
				.uid = ALICE,
				.gid = ALICE};
	struct db_attrs got = {0};

	ok(sql_ok(raw, "INSERT INTO file_attrs (bucket, object_key, mode, uid,"
		       " gid, ctime, updated_by, etag) VALUES ('" BKT
		       "', 'df/z1', 384, 2001, 2001, now(), 'c', 'e-z'), ('" BKT
		       "', 'df/z2', 420, 2003, 2003, now(), 'c', 'e-z'), ('" BKT
		       "', 'df/zu', 384, 2002, 2002, now(), 'b', 'e-zu')"),
	   "z34: Alice's z1 (chmodded 0600 elsewhere, e-z), C's z2 (0644, "
	   "also e-z), Bob's zu");
	ok(db_attrs_defer(d, BKT, "df/z1", "df/zu", "tokz5", 60, NULL, "e-z",
			  NULL, &held, who, &got) == 0 &&
	       pending_is(raw, "df/zu", "tokz5|df/z1|384|2001|") &&
	       row_is(raw, "df/z1", NULL) &&
	       log_is(raw, "df/z1", "drop||384|2001|e-z") && got.mode == 0600 &&
	       got.uid == ALICE,
	   "z34 Z5: held 0644, her row at z1 0600: 0600 recorded, row dropped");
	held.mode = 0600;
	ok(db_attrs_unpend(d, BKT, "df/zu", "tokz5") == 0 &&
	       db_attrs_defer(d, BKT, "df/z2", "df/zu", "tokz3", 60, NULL,
			      "e-z", NULL, &held, who, &got) == 0 &&
	       pending_is(raw, "df/zu", "tokz3|df/z2|384|2001|") &&
	       row_is(raw, "df/z2", "420|2003|2003|e-z|") &&
	       log_is(raw, "df/z2", "") && got.mode == 0600 && got.uid == ALICE,
	   "z34 Z3: C's row at z2 with her ETag: untouched, not logged; her "
	   "own attributes pending");
	ok(db_attrs_unpend(d, BKT, "df/zu", "tokz3") == 0 &&
	       pending_is(raw, "df/zu", ""),
	   "z34: pending rows unpended");
}

/* An unlink by whom (uid) of key, judged with perm: *dropped, *kept. */
static int unlink_as(struct db *d, const char *key, uid_t uid,
		     const struct db_unlink_perm *pm, int *dropped, int *kept)
{
	struct actor w = {.uid = uid};

	snprintf(w.user, sizeof(w.user), "u%u", (unsigned)uid);
	snprintf(w.host, sizeof(w.host), "test");
	return db_attrs_defer_unlink(d, BKT, key, pm, &w, dropped, kept);
}

/* review-h5 N1 (POSIX): an unlink of a deferred publish's name unlinks
 * the open file too when who may remove it (its owner, root, a directory
 * not sticky, or the sticky directory's owner); else its row stays. */
static void test_attrs_defer_unlink(struct db *d, PGconn *raw,
				    const struct actor *who)
{
	struct db_attrs own = {.what = DB_ATTR_MODE | DB_ATTR_OWNER,
			       .mode = 0600,
			       .uid = ALICE,
			       .gid = ALICE};
	struct db_unlink_perm sticky = {
	    .sticky = 1, .dir_uid = BOB, .def_uid = 3000};
	struct db_unlink_perm open = {.dir_uid = BOB, .def_uid = 3000};
	struct db_claim held = {0};
	struct db_attrs cin = {.what = DB_ATTR_MODE | DB_ATTR_OWNER,
			       .mode = 0644,
			       .uid = 2003,
			       .gid = 2003};
	int dropped = -1, kept = -1, i;
	char key[16], tok[16], want[64];
	/* who unlinks, in which directory, and is Alice's file unlinked */
	static const struct {
		uid_t uid;
		int sticky, drops;
		const char *what;
	} cases[] = {
	    {2003, 1, 0, "Carol, sticky Bob's dir: kept"},
	    {2003, 0, 1, "Carol, a directory not sticky: dropped"},
	    {BOB, 1, 1, "Bob, the sticky directory's owner: dropped"},
	    {ALICE, 1, 1, "Alice, its owner: dropped"},
	    {0, 1, 1, "root: dropped"},
	};

	for (i = 0; i < (int)(sizeof(cases) / sizeof(cases[0])); i++) {
		snprintf(key, sizeof(key), "df/w%d", i);
		snprintf(tok, sizeof(tok), "tokU%d", i);
		snprintf(want, sizeof(want), "%s|df/v1|384|2001|", tok);
		ok(sql_ok(raw, "INSERT INTO file_attrs (bucket, object_key,"
			       " mode, uid, gid, ctime, updated_by, etag)"
			       " VALUES ('" BKT "', 'df/v1', 384, 2001, 2001,"
			       " now(), 'a', 'e-v1')") &&
		       db_attrs_defer(d, BKT, "df/v1", key, tok, 60, NULL,
				      "e-v1", NULL, &own, who, NULL) == 0,
		   "unlink %d: Alice's v1 deferred to %s", i, key);
		ok(unlink_as(d, key, cases[i].uid,
			     cases[i].sticky ? &sticky : &open, &dropped,
			     &kept) == 0 &&
		       dropped == cases[i].drops && kept == !cases[i].drops &&
		       pending_is(raw, key, cases[i].drops ? "" : want) &&
		       log_is(raw, key,
			      cases[i].drops ? "drop||384|2001|" : "") &&
		       db_attrs_defer_has(d, BKT, tok) == !cases[i].drops,
		   "unlink %d: %s", i, cases[i].what);
		if (cases[i].drops)
			continue;
		ok(db_attrs_claim(d, BKT, key, &cin, "other:2:1.0#9", 60, 1,
				  NULL, who, NULL, &held) == -EEXIST &&
		       held.pending && held.live,
		   "unlink %d: a create at %s still fails (pending)", i, key);
		db_claim_free(&held);
		ok(db_attrs_unpend(d, BKT, key, tok) == 0 &&
		       pending_is(raw, key, ""),
		   "unlink %d: unpended", i);
	}
	ok(sql_ok(raw,
		  "INSERT INTO file_attrs_pending (bucket, object_key,"
		  " token, mode, uid, gid, ctime, updated_by,"
		  " pending_until) VALUES ('" BKT "', 'df/wl', 'tokL', 384,"
		  " 2001, 2001, now(), 'a', now() - interval '1 second')") &&
	       unlink_as(d, "df/wl", BOB, &sticky, &dropped, &kept) == 0 &&
	       dropped == 0 && kept == 0 &&
	       pending_is(raw, "df/wl", "tokL||384|2001|") &&
	       log_is(raw, "df/wl", "") &&
	       db_attrs_defer_has(d, BKT, "tokL") == 1,
	   "a lapsed pending row: no open file's, not the unlink's");
	ok(sql_ok(raw, "DELETE FROM file_attrs_pending WHERE bucket = '" BKT
		       "' AND object_key = 'df/wl'"),
	   "cleaned up");
	/* review n19 Y1: once its close's upload is in flight
	 * (db_attrs_defer_has), an unlink marks its row, never drops it: it
	 * holds the name until that close (its record refuses the upload),
	 * whose next read finds it gone. */
	ok(sql_ok(raw, "INSERT INTO file_attrs (bucket, object_key,"
		       " mode, uid, gid, ctime, updated_by, etag)"
		       " VALUES ('" BKT "', 'df/v1', 384, 2001, 2001,"
		       " now(), 'a', 'e-v1')") &&
	       db_attrs_defer(d, BKT, "df/v1", "df/wu", "tokF", 60, NULL,
			      "e-v1", NULL, &own, who, NULL) == 0 &&
	       db_attrs_defer_has(d, BKT, "tokF") == 1,
	   "in flight: Alice's v1 deferred to df/wu, its close uploading");
	ok(unlink_as(d, "df/wu", 2003, &open, &dropped, &kept) == 0 &&
	       dropped == 1 && kept == 0 &&
	       pending_is(raw, "df/wu", "tokF|df/v1|384|2001|") &&
	       log_is(raw, "df/wu", "drop||384|2001|"),
	   "in flight: unlinked, its row marked (logged 'drop'), not gone");
	ok(db_attrs_claim(d, BKT, "df/wu", &cin, "other:2:1.0#9", 60, 1, NULL,
			  who, NULL, &held) == -EEXIST &&
	       held.pending && held.live,
	   "in flight: a create at df/wu fails until its close");
	db_claim_free(&held);
	ok(db_attrs_defer_has(d, BKT, "tokF") == 0 &&
	       pending_is(raw, "df/wu", ""),
	   "in flight: its close's next read finds it gone, the row goes");
}

/* review-h5 N2: a deferred publish's pending row describes only the
 * object its upload makes (its tag, db_attrs_pend_tag), never another
 * object that arrives at its key, and none while its file is open. */
static void test_attrs_defer_tag(struct db *d, PGconn *raw,
				 const struct actor *who)
{
	struct db_attrs in = {.what = DB_ATTR_MODE | DB_ATTR_OWNER,
			      .mode = 0640,
			      .uid = ALICE,
			      .gid = ALICE};
	struct db_attrs row = {0};
	struct db_claim held = {0};
	int found = -1, need = -1;

	ok(sql_ok(raw, "INSERT INTO file_attrs (bucket, object_key, mode, uid,"
		       " gid, ctime, updated_by, etag) VALUES ('" BKT
		       "', 'df/g', 384, 2002, 2002, now(), 'b', 'e-g')") &&
	       db_attrs_claim(d, BKT, "df/f", &in, "me:1:1.0#9", 60, 1, NULL,
			      who, NULL, &held) == 0,
	   "tag: Bob's g (0600); Alice's new f (0640) claimed");
	db_claim_free(&held);
	ok(db_attrs_defer(d, BKT, "df/f", "df/g", "tok9", 60, "me:1:1.0#9",
			  NULL, NULL, &in, who, NULL) == 0 &&
	       sql_long(raw, "SELECT cardinality(upload_tags) FROM"
			     " file_attrs_pending WHERE bucket = '" BKT "'"
			     " AND token = 'tok9'") == 0,
	   "tag: f over g deferred (tok9), tied to no upload yet");
	ok(db_attrs_get_pending(d, BKT, "df/g", "e-new", NULL, &row, &found,
				&need) == 0 &&
	       !found && !need,
	   "tag: its file open, an object arriving at g is not its (no HEAD "
	   "asked for)");
	ok(db_attrs_defer_has(d, BKT, "tok9") == 1 &&
	       db_attrs_pend_tag(d, BKT, "tok9", "T1") == 0 &&
	       db_attrs_pend_tag(d, BKT, "tok9", "T2") == 0 &&
	       db_attrs_pend_tag(d, BKT, "tok9", "T2") == 0 &&
	       sql_long(raw, "SELECT count(*) FROM file_attrs_pending"
			     " WHERE bucket = '" BKT "' AND token = 'tok9'"
			     " AND upload_tags = '{T1,T2}'") == 1,
	   "tag: its close's uploads tie it to T1 then T2 (each once)");
	ok(db_attrs_pend_tag(d, BKT, "tok9", "") == -EINVAL,
	   "tag: an empty tag: EINVAL");
	ok(db_attrs_get_pending(d, BKT, "df/g", "e-new", NULL, &row, &found,
				&need) == 0 &&
	       !found && need,
	   "tag: the object's tag not read: asked for");
	ok(db_attrs_get_pending(d, BKT, "df/g", "e-new", "T9", &row, &found,
				&need) == 0 &&
	       !found && !need &&
	       db_attrs_get_pending(d, BKT, "df/g", "e-new", "", &row, &found,
				    &need) == 0 &&
	       !found && !need,
	   "tag: an object with another tag, or none: not its");
	ok(db_attrs_get_pending(d, BKT, "df/g", "e-new", "T1", &row, &found,
				&need) == 0 &&
	       found && row.mode == 0640 && row.uid == ALICE && !row.etag,
	   "tag: the object of its first upload (T1): its attributes");
	db_attrs_free_row(&row);
	ok(db_attrs_get_pending(d, BKT, "df/g", "e-new", "T2", &row, &found,
				&need) == 0 &&
	       found && row.mode == 0640,
	   "tag: ... and of its second (T2)");
	db_attrs_free_row(&row);
	ok(db_attrs_get_pending(d, BKT, "df/g", "e-g", "T1", &row, &found,
				NULL) == 0 &&
	       found,
	   "tag: (an ETag never recorded, a live row: its tag decides)");
	db_attrs_free_row(&row);
	ok(sql_ok(raw, "DELETE FROM file_attrs_pending WHERE bucket = '" BKT
		       "' AND token = 'tok9'"),
	   "tag: cleaned up");
}

void test_attrs_defer(struct db *d, PGconn *raw)
{
	struct db_attrs in = {.what = DB_ATTR_MODE | DB_ATTR_OWNER,
			      .mode = 0644,
			      .uid = ALICE,
			      .gid = ALICE};
	struct db_attrs chmod = {
	    .what = DB_ATTR_MODE, .mode = 0640, .uid = ALICE, .gid = ALICE};
	struct db_claim held = {0};
	struct actor who = {.uid = ALICE};
	const char *tokens[1] = {"tok1"};

	snprintf(who.user, sizeof(who.user), "alice");
	snprintf(who.host, sizeof(who.host), "test");
	ok(db_set_claimer(d, "me:1:1.0") == 0, "claimer me:1:1.0");
	ok(sql_ok(raw, "INSERT INTO file_attrs (bucket, object_key, mode, uid,"
		       " gid, ctime, updated_by, etag) VALUES ('" BKT
		       "', 'df/y', 384, 2002, 2002, now(), 'b', 'e-y')"),
	   "Bob's y, 0600, bound to e-y");
	ok(db_attrs_claim(d, BKT, "df/x", &in, "me:1:1.0#1", 60, 1, NULL, &who,
			  NULL, &held) == 0,
	   "Alice's new x, 0644, claimed (me:1:1.0#1)");
	db_claim_free(&held);
	ok(db_attrs_claim(d, BKT, "df/w", &in, "other:2:1.0#1", 60, 1, NULL,
			  &who, NULL, &held) == 0,
	   "another mount's new w, claimed (other:2:1.0#1)");
	db_claim_free(&held);

	ok(db_attrs_defer(d, BKT, "df/x", "df/w", "tok0", 60, "me:1:1.0#1",
			  NULL, NULL, &in, &who, NULL) == -EBUSY,
	   "x over w (another mount's live claim): EBUSY");
	ok(row_is(raw, "df/x", "420|2001|2001||me:1:1.0#1") &&
	       pending_is(raw, "df/w", "") &&
	       row_is(raw, "df/w", "420|2001|2001||other:2:1.0#1"),
	   "... nothing changed");

	ok(db_attrs_defer(d, BKT, "df/x", "df/y", "tok1", 60, "me:1:1.0#1",
			  NULL, NULL, &in, &who, NULL) == 0,
	   "x over y (Bob's object): deferred");
	ok(row_is(raw, "df/y", "384|2002|2002|e-y|") &&
	       pending_is(raw, "df/y", "tok1|df/x|420|2001|") &&
	       row_is(raw, "df/x", NULL),
	   "... y keeps Bob's row; x's claim is y's pending row; x is free");
	ok(log_is(raw, "df/y", "") && log_is(raw, "df/x", "create||420|2001|"),
	   "... nothing logged (the publish's move will be)");

	ok(db_attrs_defer_set(d, BKT, "df/y", "tok1", &chmod, "chmod", &who) ==
	       0,
	   "Alice's chmod 0640 of her open file at y");
	ok(row_is(raw, "df/y", "384|2002|2002|e-y|") &&
	       pending_is(raw, "df/y", "tok1|df/x|416|2001|") &&
	       log_is(raw, "df/y", "chmod||416||"),
	   "... her pending row's, logged at y on no object; Bob's row stays");

	ok(sql_ok(raw, "UPDATE file_attrs_pending SET pending_until = now()"
		       " - interval '1 second' WHERE bucket = '" BKT "'") &&
	       db_attrs_defer_renew(d, BKT, tokens, 1, 60) == 0 &&
	       sql_long(raw, "SELECT count(*) FROM file_attrs_pending"
			     " WHERE bucket = '" BKT "'"
			     " AND pending_until > now()") == 1,
	   "renewed: it holds again");

	ok(db_attrs_defer_move(d, BKT, "df/y", "df/z", "tok1") == 0 &&
	       pending_is(raw, "df/y", "") &&
	       pending_is(raw, "df/z", "tok1|df/x|416|2001|"),
	   "the open file renamed on to z: its pending row follows");

	ok(db_attrs_defer_undo(d, BKT, "df/z", "tok1", "df/w", "me:1:1.0#1", 60,
			       1, &who) == -EBUSY &&
	       pending_is(raw, "df/z", "tok1|df/x|416|2001|"),
	   "undone onto w (another mount's live claim): EBUSY, kept");
	ok(db_attrs_defer_undo(d, BKT, "df/z", "tok1", "df/t~", "me:1:1.0#1",
			       60, 1, &who) == 0,
	   "undone onto t~ (a temp name)");
	ok(pending_is(raw, "df/z", "") &&
	       row_is(raw, "df/t~", "416|2001|2001||me:1:1.0#1") &&
	       log_is(raw, "df/t~", "move|df/x|416|2001|"),
	   "... its claim there, logged as a move from x");
	ok(db_attrs_defer_undo(d, BKT, "df/z", "tok1", "df/x", "me:1:1.0#1", 60,
			       0, &who) == 0 &&
	       row_is(raw, "df/x", NULL),
	   "no pending row left: nothing done");

	/* review-h5 N1: the name of a deferred publish is taken while its
	 * file is open, as by a live claim. */
	ok(sql_ok(raw, "INSERT INTO file_attrs (bucket, object_key, mode, uid,"
		       " gid, ctime, updated_by, etag) VALUES ('" BKT
		       "', 'df/m', 384, 2002, 2002, now(), 'b', 'e-m')") &&
	       db_attrs_claim(d, BKT, "df/n", &in, "me:1:1.0#2", 60, 1, NULL,
			      &who, NULL, &held) == 0,
	   "Bob's m (0600); Alice's new n claimed (me:1:1.0#2)");
	db_claim_free(&held);
	ok(db_attrs_defer(d, BKT, "df/n", "df/m", "tok2", 60, "me:1:1.0#2",
			  NULL, NULL, &in, &who, NULL) == 0,
	   "n over m: deferred (tok2)");
	ok(db_attrs_drop(d, BKT, "df/m", 0, &who) == 0 &&
	       row_is(raw, "df/m", NULL) &&
	       pending_is(raw, "df/m", "tok2|df/n|420|2001|"),
	   "Bob's unlink of m: his row goes, the open file's pending row "
	   "stays");
	ok(db_attrs_claim(d, BKT, "df/m", &in, "other:2:1.0#2", 60, 1, NULL,
			  &who, NULL, &held) == -EEXIST &&
	       held.found && held.live && held.holder &&
	       !strcmp(held.holder, "tok2") && row_is(raw, "df/m", NULL),
	   "another mount's create of m: EEXIST (the open file's), no row");
	db_claim_free(&held);
	ok(sql_ok(raw, "UPDATE file_attrs_pending SET pending_until = now()"
		       " - interval '1 second' WHERE bucket = '" BKT "'"
		       " AND token = 'tok2'") &&
	       db_attrs_claim(d, BKT, "df/m", &in, "other:2:1.0#2", 60, 1, NULL,
			      &who, NULL, &held) == 0,
	   "its lease over (a crash): the create takes m");
	db_claim_free(&held);

	/* review-h5 N6: a file stored before (no claim) defers as well. */
	ok(sql_ok(raw, "INSERT INTO file_attrs (bucket, object_key, mode, uid,"
		       " gid, ctime, updated_by, etag) VALUES ('" BKT
		       "', 'df/s', 416, 2001, 2001, now(), 'a', 'e-s'), ('" BKT
		       "', 'df/v', 384, 2002, 2002, now(), 'b', 'e-v')"),
	   "Alice's s (0640, bound to e-s), Bob's v (0600)");
	ok(db_attrs_defer(d, BKT, "df/s", "df/v", "tok3", 60, NULL, "e-s", NULL,
			  NULL, &who, NULL) == -EINVAL,
	   "no claim and no attributes: EINVAL");
	chmod.mode = 0640;
	ok(db_attrs_defer(d, BKT, "df/s", "df/v", "tok3", 60, NULL, "e-s", NULL,
			  &chmod, &who, NULL) == 0,
	   "s (no claim, its own object e-s) over v: deferred (tok3)");
	ok(row_is(raw, "df/v", "384|2002|2002|e-v|") &&
	       pending_is(raw, "df/v", "tok3|df/s|416|2001|") &&
	       row_is(raw, "df/s", NULL) &&
	       log_is(raw, "df/s", "drop||416|2001|e-s") &&
	       log_is(raw, "df/v", ""),
	   "... v keeps Bob's row; s's attributes pending; its row dropped");
	ok(db_attrs_defer_undo(d, BKT, "df/v", "tok3", "df/s", NULL, 60, 0,
			       &who) == 0 &&
	       pending_is(raw, "df/v", "") &&
	       row_is(raw, "df/s", "416|2001|2001||"),
	   "undone: its row at s again, unbound, no claim");

	test_attrs_defer_n17(d, raw, &who);
	test_attrs_defer_z34(d, raw, &who);
	test_attrs_defer_unlink(d, raw, &who);
	test_attrs_defer_tag(d, raw, &who);
	ok(db_set_claimer(d, NULL) == 0, "no claimer");
}
