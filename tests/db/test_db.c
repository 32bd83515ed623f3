/* test_db.c - common/db.c against a real PostgreSQL (TAP output).
 *
 * CUSTODYFS_TEST_PG is the conninfo of a database whose role may CREATE
 * DATABASE (a superuser, for the append-only checks to mean "even for
 * superusers"). Every check runs in throw-away databases created here and
 * dropped at the end (kept when CUSTODYFS_TEST_KEEP is set).
 *
 * The restart check runs CUSTODYFS_TEST_PG_RESTART (a shell command) when
 * set; otherwise, when the server is local and we are root or its owner,
 * "pg_ctl restart -m fast" on its data directory; otherwise it is skipped.
 * Without CUSTODYFS_TEST_PG the whole test is skipped. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "db.h"
#include "log.h"
#include "sbuf.h"
#include "test_db.h"

#define BUCKET "recepcao-raw"
#define NCHILD 6
#define NTHREAD 8

static int test_n;
static int test_failed;
static const char *base_conninfo;
static PGconn *admin;
static char *created_dbs[16];
static int n_created_dbs;

void ok(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void ok(int cond, const char *fmt, ...)
{
	va_list ap;

	test_n++;
	if (!cond)
		test_failed++;
	printf("%sok %d - ", cond ? "" : "not ", test_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void skip(const char *why)
{
	test_n++;
	printf("ok %d # SKIP %s\n", test_n, why);
	fflush(stdout);
}

void diag(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- raw SQL helpers ------------------------------------------------ */

/* Runs sql; returns "" on success or the SQLSTATE (static buffer). */
static const char *sql_state_p(PGconn *c, const char *sql, int n,
			       const char *const *p)
{
	static char state[8];
	PGresult *res = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(res);
	const char *s;

	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
		state[0] = '\0';
	} else {
		s = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		snprintf(state, sizeof(state), "%s", s ? s : "?????");
	}
	PQclear(res);
	return state;
}

static const char *sql_state(PGconn *c, const char *sql)
{
	return sql_state_p(c, sql, 0, NULL);
}

int sql_ok(PGconn *c, const char *sql)
{
	const char *st = sql_state(c, sql);

	if (*st)
		diag("SQL failed (%s): %s: %s", st, sql, PQerrorMessage(c));
	return !*st;
}

/* First column of the first row, malloc'd; NULL for no row, NULL value or
 * error. */
char *sql_val_p(PGconn *c, const char *sql, int n, const char *const *p)
{
	PGresult *res = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
	char *v = NULL;

	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0 &&
	    !PQgetisnull(res, 0, 0))
		v = strdup(PQgetvalue(res, 0, 0));
	else if (PQresultStatus(res) != PGRES_TUPLES_OK)
		diag("SQL failed: %s: %s", sql, PQerrorMessage(c));
	PQclear(res);
	return v;
}

char *sql_val(PGconn *c, const char *sql)
{
	return sql_val_p(c, sql, 0, NULL);
}

/* Does sql's first value equal want (NULL: is NULL / no row)? */
static int sql_is_p(PGconn *c, const char *sql, const char *want, int n,
		    const char *const *p)
{
	char *v = sql_val_p(c, sql, n, p);
	int same = want ? (v && !strcmp(v, want)) : !v;

	if (!same)
		diag("%s: got %s, want %s", sql, v ? v : "NULL",
		     want ? want : "NULL");
	free(v);
	return same;
}

int sql_is(PGconn *c, const char *sql, const char *want)
{
	return sql_is_p(c, sql, want, 0, NULL);
}

long sql_long(PGconn *c, const char *sql)
{
	char *v = sql_val(c, sql);
	long n = v ? strtol(v, NULL, 10) : -1;

	free(v);
	return n;
}

/* base conninfo with dbname replaced (URIs and key=value alike). */
static char *conninfo_for(const char *dbname)
{
	PQconninfoOption *opts, *o;
	struct sbuf b = SBUF_INIT;
	char *errmsg = NULL;
	const char *s;

	opts = PQconninfoParse(base_conninfo, &errmsg);
	if (!opts) {
		fprintf(stderr, "bad CUSTODYFS_TEST_PG: %s\n",
			errmsg ? errmsg : "?");
		PQfreemem(errmsg);
		exit(1);
	}
	for (o = opts; o->keyword; o++) {
		if (!o->val || !strcmp(o->keyword, "dbname"))
			continue;
		sbuf_addf(&b, "%s='", o->keyword);
		for (s = o->val; *s; s++) {
			if (*s == '\'' || *s == '\\')
				sbuf_addc(&b, '\\');
			sbuf_addc(&b, *s);
		}
		sbuf_adds(&b, "' ");
	}
	sbuf_addf(&b, "dbname='%s'", dbname);
	PQconninfoFree(opts);
	return sbuf_detach(&b);
}

/* Creates a fresh database; returns its conninfo (malloc'd). */
static char *fresh_db(const char *tag, char *name, size_t len)
{
	struct sbuf q = SBUF_INIT;

	snprintf(name, len, "custodyfs_test_%ld_%s", (long)getpid(), tag);
	sbuf_addf(&q, "CREATE DATABASE \"%s\"", name);
	if (!sql_ok(admin, sbuf_str(&q))) {
		fprintf(stderr, "cannot create test database %s\n", name);
		exit(1);
	}
	sbuf_free(&q);
	if (n_created_dbs < 16)
		created_dbs[n_created_dbs++] = strdup(name);
	return conninfo_for(name);
}

static PGconn *raw_connect(const char *conninfo)
{
	PGconn *c = PQconnectdb(conninfo);

	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "raw connect failed: %s", PQerrorMessage(c));
		exit(1);
	}
	return c;
}

static void fill_actor(struct actor *a, uid_t uid, const char *user,
		       const char *host)
{
	memset(a, 0, sizeof(*a));
	a->uid = uid;
	snprintf(a->user, sizeof(a->user), "%s", user);
	snprintf(a->host, sizeof(a->host), "%s", host);
}

struct db *open_or_die(const char *conninfo, int pool)
{
	char err[512];
	struct db *d = db_open(conninfo, pool, err, sizeof(err));

	if (!d) {
		fprintf(stderr, "db_open: %s\n", err);
		exit(1);
	}
	return d;
}

/* ---- checks --------------------------------------------------------- */

static void test_actor(void)
{
	struct actor a;
	char buf[400], small[8];

	fill_actor(&a, 1000, "maria", "ws-01");
	actor_format(&a, buf, sizeof(buf));
	ok(!strcmp(buf, "maria (uid 1000) @ ws-01"), "actor_format: \"%s\"",
	   buf);
	actor_format(&a, small, sizeof(small));
	ok(strlen(small) == sizeof(small) - 1, "actor_format truncates safely");
}

