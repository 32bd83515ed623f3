/* db_export.c - the audit tables as CSV / JSON Lines, and all-time
 * counts; see db_export.h.
 *
 * One export is one transaction (REPEATABLE READ, READ ONLY) on a pooled
 * connection of the bulk share (db_run_bulk: the exports never hold the
 * pool's last two connections, which the custody path needs): the column list
 * is read from the catalog, then one COPY (SELECT ...) TO STDOUT streams the
 * rows. PostgreSQL does the CSV quoting (FORMAT csv, HEADER); each record's
 * LF becomes CRLF on the way (COPY cannot end records otherwise). For JSON
 * Lines, each row is one row_to_json() value sent through COPY's CSV format
 * with a quote and a delimiter (0x01, 0x02) that JSON text never holds raw (it
 * escapes every control character), so nothing is quoted or escaped on the way:
 * the lines are the JSON texts. Timestamps are formatted by the server (to_char
 * ... AT TIME ZONE 'UTC'), so the session TimeZone does not matter. The only
 * parameter, the project prefix, is passed with set_config() (COPY takes no
 * parameters): never spliced into SQL. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "db_export.h"
#include "db_internal.h"
#include "log.h"

#define DBX_BUF (256 * 1024)
/* Server-side bound on one export (the session's is 30 s). */
#define DBX_SERVER_TIMEOUT "600s"

static const char *const dbx_tables[DBX_N] = {
    [DBX_PROJECTS] = "projects_registry",
    [DBX_RECEPTION] = "reception_audit",
    [DBX_STORAGE] = "storage_audit",
};

const char *db_export_table_name(enum db_export_table t)
{
	return (unsigned)t < DBX_N ? dbx_tables[t] : NULL;
}

/* The select list of a table: every column in table order, quoted
 * (format %I), timestamps as ISO 8601 UTC text under their own name. */
static const char dbx_cols_sql[] =
    "SELECT pg_catalog.string_agg(CASE"
    " WHEN a.atttypid = 'timestamptz'::regtype THEN pg_catalog.format("
    "  'pg_catalog.to_char(%1$I AT TIME ZONE ''UTC'', "
    "''YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'') AS %1$I', a.attname)"
    " WHEN a.atttypid = 'timestamp'::regtype THEN pg_catalog.format("
    "  'pg_catalog.to_char(%1$I, ''YYYY-MM-DD\"T\"HH24:MI:SS.US'') AS %1$I',"
    "  a.attname)"
    " ELSE pg_catalog.format('%I', a.attname) END, ', ' ORDER BY a.attnum)"
    " FROM pg_catalog.pg_attribute a"
    " WHERE a.attrelid = pg_catalog.to_regclass($1::text)"
    "  AND a.attnum > 0 AND NOT a.attisdropped";

struct dbx_arg {
	enum db_export_table t;
	enum db_export_fmt f;
	const char *prefix;
	int fd;
	uint64_t off; /* bytes written */
	char *buf;    /* DBX_BUF bytes */
	size_t used;
};

