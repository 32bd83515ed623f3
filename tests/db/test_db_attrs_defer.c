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

	ok(db_attrs_defer(d, BKT, "df/x", "df/w", "tok0", 60, "me:1:1.0#1", &in,
			  &who) == -EBUSY,
	   "x over w (another mount's live claim): EBUSY");
	ok(row_is(raw, "df/x", "420|2001|2001||me:1:1.0#1") &&
	       pending_is(raw, "df/w", "") &&
	       row_is(raw, "df/w", "420|2001|2001||other:2:1.0#1"),
	   "... nothing changed");

	ok(db_attrs_defer(d, BKT, "df/x", "df/y", "tok1", 60, "me:1:1.0#1", &in,
			  &who) == 0,
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
	ok(db_attrs_defer(d, BKT, "df/n", "df/m", "tok2", 60, "me:1:1.0#2", &in,
			  &who) == 0,
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
	ok(db_attrs_defer(d, BKT, "df/s", "df/v", "tok3", 60, NULL, NULL,
			  &who) == -EINVAL,
	   "no claim and no attributes: EINVAL");
	chmod.mode = 0640;
	ok(db_attrs_defer(d, BKT, "df/s", "df/v", "tok3", 60, NULL, &chmod,
			  &who) == 0,
	   "s (no claim) over v: deferred (tok3)");
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
	ok(db_set_claimer(d, NULL) == 0, "no claimer");
}