static void test_open_failures(void)
{
	char err[512];
	struct db *d;
	double t0;

	t0 = now_s();
	d = db_open("host=127.0.0.1 port=1 dbname=x user=x password=hunter2", 2,
		    err, sizeof(err));
	ok(!d && err[0], "db_open fails on an unreachable server: %s", err);
	ok(!strstr(err, "hunter2"), "the reason does not leak the password");
	ok(now_s() - t0 < 2.0, "refused connection fails at once");
	db_close(d);

	/* A server that accepts TCP but never answers: the connect_timeout
	 * db_open adds (5 s) bounds the wait. */
	{
		struct sockaddr_in sa = {.sin_family = AF_INET};
		socklen_t sl = sizeof(sa);
		char ci[128];
		int s = socket(AF_INET, SOCK_STREAM, 0);

		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (s < 0 || bind(s, (struct sockaddr *)&sa, sizeof(sa)) ||
		    listen(s, 4) ||
		    getsockname(s, (struct sockaddr *)&sa, &sl)) {
			skip("cannot make a silent listener");
		} else {
			snprintf(ci, sizeof(ci),
				 "host=127.0.0.1 port=%d dbname=x user=x",
				 ntohs(sa.sin_port));
			t0 = now_s();
			d = db_open(ci, 1, err, sizeof(err));
			ok(!d && now_s() - t0 > 3.0 && now_s() - t0 < 9.0,
			   "silent server: fails after the connect timeout "
			   "(%.1fs): %s",
			   now_s() - t0, err);
			db_close(d);
		}
		if (s >= 0)
			close(s);
	}

	d = db_open("postgresql://127.0.0.1:1/x?connect_timeout=1", 1, err,
		    sizeof(err));
	ok(!d && err[0], "URI conninfo accepted and fails cleanly");
	db_close(d);
}

/* SPEC section 5, plus the columns db.h adds. */
static const char *const contract_columns[][2] = {
    {"projects_registry", "id prefix name created_at created_by"},
    {"reception_audit",
     "id source_bucket file_name object_key size_bytes uploaded_at xxh128 "
     "sha256 received_by removed_at removal_reason etag origin "
     "received_uid received_user received_host"},
    {"storage_audit",
     "id project_prefix project_name dest_bucket dest_key size_bytes "
     "moved_at source_bucket source_key reception_id outcome duplicate_of "
     "xxh128 sha256 moved_by moved_uid moved_user moved_host removed_at "
     "removal_reason"},
};

/* 1 when every listed column exists (names the missing ones). */
static int has_contract_columns(PGconn *c)
{
	size_t i;
	int missing = 0;

	for (i = 0; i < sizeof(contract_columns) / sizeof(contract_columns[0]);
	     i++) {
		const char *p[2] = {contract_columns[i][0],
				    contract_columns[i][1]};
		char *v = sql_val_p(c,
				    "SELECT string_agg(w, ' ') FROM"
				    " regexp_split_to_table($2::text, ' ') w"
				    " WHERE NOT EXISTS (SELECT 1 FROM"
				    " information_schema.columns WHERE"
				    " table_schema = current_schema() AND"
				    " table_name = $1::text AND"
				    " column_name = w)",
				    2, p);

		if (v) {
			diag("%s lacks: %s", p[0], v);
			missing++;
		}
		free(v);
	}
	return !missing;
}

/* The migrations db_migrate applies (common/db_migrate.c): one place
 * (16 is another branch's). */
#define DB_VERSIONS "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18"
#define DB_NVERSIONS "18"

static int count_triggers(PGconn *c)
{
	return (int)sql_long(
	    c, "SELECT count(*) FROM pg_trigger WHERE"
	       " tgname LIKE 'custodyfs\\_%' AND tgenabled = 'A'");
}

static void test_migrate_fresh(const char *conninfo, PGconn *raw)
{
	struct db *d = open_or_die(conninfo, 2);

	ok(db_ping(d) == 0, "db_ping on a fresh database");
	ok(db_migrate(d) == 0, "migrate an empty database");
	ok(sql_is(raw,
		  "SELECT string_agg(version::text, ',' ORDER BY version) FROM "
		  "schema_migrations",
		  DB_VERSIONS),
	   "schema_migrations holds versions " DB_VERSIONS);
	ok(has_contract_columns(raw), "every column of SPEC section 5 exists");
	ok(count_triggers(raw) == 17, "append-only triggers installed, "
				      "enabled ALWAYS");
	ok(sql_is(raw,
		  "SELECT indisunique FROM pg_index WHERE indexrelid ="
		  " to_regclass('reception_audit_live_key')",
		  "t"),
	   "unique partial index on live (source_bucket, object_key)");
	ok(sql_is(raw,
		  "SELECT count(*) FROM pg_index i JOIN pg_class c ON"
		  " c.oid = i.indexrelid WHERE i.indrelid ="
		  " 'projects_registry'::regclass AND i.indisunique AND"
		  " c.relname = 'projects_registry_prefix_key'",
		  "1"),
	   "projects_registry.prefix unique");

	ok(db_migrate(d) == 0, "migrate again (same handle)");
	db_close(d);
	d = open_or_die(conninfo, 1);
	ok(db_migrate(d) == 0, "migrate again (new handle)");
	db_close(d);
	ok(sql_is(raw, "SELECT count(*) FROM schema_migrations", DB_NVERSIONS),
	   "still one schema_migrations row per version");
	ok(count_triggers(raw) == 17, "still seventeen triggers");
}

static void test_migrate_concurrent(const char *conninfo, PGconn *raw)
{
	pid_t pids[NCHILD];
	int i, status, good = 0;

	fflush(stdout);
	fflush(stderr);
	for (i = 0; i < NCHILD; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			char err[512];
			struct db *d = db_open(conninfo, 1, err, sizeof(err));
			int rc;

			if (!d)
				_exit(2);
			rc = db_migrate(d);
			db_close(d);
			_exit(rc ? 1 : 0);
		}
	}
	for (i = 0; i < NCHILD; i++) {
		if (pids[i] > 0 && waitpid(pids[i], &status, 0) == pids[i] &&
		    WIFEXITED(status) && WEXITSTATUS(status) == 0)
			good++;
	}
	ok(good == NCHILD,
	   "%d processes migrate a fresh database at once "
	   "(%d succeeded)",
	   NCHILD, good);
	ok(sql_is(raw, "SELECT count(*) FROM schema_migrations", DB_NVERSIONS),
	   "one schema_migrations row per version after the race");
	ok(count_triggers(raw) == 17, "triggers installed once");
	ok(has_contract_columns(raw), "all columns after the race");
}

static const char seed_digest_sql[] =
    "SELECT md5(string_agg(concat_ws('|', id, source_bucket, file_name,"
    " object_key, size_bytes, uploaded_at), ';' ORDER BY id))"
    " || md5((SELECT string_agg(concat_ws('|', id, prefix, name), ';'"
    "  ORDER BY id) FROM projects_registry))"
    " || md5((SELECT string_agg(concat_ws('|', id, project_prefix,"
    "  project_name, dest_key, size_bytes, moved_at, source_bucket), ';'"
    "  ORDER BY id) FROM storage_audit))"
    " FROM reception_audit";

/* The seed notebook's shapes: varchar, int sizes, timestamps without
 * time zone, no hashes, and (dups) the same key logged twice. */
static void make_seed(PGconn *raw, int dups)
{
	sql_ok(raw, "CREATE TABLE reception_audit (id serial PRIMARY KEY,"
		    " source_bucket varchar(255), file_name varchar(255),"
		    " object_key varchar(512), size_bytes integer,"
		    " uploaded_at timestamp DEFAULT now())");
	sql_ok(raw, "CREATE TABLE projects_registry (id serial PRIMARY KEY,"
		    " prefix varchar(100) UNIQUE NOT NULL, name varchar(255))");
	sql_ok(raw, "CREATE TABLE storage_audit (id serial PRIMARY KEY,"
		    " project_prefix varchar(100), project_name varchar(255),"
		    " dest_key text, size_bytes bigint,"
		    " moved_at timestamp DEFAULT now(), source_bucket text)");
	sql_ok(raw, "INSERT INTO reception_audit (source_bucket, file_name,"
		    " object_key, size_bytes, uploaded_at) VALUES"
		    " ('recepcao-raw', 'a.pdf', 'lote1/a.pdf', 1234,"
		    "  '2024-03-01 10:00:00'),"
		    " ('recepcao-raw', 'b.tif', 'lote1/b.tif', 99,"
		    "  '2024-03-01 10:00:01')");
	if (dups)
		sql_ok(raw, "INSERT INTO reception_audit (source_bucket,"
			    " file_name, object_key, size_bytes) VALUES"
			    " ('recepcao-raw', 'a.pdf', 'lote1/a.pdf', 1234)");
	sql_ok(raw, "INSERT INTO projects_registry (prefix, name) VALUES"
		    " ('proj-a', 'Projeto A')");
	sql_ok(raw,
	       "INSERT INTO storage_audit (project_prefix, project_name,"
	       " dest_key, size_bytes, source_bucket) VALUES ('proj-a',"
	       " 'Projeto A', 'proj-a/lote1/a.pdf', 1234, 'recepcao-raw')");
}