static int dbx_flush(struct dbx_arg *a)
{
	size_t done = 0;

	while (done < a->used) {
		ssize_t n = pwrite(a->fd, a->buf + done, a->used - done,
				   (off_t)(a->off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (size_t)n;
	}
	a->off += a->used;
	a->used = 0;
	return 0;
}

static int dbx_put(struct dbx_arg *a, const char *p, size_t n)
{
	int rc;

	while (n) {
		size_t k = DBX_BUF - a->used;

		if (k > n)
			k = n;
		memcpy(a->buf + a->used, p, k);
		a->used += k;
		p += k;
		n -= k;
		if (a->used == DBX_BUF && (rc = dbx_flush(a)))
			return rc;
	}
	return 0;
}

static int64_t dbx_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until the server sent something (or timeout_ms of silence) and
 * reads it in. 0, or -EIO (x->lost set; x->timed_out on silence). */
static int dbx_wait(struct pg_ctx *x)
{
	int64_t deadline = dbx_now_ms() + x->timeout_ms;

	for (;;) {
		struct pollfd pfd = {.fd = PQsocket(x->conn), .events = POLLIN};
		int64_t left = deadline - dbx_now_ms();
		int n;

		if (x->timeout_ms && left <= 0) {
			log_error("database: %s: no data in %d ms; dropping "
				  "the connection",
				  x->what, x->timeout_ms);
			x->lost = x->timed_out = 1;
			return -EIO;
		}
		n = poll(&pfd, 1, x->timeout_ms ? (int)left : -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || (n > 0 && !PQconsumeInput(x->conn))) {
			x->lost = 1;
			return -EIO;
		}
		if (n > 0)
			return 0;
	}
}

/* The results left after a COPY or a failed start: the last one's status
 * decides. 0 or -EIO. */
static int dbx_finish(struct pg_ctx *x)
{
	PGresult *r;
	int rc = 0;

	for (;;) {
		while (PQisBusy(x->conn))
			if (dbx_wait(x))
				return -EIO;
		r = PQgetResult(x->conn);
		if (!r)
			break;
		if (PQresultStatus(r) != PGRES_COMMAND_OK &&
		    PQresultStatus(r) != PGRES_TUPLES_OK) {
			const char *st =
			    PQresultErrorField(r, PG_DIAG_SQLSTATE);

			char why[512];

			if (PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY))
				snprintf(why, sizeof(why), "%s",
					 PQresultErrorField(
					     r, PG_DIAG_MESSAGE_PRIMARY));
			else
				pg_conn_error(x->d, x->conn, why, sizeof(why));
			log_error("database: %s failed (%s): %s", x->what,
				  st ? st : "no SQLSTATE", why);
			rc = -EIO;
		}
		PQclear(r);
	}
	if (PQstatus(x->conn) != CONNECTION_OK)
		x->lost = 1;
	return rc;
}

/* Streams the COPY of sql into a. 0 or -errno. A failure in the middle
 * of the stream leaves the connection unusable: it is dropped. */
static int dbx_copy(struct pg_ctx *x, const char *sql, struct dbx_arg *a)
{
	PGresult *r;
	char *row;
	int n, rc;

	if (!PQsendQueryParams(x->conn, sql, 0, NULL, NULL, NULL, NULL, 0)) {
		x->lost = PQstatus(x->conn) != CONNECTION_OK;
		log_error("database: %s: cannot send", x->what);
		return -EIO;
	}
	while (PQisBusy(x->conn))
		if (dbx_wait(x))
			return -EIO;
	r = PQgetResult(x->conn);
	if (!r || PQresultStatus(r) != PGRES_COPY_OUT) {
		const char *m =
		    r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;

		char why[512];

		if (m)
			snprintf(why, sizeof(why), "%s", m);
		else
			pg_conn_error(x->d, x->conn, why, sizeof(why));
		log_error("database: %s failed: %s", x->what, why);
		PQclear(r);
		dbx_finish(x);
		return -EIO;
	}
	PQclear(r);
	for (;;) {
		n = PQgetCopyData(x->conn, &row, 1);
		if (n > 0) {
			/* One call, one whole row (libpq), ending in the
			 * record's LF: a CSV record ends in CRLF (RFC 4180
			 * §2.1), a line break inside a quoted field stays as
			 * the data has it. */
			int crlf = a->f == DBX_CSV && row[n - 1] == '\n';

			rc = dbx_put(a, row, (size_t)n - (size_t)crlf);
			if (!rc && crlf)
				rc = dbx_put(a, "\r\n", 2);
			PQfreemem(row);
			if (rc)
				goto drop;
			continue;
		}
		if (n == 0) {
			if (dbx_wait(x))
				return -EIO;
			continue;
		}
		if (n == -1)
			break;
		char why[512];

		pg_conn_error(x->d, x->conn, why, sizeof(why));
		log_error("database: %s: %s", x->what, why);
		rc = -EIO;
		goto drop;
	}
	rc = dbx_finish(x);
	if (!rc)
		rc = dbx_flush(a);
	return rc;

drop:
	/* Mid-stream: the rest of the COPY is never read; the connection is
	 * closed rather than drained. */
	x->lost = x->timed_out = 1;
	return rc;
}

static int dbx_op(struct pg_ctx *x, void *arg)
{
	struct dbx_arg *a = arg;
	const char *tbl = dbx_tables[a->t];
	const char *p2[2] = {a->prefix ? a->prefix : "", DBX_SERVER_TIMEOUT};
	const char *p1[1] = {tbl};
	const char *where =
	    a->prefix ? " WHERE project_prefix = "
			"pg_catalog.current_setting('custodyfs.export_prefix')"
		      : "";
	PGresult *res = NULL;
	char *sql = NULL;
	int rc;

	a->off = 0;
	a->used = 0;
	if (ftruncate(a->fd, 0))
		return -errno;
	rc = pg_exec(x,
		     "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, "
		     "READ ONLY",
		     0, NULL, NULL);
	if (!rc)
		rc = pg_exec(x,
			     "SELECT pg_catalog.set_config("
			     "'custodyfs.export_prefix', $1::text, true), "
			     "pg_catalog.set_config('statement_timeout', "
			     "$2::text, true)",
			     2, p2, NULL);
	if (!rc)
		rc = pg_exec(x, dbx_cols_sql, 1, p1, &res);
	if (rc)
		return rc;
	if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
		log_error("database: %s: no table %s", x->what, tbl);
		rc = -EIO;
		goto out;
	}
	if (a->f == DBX_CSV)
		rc = asprintf(&sql,
			      "COPY (SELECT %s FROM %s%s ORDER BY id) TO STDOUT"
			      " WITH (FORMAT csv, HEADER true, ENCODING "
			      "'UTF8')",
			      PQgetvalue(res, 0, 0), tbl, where);
	else
		rc = asprintf(&sql,
			      "COPY (SELECT pg_catalog.row_to_json(t) FROM "
			      "(SELECT %s FROM %s%s) t ORDER BY t.id) TO STDOUT"
			      " WITH (FORMAT csv, DELIMITER E'\\x02', QUOTE "
			      "E'\\x01', ENCODING 'UTF8')",
			      PQgetvalue(res, 0, 0), tbl, where);
	if (rc < 0) {
		sql = NULL;
		rc = -ENOMEM;
		goto out;
	}
	rc = dbx_copy(x, sql, a);
out:
	free(sql);
	PQclear(res);
	return rc;
}