static void test_adopt_seed(const char *conninfo, PGconn *raw, int dups)
{
	struct db *d;
	char *before, *after;

	make_seed(raw, dups);
	before = sql_val(raw, seed_digest_sql);
	d = open_or_die(conninfo, 2);
	ok(db_migrate(d) == 0, "migrate adopts seed tables%s",
	   dups ? " with duplicate live keys" : "");
	after = sql_val(raw, seed_digest_sql);
	ok(before && after && !strcmp(before, after),
	   "seed rows intact (ids, keys, sizes, timestamps)");
	free(before);
	free(after);
	ok(has_contract_columns(raw), "seed tables got every contract column");
	ok(sql_is(raw,
		  "SELECT count(*) FROM reception_audit WHERE"
		  " removed_at IS NULL AND sha256 IS NULL AND"
		  " received_by IS NULL",
		  dups ? "3" : "2"),
	   "seed rows stay live, without hashes or received_by");
	ok(sql_is(raw,
		  "SELECT count(*) FROM projects_registry WHERE"
		  " created_at IS NULL",
		  "1"),
	   "old project rows do not get the migration time as created_at");
	ok(sql_is(raw,
		  "SELECT format_type(atttypid, atttypmod) FROM"
		  " pg_attribute WHERE attrelid ="
		  " 'reception_audit'::regclass AND attname = "
		  "'size_bytes'",
		  "bigint"),
	   "integer size_bytes widened to bigint");
	ok(sql_is(raw,
		  "SELECT format_type(atttypid, atttypmod) FROM"
		  " pg_attribute WHERE attrelid ="
		  " 'reception_audit'::regclass AND attname = "
		  "'object_key'",
		  "text"),
	   "varchar(n) columns widened to text");
	if (dups) {
		ok(sql_is(raw,
			  "SELECT to_regclass("
			  "'reception_audit_live_key_nonunique') IS NOT"
			  " NULL AND to_regclass("
			  "'reception_audit_live_key') IS NULL",
			  "t"),
		   "duplicates: plain index instead of the unique one");
	} else {
		ok(sql_is(raw,
			  "SELECT to_regclass('reception_audit_live_key')"
			  " IS NOT NULL",
			  "t"),
		   "no duplicates: unique live-key index created");
	}
	ok(sql_is(raw,
		  "SELECT count(*) FROM pg_index WHERE indrelid ="
		  " 'projects_registry'::regclass AND indisunique AND"
		  " indexrelid <> (SELECT conindid FROM pg_constraint"
		  " WHERE conrelid = 'projects_registry'::regclass AND"
		  " contype = 'p') AND indexrelid <>"
		  " 'projects_registry_chain_seq'::regclass",
		  "1"),
	   "the seed's UNIQUE(prefix) reused, no second unique index");
	ok(count_triggers(raw) == 17, "append-only triggers on seed tables");

	if (dups) {
		struct reception_new r = {
		    .source_bucket = "recepcao-raw",
		    .object_key = "lote1/a.pdf",
		    .size = 1234,
		    .etag = "e-new",
		    .origin = "foreign",
		};
		int64_t id = 0;
		int ins = -1;

		ok(db_reception_record(d, &r, "replaced", &id, &ins) == 0 &&
		       ins == 0,
		   "duplicate seed rows (NULL etag, same size) match an "
		   "observer's record");
		r.origin = "mount";
		ok(db_reception_record(d, &r, "replaced", &id, &ins) == 0 &&
		       ins == 1,
		   "a mount's upload over duplicate seed rows gets its row");
		ok(sql_is(raw,
			  "SELECT count(*) FROM reception_audit WHERE"
			  " object_key = 'lote1/a.pdf' AND removed_at IS NULL",
			  "1"),
		   "both seed rows retired, one live row");
	}
	db_close(d);
}

static void test_adopt_minimal_projects(const char *conninfo, PGconn *raw)
{
	struct db *d;

	sql_ok(raw, "CREATE TABLE projects_registry (prefix text, name text)");
	sql_ok(raw, "INSERT INTO projects_registry VALUES ('p1', 'Um'),"
		    " ('p2', 'Dois')");
	d = open_or_die(conninfo, 1);
	ok(db_migrate(d) == 0, "migrate a projects_registry with only prefix "
			       "and name");
	ok(sql_is(raw,
		  "SELECT string_agg(id || ':' || prefix || ':' || name,"
		  " ',' ORDER BY id) FROM projects_registry",
		  "1:p1:Um,2:p2:Dois"),
	   "ids added, rows kept");
	db_close(d);
}

static void test_record(struct db *d, PGconn *raw)
{
	struct actor who;
	struct reception_new r = {
	    .source_bucket = BUCKET,
	    .object_key = "docs/report.pdf",
	    .file_name = "report.pdf",
	    .size = 5000000000ULL,
	    .xxh128 = "0123456789abcdef0123456789abcdef",
	    .sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495"
		      "991b7852b855",
	    .etag = "etag-1",
	    .origin = "mount",
	};
	int64_t id1 = 0, id2 = 0, id3 = 0;
	int ins = -1, rc;
	char idbuf[24];
	const char *p[1] = {idbuf};

	fill_actor(&who, 1000, "maria", "ws-01");
	r.who = &who;
	rc = db_reception_record(d, &r, "overwritten", &id1, &ins);
	ok(rc == 0 && ins == 1 && id1 > 0,
	   "record a new upload (id %" PRId64 ")", id1);
	snprintf(idbuf, sizeof(idbuf), "%" PRId64, id1);
	ok(sql_is_p(raw,
		    "SELECT concat_ws('|', source_bucket, file_name,"
		    " object_key, size_bytes, xxh128, sha256, etag, origin,"
		    " received_by, received_uid, received_user,"
		    " received_host, removed_at IS NULL,"
		    " uploaded_at IS NOT NULL)"
		    " FROM reception_audit WHERE id = $1::bigint",
		    BUCKET "|report.pdf|docs/report.pdf|5000000000|"
			   "0123456789abcdef0123456789abcdef|"
			   "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca4"
			   "95991b7852b855|etag-1|mount|maria (uid 1000) @ "
			   "ws-01|1000|maria|ws-01|t|t",
		    1, p),
	   "row holds every field, actor split in columns, size > 4 GiB");

	ok(db_reception_record(d, &r, "overwritten", &id2, &ins) == 0 &&
	       ins == 1 && id2 != id1,
	   "mount, same etag: a distinct upload (same bytes again), new row");
	r.origin = "foreign";
	r.who = NULL;
	ok(db_reception_record(d, &r, "overwritten", &id3, &ins) == 0 &&
	       ins == 0 && id3 == id2,
	   "observer, same etag and size: nothing inserted, same id");
	ok(db_reception_record(d, &r, "overwritten", NULL, NULL) == 0,
	   "id_out and inserted may be NULL");
	r.origin = "mount";
	r.who = &who;

	r.etag = "etag-2";
	r.size = 10;
	ok(db_reception_record(d, &r, "overwritten", &id3, &ins) == 0 &&
	       ins == 1 && id3 != id1,
	   "different etag: new row");
	ok(sql_is_p(raw,
		    "SELECT removal_reason FROM reception_audit WHERE"
		    " id = $1::bigint AND removed_at IS NOT NULL",
		    "overwritten", 1, p),
	   "replaced row got removed_at and the reason");
	ok(sql_is(raw,
		  "SELECT count(*) FROM reception_audit WHERE object_key"
		  " = 'docs/report.pdf' AND removed_at IS NULL",
		  "1"),
	   "one live row for the key");

	/* A row written by another tool, without etag. */
	sql_ok(raw, "INSERT INTO reception_audit (source_bucket, file_name,"
		    " object_key, size_bytes) VALUES ('" BUCKET "', 'x.bin',"
		    " 'tool/x.bin', 3)");
	sql_ok(raw, "INSERT INTO reception_audit (source_bucket, file_name,"
		    " object_key, size_bytes) VALUES ('" BUCKET "', 'z.bin',"
		    " 'tool/z.bin', 10)");
	r.object_key = "tool/z.bin";
	r.file_name = NULL;
	r.etag = "etag-z";
	r.origin = "foreign";
	ok(db_reception_record(d, &r, "overwritten", &id2, &ins) == 0 &&
	       ins == 0 &&
	       id2 == sql_long(raw, "SELECT id FROM reception_audit WHERE"
				    " object_key = 'tool/z.bin'"),
	   "observer, live row with NULL etag and the same size: matches, "
	   "nothing inserted");
	r.object_key = "tool/x.bin";
	r.etag = "etag-x";
	ok(db_reception_record(d, &r, "overwritten", &id2, &ins) == 0 &&
	       ins == 1,
	   "observer, live row with NULL etag and another size: replaced");
	r.object_key = "tool/z.bin";
	r.origin = "mount";
	ok(db_reception_record(d, &r, "overwritten", &id3, &ins) == 0 &&
	       ins == 1 && id3 != id2,
	   "mount over a live row with NULL etag (seed): its own row");
	ok(sql_is(raw,
		  "SELECT count(*) || '/' || count(removed_at) FROM"
		  " reception_audit WHERE object_key IN ('tool/x.bin',"
		  " 'tool/z.bin')",
		  "4/2"),
	   "both NULL-etag rows retired, one live row per key");

	r.object_key = "a/b/noetag.txt";
	r.etag = "known";
	db_reception_record(d, &r, "overwritten", &id1, &ins);
	r.etag = NULL;
	ok(db_reception_record(d, &r, "rewritten", &id2, &ins) == 0 &&
	       ins == 1 && id2 != id1,
	   "unknown (NULL) new etag against a known one: new row");
	ok(sql_is(raw,
		  "SELECT file_name FROM reception_audit WHERE"
		  " object_key = 'a/b/noetag.txt' AND removed_at IS NULL",
		  "noetag.txt"),
	   "file_name defaults to the last component");
	r.etag = "other";
	r.origin = "foreign";
	ok(db_reception_record(d, &r, "rewritten", &id3, &ins) == 0 &&
	       ins == 0 && id3 == id2,
	   "then a row with NULL etag matches an observer's any etag");
	r.origin = "mount";

	r.object_key = "foreign/y.bin";
	r.etag = "f1";
	r.origin = "foreign";
	r.who = NULL;
	r.xxh128 = r.sha256 = NULL;
	ok(db_reception_record(d, &r, NULL, &id1, &ins) == 0 && ins == 1,
	   "foreign upload without actor or hashes");
	ok(sql_is(raw,
		  "SELECT concat_ws('|', received_by, received_uid,"
		  " sha256, origin) FROM reception_audit WHERE"
		  " object_key = 'foreign/y.bin'",
		  "foreign"),
	   "actor and hash columns NULL");

	r.size = UINT64_MAX;
	ok(db_reception_record(d, &r, NULL, &id1, &ins) == -EFBIG,
	   "size beyond bigint refused with EFBIG");
}

static void test_injection(struct db *d, PGconn *raw)
{
	static const char evil[] = "'; DROP TABLE storage_audit; --.pdf";
	static const char evil2[] = "x\\'); DELETE FROM reception_audit; --";
	struct reception_new r = {
	    .source_bucket = BUCKET,
	    .object_key = evil,
	    .size = 1,
	    .etag = "e",
	    .origin = "mount",
	};
	struct reception_live *rows = NULL;
	const char *p[1] = {evil};
	size_t n = 0;
	int ins = 0;

	ok(db_reception_record(d, &r, NULL, NULL, &ins) == 0 && ins == 1,
	   "record key \"%s\"", evil);
	ok(sql_is_p(raw,
		    "SELECT file_name FROM reception_audit WHERE"
		    " object_key = $1::text",
		    evil, 1, p),
	   "stored literally");
	ok(sql_is(raw, "SELECT to_regclass('storage_audit') IS NOT NULL", "t"),
	   "storage_audit still exists");
	ok(db_reception_live(d, BUCKET, evil, 0, &rows, &n) == 0 && n == 1 &&
	       !strcmp(rows[0].object_key, evil),
	   "found again by prefix");
	db_reception_live_free(rows, n);
	r.object_key = evil2;
	ok(db_reception_record(d, &r, "it's \"replaced\"", NULL, &ins) == 0 &&
	       ins == 1,
	   "backslash-quote key recorded");
	ok(db_reception_rename(d, BUCKET, evil2, "ren/'\"\\%_", "e", 1, NULL) ==
	       0,
	   "and renamed to a key full of metacharacters");
	p[0] = evil2;
	ok(sql_is_p(raw,
		    "SELECT removal_reason FROM reception_audit WHERE"
		    " object_key = $1::text",
		    "renamed to ren/'\"\\%_", 1, p),
	   "reason holds the new key literally");
}