int db_export(struct db *d, enum db_export_table t, enum db_export_fmt f,
	      const char *project_prefix, int fd, uint64_t *size)
{
	struct dbx_arg a = {.t = t, .f = f, .prefix = project_prefix, .fd = fd};
	int rc;

	if (!d || (unsigned)t >= DBX_N || fd < 0 ||
	    (project_prefix && t != DBX_STORAGE))
		return -EINVAL;
	a.buf = malloc(DBX_BUF);
	if (!a.buf)
		return -ENOMEM;
	rc = db_run_bulk(d, "audit export", 1, DB_STATEMENT_TIMEOUT_MS, dbx_op,
			 &a);
	free(a.buf);
	if (rc == -EINPROGRESS)
		rc =
		    0; /* a read-only transaction: its COMMIT changes nothing */
	if (!rc && size)
		*size = a.off;
	return rc;
}

struct dbx_exists {
	const char *prefix;
	int found;
};

static int dbx_exists_op(struct pg_ctx *x, void *arg)
{
	struct dbx_exists *e = arg;
	const char *p[1] = {e->prefix};
	PGresult *res;
	int rc;

	rc = pg_exec(x,
		     "SELECT 1 FROM projects_registry WHERE prefix = $1::text "
		     "LIMIT 1",
		     1, p, &res);
	if (rc)
		return rc;
	e->found = PQntuples(res) > 0;
	PQclear(res);
	return 0;
}

int db_export_project_exists(struct db *d, const char *prefix)
{
	struct dbx_exists e = {prefix, 0};
	int rc = db_run(d, "project lookup", 0, 0, dbx_exists_op, &e);

	return rc ? rc : e.found;
}

static int dbx_totals_op(struct pg_ctx *x, void *arg)
{
	struct db_totals *t = arg;
	int64_t *out[] = {
	    &t->received,	    &t->bytes_received, &t->copied,
	    &t->restored,	    &t->adopted,	&t->duplicates_path,
	    &t->duplicates_content, &t->conflicts,	&t->bytes_stored,
	    &t->errors_promotion,   &t->projects};
	PGresult *res;
	size_t i;
	int rc;

	rc = pg_exec(
	    x,
	    "SELECT r.n, r.b, s.copied, s.restored, s.adopted, s.dup, s.dupc,"
	    " s.conf, s.bytes, j.failed, p.n FROM"
	    " (SELECT count(*) n, coalesce(sum(size_bytes), 0)::bigint b"
	    "  FROM reception_audit WHERE origin IS DISTINCT FROM 'rename') r,"
	    " (SELECT count(*) FILTER (WHERE outcome = 'copied') copied,"
	    "  count(*) FILTER (WHERE outcome = 'restored') restored,"
	    "  count(*) FILTER (WHERE outcome = 'adopted') adopted,"
	    "  count(*) FILTER (WHERE outcome = 'duplicate') dup,"
	    "  count(*) FILTER (WHERE outcome = 'duplicate_content') dupc,"
	    "  count(*) FILTER (WHERE outcome = 'conflict') conf,"
	    "  coalesce(sum(size_bytes) FILTER (WHERE outcome IN ('copied',"
	    "  'restored', 'adopted')), 0)::bigint bytes FROM storage_audit) s,"
	    " (SELECT count(*) failed FROM promotion_journal"
	    "  WHERE state = 'failed') j,"
	    " (SELECT count(*) n FROM projects_registry) p",
	    0, NULL, &res);
	if (rc)
		return rc;
	if (PQntuples(res) != 1 ||
	    PQnfields(res) != (int)(sizeof(out) / sizeof(out[0]))) {
		PQclear(res);
		return -EIO;
	}
	for (i = 0; i < sizeof(out) / sizeof(out[0]); i++)
		*out[i] = strtoll(PQgetvalue(res, 0, (int)i), NULL, 10);
	PQclear(res);
	return 0;
}

int db_export_totals(struct db *d, struct db_totals *t)
{
	memset(t, 0, sizeof(*t));
	return db_run_bulk(d, "audit totals", 0, DB_STATEMENT_TIMEOUT_MS,
			   dbx_totals_op, t);
}