static void test_rename(struct db *d, PGconn *raw)
{
	struct actor who;
	struct reception_new r = {
	    .source_bucket = BUCKET,
	    .object_key = "in/old.docx",
	    .size = 42,
	    .xxh128 = "aaaabbbbccccddddaaaabbbbccccdddd",
	    .sha256 = "1111111111111111111111111111111111111111111111111111"
		      "111111111111",
	    .etag = "e-old",
	    .origin = "mount",
	};
	int ins;

	fill_actor(&who, 1001, "joao", "ws-02");
	r.who = &who;
	db_reception_record(d, &r, NULL, NULL, &ins);
	/* A single-part copy's ETag is its source's: the row logs it. */
	ok(db_reception_rename(d, BUCKET, "in/old.docx", "in/new.docx", "e-old",
			       42, &who) == 0,
	   "rename a received object");
	ok(sql_is(raw,
		  "SELECT removal_reason FROM reception_audit WHERE"
		  " object_key = 'in/old.docx' AND removed_at IS NOT"
		  " NULL",
		  "renamed to in/new.docx"),
	   "old row removed as \"renamed to ...\"");
	ok(sql_is(raw,
		  "SELECT count(*) FROM reception_audit WHERE"
		  " object_key = 'in/old.docx' AND removed_at IS NULL",
		  "0"),
	   "old key has no live row");
	ok(sql_is(raw,
		  "SELECT concat_ws('|', file_name, size_bytes, xxh128,"
		  " sha256, etag, origin, received_by) FROM"
		  " reception_audit WHERE object_key = 'in/new.docx' AND"
		  " removed_at IS NULL",
		  "new.docx|42|aaaabbbbccccddddaaaabbbbccccdddd|"
		  "1111111111111111111111111111111111111111111111111111"
		  "111111111111|e-old|rename|joao (uid 1001) @ ws-02"),
	   "new row copies size and hashes, origin rename");

	/* A copy of other bytes than the live row logs (another ETag): an
	 * upload committed since the rename looked (review H2). */
	r.object_key = "in/other.docx";
	db_reception_record(d, &r, NULL, NULL, &ins);
	ok(db_reception_rename(d, BUCKET, "in/other.docx", "in/other2.docx",
			       "e-other", 42, &who) == -EBADMSG &&
	       sql_long(raw, "SELECT count(*) FROM reception_audit"
			     " WHERE object_key = 'in/other2.docx'") == 0 &&
	       sql_long(raw, "SELECT count(*) FROM reception_audit"
			     " WHERE object_key = 'in/other.docx'"
			     " AND removed_at IS NULL") == 1,
	   "a copy the live row does not log: -EBADMSG, nothing written");
	{
		struct db_rename_src src = {.etag = "e-x", .require = 1};
		struct reception_new seed = r;

		/* A row without an ETag (the seed's) vouches for no object:
		 * the copy's own hashes are needed. */
		seed.object_key = "in/seed.docx";
		seed.etag = NULL;
		db_reception_record(d, &seed, NULL, NULL, &ins);
		ok(db_reception_rename_ret(d, BUCKET, "in/seed.docx",
					   "in/other3.docx", "e-x", &src, 42,
					   &who, NULL) == -ESTALE &&
		       sql_long(raw,
				"SELECT count(*) FROM reception_audit"
				" WHERE object_key = 'in/other3.docx'") == 0 &&
		       sql_long(raw, "SELECT count(*) FROM reception_audit"
				     " WHERE object_key = 'in/seed.docx'"
				     " AND removed_at IS NULL") == 1,
		   "required hashes unknown: -ESTALE, nothing written");
		src.xxh128 = "aaaabbbbccccddddaaaabbbbccccdddd";
		src.sha256 =
		    "2222222222222222222222222222222222222222222222222222"
		    "222222222222";
		src.copy_hashed = 1;
		ok(db_reception_rename_ret(d, BUCKET, "in/seed.docx",
					   "in/other3.docx", "e-x", &src, 42,
					   &who, NULL) == -EBADMSG &&
		       sql_long(raw,
				"SELECT count(*) FROM reception_audit"
				" WHERE object_key = 'in/other3.docx'") == 0,
		   "a copy whose hashes are not the row's: -EBADMSG");
		src.sha256 = seed.sha256;
		ok(db_reception_rename_ret(d, BUCKET, "in/seed.docx",
					   "in/other3.docx", "e-x", &src, 42,
					   &who, NULL) == 0 &&
		       sql_long(raw, "SELECT count(*) FROM reception_audit"
				     " WHERE object_key = 'in/other3.docx'"
				     " AND sha256 LIKE '1111%'") == 1,
		   "hashes computed from the copy's bytes, the row's: renamed");
	}

	ok(db_reception_rename(d, BUCKET, "in/ghost", "in/ghost2", "e-g", 7,
			       NULL) == -EBADMSG &&
	       sql_long(raw, "SELECT count(*) FROM reception_audit"
			     " WHERE object_key = 'in/ghost2'") == 0,
	   "rename without a live old row: -EBADMSG, nothing written");

	/* Rename over an existing live key replaces it. */
	r.object_key = "in/ghost2";
	r.etag = "e-z";
	db_reception_record(d, &r, NULL, NULL, &ins);
	ok(db_reception_rename(d, BUCKET, "in/new.docx", "in/ghost2", "e-old",
			       42, &who) == 0,
	   "rename onto a key with a live row");
	ok(sql_is(raw,
		  "SELECT string_agg(coalesce(removal_reason, 'live'),"
		  " ',' ORDER BY id) FROM reception_audit WHERE"
		  " object_key = 'in/ghost2'",
		  "replaced by rename from in/new.docx,live"),
	   "target's old row removed as replaced");

	ok(db_reception_rename(d, BUCKET, "in/ghost2", "in/ghost2", "e", 1,
			       NULL) == 0 &&
	       sql_long(raw, "SELECT count(*) FROM reception_audit"
			     " WHERE object_key = 'in/ghost2' AND"
			     " removed_at IS NULL") == 1,
	   "rename onto itself changes nothing");
}

static int locked_fail(void *arg)
{
	(void)arg;
	return -EIO;
}

static int locked_ok(void *arg)
{
	(*(int *)arg)++;
	return 0;
}

/* db_reception_mark_removed_locked: fn's error writes nothing; else the
 * live rows are marked and the removal noted (migration 10), and a mount's
 * commit of an upload based on the store before it is logged removed. */
static void test_mark_removed_locked(struct db *d, PGconn *raw)
{
	struct reception_new r = {
	    .source_bucket = BUCKET,
	    .object_key = "rm/locked.txt",
	    .size = 3,
	    .etag = "e1",
	    .origin = "mount",
	};
	struct db_record_guard g = {.expect_live = -1, .based_ms_ago = 60000};
	int64_t id = 0;
	int ins = 0, ran = 0, calls = 0, removed = -1;

	db_reception_record(d, &r, NULL, &id, &ins);
	ok(db_reception_mark_removed_locked(d, BUCKET, "rm/locked.txt", "x",
					    locked_fail, NULL, &ran,
					    NULL) == -EIO &&
	       ran,
	   "mark_removed_locked: fn's error returned");
	ok(sql_long(raw,
		    "SELECT count(*) FROM reception_audit WHERE"
		    " object_key = 'rm/locked.txt' AND removed_at IS NULL") ==
		   1 &&
	       sql_long(raw, "SELECT count(*) FROM reception_removals WHERE"
			     " object_key = 'rm/locked.txt'") == 0,
	   "mark_removed_locked: nothing written when fn fails");
	{
		struct db_closed cl = {0};

		ok(db_reception_mark_removed_locked(d, BUCKET, "rm/locked.txt",
						    "deleted", locked_ok,
						    &calls, NULL, &cl) == 0 &&
		       calls == 1 && cl.n == 1 && cl.id == id,
		   "mark_removed_locked: fn called once, the row closed told");
	}
	ok(sql_long(raw,
		    "SELECT count(*) FROM reception_audit WHERE"
		    " object_key = 'rm/locked.txt' AND removed_at IS NULL") ==
		   0 &&
	       sql_long(raw, "SELECT count(*) FROM reception_removals WHERE"
			     " object_key = 'rm/locked.txt'") == 1,
	   "mark_removed_locked: rows marked, removal noted");
	r.etag = "e2";
	g.removed_reason = "removed before its row";
	g.removed_out = &removed;
	ok(db_reception_record_guarded(d, &r, NULL, &g, &id, NULL) == 0 &&
	       removed == 1,
	   "a commit based on the store before the removal: logged removed");
	ok(sql_long(raw,
		    "SELECT count(*) FROM reception_audit WHERE"
		    " object_key = 'rm/locked.txt' AND removed_at IS NULL") ==
		   0 &&
	       sql_long(raw, "SELECT count(*) FROM reception_audit WHERE"
			     " object_key = 'rm/locked.txt'") == 2,
	   "its row is a removed one, no live row");
	r.etag = "e3";
	g.based_ms_ago = 0;
	removed = -1;
	ok(db_reception_record_guarded(d, &r, NULL, &g, &id, NULL) == 0 &&
	       removed == 0 &&
	       sql_long(raw, "SELECT count(*) FROM reception_audit WHERE"
			     " object_key = 'rm/locked.txt' AND"
			     " removed_at IS NULL") == 1,
	   "a commit based on the store after the removal: live");
}

static void test_mark_removed_and_triggers(struct db *d, PGconn *raw)
{
	struct reception_new r = {
	    .source_bucket = BUCKET,
	    .object_key = "rm/me.txt",
	    .size = 3,
	    .etag = "e",
	    .origin = "mount",
	};
	char idbuf[24], *super;
	const char *p[1] = {idbuf};
	int64_t id = 0;
	int ins;

	super = sql_val(raw, "SELECT rolsuper FROM pg_roles WHERE rolname ="
			     " current_user");
	diag("raw SQL runs as %s (superuser: %s)", PQuser(raw),
	     super ? super : "?");
	free(super);

	db_reception_record(d, &r, NULL, &id, &ins);
	snprintf(idbuf, sizeof(idbuf), "%" PRId64, id);
	ok(db_reception_mark_removed(d, BUCKET, "rm/me.txt",
				     "deleted by "
				     "maria") == 0,
	   "mark_removed");
	ok(sql_is_p(raw,
		    "SELECT removal_reason FROM reception_audit WHERE"
		    " id = $1::bigint AND removed_at IS NOT NULL",
		    "deleted by maria", 1, p),
	   "row has removed_at and reason");
	ok(db_reception_mark_removed(d, BUCKET, "rm/me.txt", "again") == 0,
	   "mark_removed with no live row is 0");
	ok(db_reception_mark_removed(d, BUCKET, "rm/never", "x") == 0,
	   "mark_removed of an unknown key is 0");
	ok(sql_is_p(raw,
		    "SELECT removal_reason FROM reception_audit WHERE"
		    " id = $1::bigint",
		    "deleted by maria", 1, p),
	   "first reason kept");

	ok(!strcmp(sql_state_p(raw,
			       "UPDATE reception_audit SET removed_at ="
			       " now(), removal_reason = 'x' WHERE"
			       " id = $1::bigint",
			       1, p),
		   "P0001"),
	   "raw UPDATE setting removed_at a second time refused");
	ok(!strcmp(sql_state(raw, "UPDATE reception_audit SET size_bytes ="
				  " size_bytes + 1 WHERE removed_at IS NULL"),
		   "P0001"),
	   "raw UPDATE of another column refused");
	ok(!strcmp(sql_state(raw, "UPDATE reception_audit SET removed_at ="
				  " now(), sha256 = 'forged' WHERE"
				  " removed_at IS NULL"),
		   "P0001"),
	   "raw UPDATE of removed_at plus another column refused");
	ok(!strcmp(sql_state(raw, "DELETE FROM reception_audit"), "P0001"),
	   "raw DELETE on reception_audit refused");
	ok(!strcmp(sql_state(raw, "DELETE FROM reception_audit WHERE false"),
		   "P0001"),
	   "even a DELETE matching nothing");
	ok(!strcmp(sql_state(raw, "TRUNCATE reception_audit"), "P0001"),
	   "raw TRUNCATE on reception_audit refused");
	ok(sql_ok(raw, "SET session_replication_role = replica") &&
	       !strcmp(sql_state(raw, "DELETE FROM reception_audit"),
		       "P0001") &&
	       sql_ok(raw, "SET session_replication_role = origin"),
	   "DELETE refused in replica mode too");

	/* storage_audit */
	ok(sql_ok(raw, "INSERT INTO storage_audit (project_prefix,"
		       " project_name, dest_bucket, dest_key, size_bytes,"
		       " outcome) VALUES ('p1', 'P1', 'storage-unique',"
		       " 'p1/a', 1, 'copied')"),
	   "storage_audit INSERT allowed");
	ok(!strcmp(sql_state(raw, "UPDATE storage_audit SET outcome ="
				  " 'duplicate'"),
		   "P0001"),
	   "storage_audit UPDATE refused");
	ok(!strcmp(sql_state(raw, "DELETE FROM storage_audit"), "P0001"),
	   "storage_audit DELETE refused");
	ok(!strcmp(sql_state(raw, "TRUNCATE storage_audit"), "P0001"),
	   "storage_audit TRUNCATE refused");
	ok(!strcmp(sql_state(raw, "TRUNCATE storage_audit, reception_audit,"
				  " projects_registry CASCADE"),
		   "P0001"),
	   "multi-table TRUNCATE CASCADE refused");
	ok(sql_ok(raw, "UPDATE storage_audit SET removed_at = now(),"
		       " removal_reason = 'gone' WHERE dest_key = 'p1/a'"),
	   "storage_audit removed_at may be set once");
	ok(!strcmp(sql_state(raw, "UPDATE storage_audit SET removed_at ="
				  " NULL WHERE dest_key = 'p1/a'"),
		   "P0001"),
	   "and not cleared");

	/* projects_registry */
	ok(sql_ok(raw, "INSERT INTO projects_registry (prefix, name) VALUES"
		       " ('p1', 'P1'), ('p2', 'P2')"),
	   "projects_registry INSERT");
	ok(sql_ok(raw, "UPDATE projects_registry SET name = 'Projeto Um'"
		       " WHERE prefix = 'p1'"),
	   "project name may be updated");
	ok(!strcmp(sql_state(raw, "UPDATE projects_registry SET prefix ="
				  " 'p9' WHERE prefix = 'p1'"),
		   "P0001"),
	   "project prefix may not");
	ok(!strcmp(sql_state(raw, "DELETE FROM projects_registry WHERE"
				  " prefix = 'p1'"),
		   "2BP01"),
	   "project with stored files cannot be deleted (2BP01, migration 7)");
	ok(!strcmp(sql_state(raw, "TRUNCATE projects_registry"), "P0001"),
	   "projects_registry TRUNCATE refused while files are stored");
	ok(sql_ok(raw, "DELETE FROM projects_registry WHERE prefix = 'p2'"),
	   "project without stored files can be deleted");
	ok(!strcmp(sql_state(raw, "INSERT INTO projects_registry (prefix,"
				  " name) VALUES ('p1', 'again')"),
		   "23505"),
	   "duplicate prefix refused");
	ok(!strcmp(sql_state(raw, "INSERT INTO reception_audit (source_bucket,"
				  " file_name, object_key) VALUES ('" BUCKET
				  "', 'ghost2', 'in/ghost2')"),
		   "23505"),
	   "a second live row for a key is refused by the unique index");
}

static void test_live(struct db *d)
{
	static const char *const keys[] = {
	    "z/last", "a%b/x", "a_b/y", "aXb/z", "a\\b/w", "B/upper", "a%b/x2",
	};
	struct reception_new r = {
	    .source_bucket = "live-bucket",
	    .size = 1,
	    .etag = "e",
	    .origin = "tool",
	};
	struct reception_live *rows = NULL;
	size_t i, n = 0;
	int ins;

	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		r.object_key = keys[i];
		db_reception_record(d, &r, NULL, NULL, &ins);
	}
	db_reception_mark_removed(d, "live-bucket", "a%b/x2", "gone");

	i = (size_t)db_reception_live(d, "live-bucket", "", 0, &rows, &n);
	ok(i == 0 && n == 6, "all live rows (%zu)", n);
	ok(n == 6 && !strcmp(rows[0].object_key, "B/upper") &&
	       !strcmp(rows[1].object_key, "a%b/x") &&
	       !strcmp(rows[5].object_key, "z/last") && rows[0].etag &&
	       !strcmp(rows[0].etag, "e") && rows[0].id > 0,
	   "in byte order, with etag and id");
	db_reception_live_free(rows, n);

	ok(db_reception_live(d, "live-bucket", "a%", 0, &rows, &n) == 0 &&
	       n == 1 && !strcmp(rows[0].object_key, "a%b/x"),
	   "prefix \"a%%\" is not a pattern");
	db_reception_live_free(rows, n);
	ok(db_reception_live(d, "live-bucket", "a_", 0, &rows, &n) == 0 &&
	       n == 1 && !strcmp(rows[0].object_key, "a_b/y"),
	   "prefix \"a_\" is not a pattern");
	db_reception_live_free(rows, n);
	ok(db_reception_live(d, "live-bucket", "a\\", 0, &rows, &n) == 0 &&
	       n == 1 && !strcmp(rows[0].object_key, "a\\b/w"),
	   "prefix with a backslash");
	db_reception_live_free(rows, n);
	ok(db_reception_live(d, "live-bucket", "a", 2, &rows, &n) == 0 &&
	       n == 2,
	   "max bounds the result");
	db_reception_live_free(rows, n);
	ok(db_reception_live(d, "live-bucket", "nothing/", 0, &rows, &n) == 0 &&
	       n == 0 && !rows,
	   "no match: n = 0, rows NULL");
	ok(db_reception_live(d, "other-bucket", NULL, 0, &rows, &n) == 0 &&
	       n == 0,
	   "NULL prefix, other bucket");
}

struct race {
	struct db *d;
	pthread_barrier_t *bar;
	const char *key;
	const char *origin; /* NULL: "foreign" */
	char etag[16];
	int rc;
	int inserted;
	int64_t id;
};

static void *race_thread(void *arg)
{
	struct race *t = arg;
	struct reception_new r = {
	    .source_bucket = "race",
	    .object_key = t->key,
	    .size = 1,
	    .etag = t->etag,
	    .origin = t->origin ? t->origin : "foreign",
	};

	pthread_barrier_wait(t->bar);
	t->rc = db_reception_record(t->d, &r, "replaced", &t->id, &t->inserted);
	return NULL;
}

static void run_race(struct db *d1, struct db *d2, const char *key,
		     int same_etag, int *rcs, int *inserted, int *same_id)
{
	pthread_barrier_t bar;
	pthread_t th[NTHREAD];
	struct race t[NTHREAD];
	int i;

	pthread_barrier_init(&bar, NULL, NTHREAD);
	for (i = 0; i < NTHREAD; i++) {
		t[i].d = i % 2 ? d2 : d1;
		t[i].bar = &bar;
		t[i].key = key;
		snprintf(t[i].etag, sizeof(t[i].etag), "%s",
			 same_etag ? "same" : "");
		if (!same_etag)
			snprintf(t[i].etag, sizeof(t[i].etag), "e%d", i);
		/* Observers of one upload; or distinct uploads by mounts */
		t[i].origin = same_etag ? "foreign" : "mount";
		pthread_create(&th[i], NULL, race_thread, &t[i]);
	}
	*rcs = *inserted = 0;
	*same_id = 1;
	for (i = 0; i < NTHREAD; i++) {
		pthread_join(th[i], NULL);
		if (t[i].rc)
			(*rcs)++;
		*inserted += t[i].inserted;
		if (t[i].id != t[0].id)
			*same_id = 0;
	}
	pthread_barrier_destroy(&bar);
}

static void test_race(const char *conninfo, struct db *d1, PGconn *raw)
{
	struct db *d2 = open_or_die(conninfo, 2);
	int fails, inserted, same_id;

	run_race(d1, d2, "race/one", 1, &fails, &inserted, &same_id);
	ok(!fails && inserted == 1 && same_id,
	   "%d observers on two handles record the same upload: one row "
	   "(fails %d, inserted %d)",
	   NTHREAD, fails, inserted);
	run_race(d1, d2, "race/many", 0, &fails, &inserted, &same_id);
	ok(!fails && inserted == NTHREAD,
	   "%d different uploads of one key at once: all logged "
	   "(fails %d, inserted %d)",
	   NTHREAD, fails, inserted);
	ok(sql_is(raw,
		  "SELECT count(*) FROM reception_audit WHERE object_key"
		  " = 'race/many' AND removed_at IS NULL",
		  "1"),
	   "exactly one live row remains");
	db_close(d2);
}

static void *outsider_thread(void *arg)
{
	struct race *t = arg;
	struct reception_new r = {
	    .source_bucket = "race",
	    .object_key = t->key,
	    .size = 1,
	    .etag = t->etag,
	    .origin = "foreign",
	};

	t->rc = db_reception_record(t->d, &r, "replaced", &t->id, &t->inserted);
	return NULL;
}

/* A writer that skips the advisory lock (another tool) inserts the live
 * row while ours is between its SELECT and its INSERT: the unique index
 * makes ours fail with 23505, and the retried transaction sees the row. */
static void test_unique_retry(const char *conninfo, struct db *d)
{
	PGconn *other = raw_connect(conninfo);
	struct race t = {.d = d, .key = "race/outsider", .etag = "mine"};
	pthread_t th;
	long id;

	sql_ok(other, "BEGIN");
	sql_ok(other, "INSERT INTO reception_audit (source_bucket, file_name,"
		      " object_key, size_bytes) VALUES ('race', 'outsider',"
		      " 'race/outsider', 1)");
	pthread_create(&th, NULL, outsider_thread, &t);
	usleep(300000); /* ours now waits on the uncommitted index entry */
	sql_ok(other, "COMMIT");
	pthread_join(th, NULL);
	id = sql_long(other, "SELECT id FROM reception_audit WHERE object_key"
			     " = 'race/outsider'");
	ok(t.rc == 0 && t.inserted == 0 && t.id == id,
	   "unique violation from an unlocked writer: retried, its row "
	   "matched (rc %d, inserted %d)",
	   t.rc, t.inserted);
	PQfinish(other);
}

static int terminate_backends(const char *dbname)
{
	const char *p[1] = {dbname};

	return sql_ok(admin, "SELECT 1") &&
	       !*sql_state_p(admin,
			     "SELECT pg_terminate_backend(pid) FROM"
			     " pg_stat_activity WHERE datname = $1::text AND"
			     " application_name = 'custodyfs'",
			     1, p);
}

static void test_reconnect(const char *dbname, struct db *d)
{
	struct reception_live *rows = NULL;
	struct reception_new r = {
	    .source_bucket = "reconnect",
	    .object_key = "k",
	    .size = 1,
	    .etag = "e",
	    .origin = "mount",
	};
	char q[256];
	size_t n = 0;
	int ins = -1, i, good = 0;

	ok(db_ping(d) == 0, "ping before the backends are killed");
	ok(terminate_backends(dbname), "pg_terminate_backend on our sessions");
	usleep(200000);
	ok(db_reception_record(d, &r, NULL, NULL, &ins) == 0 && ins == 1,
	   "record after the connection was killed (reset and retry)");
	terminate_backends(dbname);
	usleep(200000);
	for (i = 0; i < 6; i++) {
		good +=
		    db_reception_live(d, "reconnect", "", 0, &rows, &n) == 0 &&
		    n == 1;
		db_reception_live_free(rows, n);
		rows = NULL;
	}
	ok(good == 6, "every pooled connection recovers (%d/6)", good);

	/* The database refuses connections: operations fail, bounded. */
	snprintf(q, sizeof(q), "ALTER DATABASE \"%s\" ALLOW_CONNECTIONS false",
		 dbname);
	sql_ok(admin, q);
	terminate_backends(dbname);
	usleep(200000);
	{
		double t0 = now_s();

		ok(db_ping(d) == -EIO, "ping while unreachable gives -EIO");
		ok(db_reception_live(d, "reconnect", "", 0, &rows, &n) < 0,
		   "operations fail with -errno while unreachable");
		ok(now_s() - t0 < 15.0, "and quickly (%.1fs)", now_s() - t0);
	}
	snprintf(q, sizeof(q), "ALTER DATABASE \"%s\" ALLOW_CONNECTIONS true",
		 dbname);
	sql_ok(admin, q);
	ok(db_ping(d) == 0, "ping recovers when the database is back");
}

/* Runs argv, output discarded; 0 when it exits 0. */
static int run(char *const argv[])
{
	pid_t pid;
	int status, fd;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		if (chdir("/")) {
			/* the command may still work from here */
		}
		fd = open("/dev/null", O_RDWR);
		if (fd >= 0) {
			dup2(fd, 0);
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) != pid)
		return -1;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* Restarts the server; 0 done, 1 cannot here, -1 failed. */
static int restart_server(void)
{
	const char *cmd = getenv("CUSTODYFS_TEST_PG_RESTART");
	char *datadir = NULL, *bindir = NULL, pg_ctl[4096];
	struct passwd *pw;
	struct stat st;
	int rc = 1;

	if (cmd && *cmd) {
		char *argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};

		return run(argv) ? -1 : 0;
	}
	datadir = sql_val(admin, "SELECT current_setting('data_directory')");
	bindir = sql_val(admin, "SELECT setting FROM pg_config WHERE name ="
				" 'BINDIR'");
	if (!datadir || !bindir || stat(datadir, &st))
		goto out;
	snprintf(pg_ctl, sizeof(pg_ctl), "%s/pg_ctl", bindir);
	if (access(pg_ctl, X_OK))
		goto out;
	if (geteuid() == st.st_uid) {
		char *argv[] = {pg_ctl, "-D", datadir,	 "-m",
				"fast", "-w", "restart", NULL};

		rc = run(argv) ? -1 : 0;
	} else if (geteuid() == 0 && (pw = getpwuid(st.st_uid))) {
		char *argv[] = {"runuser", "-u", pw->pw_name, "--",
				pg_ctl,	   "-D", datadir,     "-m",
				"fast",	   "-w", "restart",   NULL};

		rc = run(argv) ? -1 : 0;
	}
out:
	free(datadir);
	free(bindir);
	return rc;
}

static void test_restart(struct db *d)
{
	struct reception_live *rows = NULL;
	size_t n = 0;
	int rc;

	ok(db_reception_live(d, BUCKET, "", 1, &rows, &n) == 0,
	   "a call before the restart");
	db_reception_live_free(rows, n);
	rows = NULL;
	rc = restart_server();
	if (rc > 0) {
		skip(
		    "server restart: not local, set CUSTODYFS_TEST_PG_RESTART");
		skip("call after restart");
		return;
	}
	ok(rc == 0, "server restarted (pg_ctl restart)");
	PQreset(admin);
	ok(db_reception_live(d, BUCKET, "", 1, &rows, &n) == 0,
	   "the next call succeeds (connection reset and retried)");
	db_reception_live_free(rows, n);
}

int main(void)
{
	char name[128], *ci_a, *ci_b, *ci_c, *ci_d, *ci_e, *ci_f;
	PGconn *raw_a, *raw_b, *raw_c, *raw_d, *raw_e, *raw_f;
	const char *lvl = getenv("CUSTODYFS_TEST_LOG");
	char dbname_a[128];
	struct db *d;
	int i;

	setvbuf(stdout, NULL, _IOLBF, 0);
	log_init("test_db", 0,
		 lvl && !strcmp(lvl, "debug") ? LOG_LVL_DEBUG : LOG_LVL_ERROR);
	base_conninfo = getenv("CUSTODYFS_TEST_PG");
	if (!base_conninfo || !*base_conninfo) {
		printf("1..0 # SKIP CUSTODYFS_TEST_PG not set\n");
		return 0;
	}
	admin = raw_connect(base_conninfo);
	PQsetNoticeProcessor(admin, NULL, NULL);

	test_actor();
	test_open_failures();

	ci_a = fresh_db("a", dbname_a, sizeof(dbname_a));
	raw_a = raw_connect(ci_a);
	test_migrate_fresh(ci_a, raw_a);

	ci_b = fresh_db("b", name, sizeof(name));
	raw_b = raw_connect(ci_b);
	test_migrate_concurrent(ci_b, raw_b);

	ci_c = fresh_db("c", name, sizeof(name));
	raw_c = raw_connect(ci_c);
	test_adopt_seed(ci_c, raw_c, 1);
	ci_d = fresh_db("d", name, sizeof(name));
	raw_d = raw_connect(ci_d);
	test_adopt_seed(ci_d, raw_d, 0);
	ci_e = fresh_db("e", name, sizeof(name));
	raw_e = raw_connect(ci_e);
	test_adopt_minimal_projects(ci_e, raw_e);
	ci_f = fresh_db("f", name, sizeof(name));
	raw_f = raw_connect(ci_f);
	test_key_indexes(ci_f, raw_f);

	d = open_or_die(ci_a, 4);
	test_record(d, raw_a);
	test_rename(d, raw_a);
	test_injection(d, raw_a);
	test_live(d);
	test_live_keys(d);
	test_record_guarded(d, raw_a);
	test_unrowed_do(d, raw_a);
	test_rename_guard(d, raw_a);
	test_attrs_may(d, raw_a);
	test_attrs_move_claim(d, raw_a);
	test_attrs_hidden(d, raw_a);
	test_attrs_spare(d, raw_a);
	test_attrs_defer(d, raw_a);
	test_mark_removed_and_triggers(d, raw_a);
	test_mark_removed_locked(d, raw_a);
	test_race(ci_a, d, raw_a);
	test_unique_retry(ci_a, d);
	test_reconnect(dbname_a, d);
	test_restart(d);
	db_close(d);
	test_pool_wait(ci_a);
	test_pool_bulk(ci_a);

	PQfinish(raw_a);
	PQfinish(raw_b);
	PQfinish(raw_c);
	PQfinish(raw_d);
	PQfinish(raw_e);
	PQfinish(raw_f);
	free(ci_a);
	free(ci_b);
	free(ci_c);
	free(ci_d);
	free(ci_e);
	free(ci_f);
	for (i = 0; i < n_created_dbs; i++) {
		char q[256];

		if (!getenv("CUSTODYFS_TEST_KEEP")) {
			snprintf(q, sizeof(q),
				 "DROP DATABASE IF EXISTS \"%s\" WITH (FORCE)",
				 created_dbs[i]);
			if (PQstatus(admin) != CONNECTION_OK)
				PQreset(admin);
			sql_ok(admin, q);
		}
		free(created_dbs[i]);
	}
	PQfinish(admin);
	printf("1..%d\n", test_n);
	if (test_failed)
		printf("# %d of %d checks failed\n", test_failed, test_n);
	else
		printf("# all %d checks passed\n", test_n);
	return test_failed ? 1 : 0;
}
