/* counters.c - see counters.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "counters.h"

static _Atomic uint64_t ctr_val[CTR_N];

static const char *const ctr_names[CTR_N] = {
    [CTR_RECEIVED] = "received",
    [CTR_BYTES_RECEIVED] = "bytes_received",
    [CTR_COPIED] = "copied",
    [CTR_RESTORED] = "restored",
    [CTR_ADOPTED] = "adopted",
    [CTR_DUP_PATH] = "duplicates_path",
    [CTR_DUP_CONTENT] = "duplicates_content",
    [CTR_CONFLICTS] = "conflicts",
    [CTR_BYTES_STORED] = "bytes_stored",
    [CTR_ERR_RECEPTION] = "errors_reception",
    [CTR_ERR_PROMOTION] = "errors_promotion",
};

void ctr_add(enum ctr c, uint64_t n)
{
	if ((unsigned)c < CTR_N)
		atomic_fetch_add_explicit(&ctr_val[c], n, memory_order_relaxed);
}

uint64_t ctr_get(enum ctr c)
{
	return (unsigned)c < CTR_N
		   ? atomic_load_explicit(&ctr_val[c], memory_order_relaxed)
		   : 0;
}

const char *ctr_name(enum ctr c)
{
	return (unsigned)c < CTR_N ? ctr_names[c] : "?";
}

/* ---- histograms ------------------------------------------------------- */

/* Upper bounds in nanoseconds and as the le label writes them; the last
 * bucket (+Inf) has no bound. From a HEAD on a LAN to a large upload. */
static const uint64_t hist_bound_ns[] = {
    1000000ULL,	    5000000ULL,	    10000000ULL,     25000000ULL,
    50000000ULL,    100000000ULL,   250000000ULL,    500000000ULL,
    1000000000ULL,  2500000000ULL,  5000000000ULL,   10000000000ULL,
    30000000000ULL, 60000000000ULL, 300000000000ULL,
};
static const char *const hist_bound_le[] = {
    "0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
    "1",     "2.5",   "5",    "10",    "30",   "60",  "300",
};
#define HIST_NB (sizeof(hist_bound_ns) / sizeof(hist_bound_ns[0]) + 1)

struct hist_data {
	_Atomic uint64_t bucket[HIST_NB]; /* not cumulative; last: +Inf */
	_Atomic uint64_t sum_ns;
	_Atomic uint64_t failures;
};

static struct hist_data hist_val[HIST_N];

uint64_t ctr_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void hist_observe_ns(enum hist h, uint64_t ns, int failed)
{
	size_t i = 0;

	if ((unsigned)h >= HIST_N)
		return;
	while (i < HIST_NB - 1 && ns > hist_bound_ns[i])
		i++;
	atomic_fetch_add_explicit(&hist_val[h].sum_ns, ns,
				  memory_order_relaxed);
	atomic_fetch_add_explicit(&hist_val[h].bucket[i], 1,
				  memory_order_relaxed);
	if (failed)
		atomic_fetch_add_explicit(&hist_val[h].failures, 1,
					  memory_order_relaxed);
}

void hist_observe_since(enum hist h, uint64_t t0, int failed)
{
	uint64_t now = ctr_now_ns();

	hist_observe_ns(h, now > t0 ? now - t0 : 0, failed);
}

/* ---- stages and FUSE operations: count and sum ------------------------ */

struct sum_data {
	_Atomic uint64_t count;
	_Atomic uint64_t sum_ns;
};

static struct sum_data stage_val[STG_N];
static struct sum_data fop_val[FOP_N];

static const char *const stage_names[STG_N] = {
    [STG_SPOOL_WRITE] = "spool_write",
    [STG_HASH] = "hash",
    [STG_UPLOAD_FINISH] = "upload_finish",
    [STG_RECEPTION_ROW] = "reception_row",
    [STG_SQL_COMMIT] = "sql_commit",
    [STG_ROW_CHECK] = "row_check",
    [STG_CREATE_CHECK] = "create_check",
    [STG_SQL_STATEMENT] = "sql_statement",
    [STG_SQL_PREPARE] = "sql_prepare",
};

static const char *const fop_names[FOP_N] = {
    [FOP_GETATTR] = "getattr",
    [FOP_READDIR] = "readdir",
    [FOP_MKDIR] = "mkdir",
    [FOP_RMDIR] = "rmdir",
    [FOP_CREATE] = "create",
    [FOP_OPEN] = "open",
    [FOP_READ] = "read",
    [FOP_WRITE] = "write",
    [FOP_FLUSH] = "flush",
    [FOP_FSYNC] = "fsync",
    [FOP_RELEASE] = "release",
    [FOP_TRUNCATE] = "truncate",
    [FOP_UNLINK] = "unlink",
    [FOP_RENAME] = "rename",
    [FOP_CHMOD] = "chmod",
    [FOP_CHOWN] = "chown",
    [FOP_UTIMENS] = "utimens",
    [FOP_STATFS] = "statfs",
    [FOP_SYMLINK] = "symlink",
    [FOP_READLINK] = "readlink",
    [FOP_LINK] = "link",
    [FOP_GETXATTR] = "getxattr",
    [FOP_SETXATTR] = "setxattr",
    [FOP_LISTXATTR] = "listxattr",
    [FOP_REMOVEXATTR] = "removexattr",
    [FOP_MKNOD] = "mknod",
};

static void sum_add(struct sum_data *d, uint64_t ns)
{
	atomic_fetch_add_explicit(&d->sum_ns, ns, memory_order_relaxed);
	atomic_fetch_add_explicit(&d->count, 1, memory_order_relaxed);
}

static uint64_t since(uint64_t t0)
{
	uint64_t now = ctr_now_ns();

	return now > t0 ? now - t0 : 0;
}

void stage_observe_ns(enum stage s, uint64_t ns)
{
	if ((unsigned)s < STG_N)
		sum_add(&stage_val[s], ns);
}

void stage_observe_since(enum stage s, uint64_t t0)
{
	stage_observe_ns(s, since(t0));
}

void fop_observe_ns(enum fop op, uint64_t ns)
{
	if ((unsigned)op < FOP_N)
		sum_add(&fop_val[op], ns);
}

void fop_observe_since(enum fop op, uint64_t t0)
{
	fop_observe_ns(op, since(t0));
}

/* The database operations by name: slots taken once, in order, never
 * given back (names are string literals); the last slot is "other". */
static struct {
	_Atomic(const char *) what;
	struct sum_data d;
} sqlw[CTR_SQL_WHATS + 1];

void sql_what_observe_ns(const char *what, uint64_t ns)
{
	const char *p;
	size_t i;

	if (!what)
		what = "unnamed";
	for (i = 0; i < CTR_SQL_WHATS; i++) {
		p = atomic_load_explicit(&sqlw[i].what, memory_order_acquire);
		if (!p) {
			const char *expect = NULL;

			if (atomic_compare_exchange_strong(&sqlw[i].what,
							   &expect, what))
				break;
			p = expect; /* taken meanwhile: by this name? */
		}
		if (p == what || !strcmp(p, what))
			break;
	}
	sum_add(&sqlw[i].d, ns);
}

void sql_what_observe_since(const char *what, uint64_t t0)
{
	sql_what_observe_ns(what, since(t0));
}

/* ---- Prometheus text exposition --------------------------------------- */

int ctr_prom_escape(const char *s, char *out, size_t out_len)
{
	size_t o = 0;
	const char *e;

	if (!out_len)
		return -ENAMETOOLONG;
	for (; *s; s++) {
		e = *s == '\\'	 ? "\\\\"
		    : *s == '"'	 ? "\\\""
		    : *s == '\n' ? "\\n"
				 : NULL;
		if (o + (e ? 2 : 1) >= out_len) {
			out[o] = '\0';
			return -ENAMETOOLONG;
		}
		if (e) {
			out[o++] = e[0];
			out[o++] = e[1];
		} else {
			out[o++] = *s;
		}
	}
	out[o] = '\0';
	return 0;
}

/* "{labels,extra}" with either part optional, or nothing at all. */
static void prom_labels(FILE *f, const char *labels, const char *extra)
{
	int a = labels && *labels, b = extra && *extra;

	if (!a && !b)
		return;
	fprintf(f, "{%s%s%s}", a ? labels : "", a && b ? "," : "",
		b ? extra : "");
}

static void prom_head(FILE *f, const char *name, const char *type,
		      const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void prom_sample(FILE *f, const char *name, const char *labels,
			const char *extra, uint64_t v)
{
	fputs(name, f);
	prom_labels(f, labels, extra);
	fprintf(f, " %" PRIu64 "\n", v);
}

static void prom_counter(FILE *f, const char *name, const char *help,
			 const char *labels, enum ctr c)
{
	prom_head(f, name, "counter", help);
	prom_sample(f, name, labels, NULL, ctr_get(c));
}

static void prom_seconds(FILE *f, uint64_t ns)
{
	fprintf(f, " %" PRIu64 ".%09" PRIu64 "\n",
		(uint64_t)(ns / 1000000000ULL), (uint64_t)(ns % 1000000000ULL));
}

/* The _sum and _count samples of one summary without quantiles (its HELP
 * and TYPE written by the caller), with the label pair key="name". The
 * count is read first: a reader may see a sum ahead of it, never a count
 * whose sum is missing. */
static void prom_summary(FILE *f, const char *name, const char *labels,
			 const char *key, const char *lname,
			 const struct sum_data *d)
{
	char lbl[128];
	uint64_t n = atomic_load_explicit(&d->count, memory_order_relaxed);

	snprintf(lbl, sizeof(lbl), "%s=\"%s\"", key, lname);
	fprintf(f, "%s_sum", name);
	prom_labels(f, labels, lbl);
	prom_seconds(f, atomic_load_explicit(&d->sum_ns, memory_order_relaxed));
	fprintf(f, "%s_count", name);
	prom_labels(f, labels, lbl);
	fprintf(f, " %" PRIu64 "\n", n);
}

/* The samples of one histogram (its HELP and TYPE written by the caller);
 * extra: its own label pairs, or NULL. */
static void prom_hist(FILE *f, const char *name, const char *labels,
		      const char *extra, enum hist h)
{
	const struct hist_data *d = &hist_val[h];
	char lbl[128];
	uint64_t cum = 0, sum;
	size_t i;

	for (i = 0; i < HIST_NB; i++) {
		cum +=
		    atomic_load_explicit(&d->bucket[i], memory_order_relaxed);
		snprintf(lbl, sizeof(lbl), "%s%sle=\"%s\"", extra ? extra : "",
			 extra ? "," : "",
			 i < HIST_NB - 1 ? hist_bound_le[i] : "+Inf");
		fprintf(f, "%s_bucket", name);
		prom_labels(f, labels, lbl);
		fprintf(f, " %" PRIu64 "\n", cum);
	}
	sum = atomic_load_explicit(&d->sum_ns, memory_order_relaxed);
	fprintf(f, "%s_sum", name);
	prom_labels(f, labels, extra);
	prom_seconds(f, sum);
	fprintf(f, "%s_count", name);
	prom_labels(f, labels, extra);
	fprintf(f, " %" PRIu64 "\n", cum);
}

static const char *const hist_s3_op[] = {
    [HIST_S3_HEAD - HIST_S3_HEAD] = "head",
    [HIST_S3_GET - HIST_S3_HEAD] = "get",
    [HIST_S3_LIST - HIST_S3_HEAD] = "list",
    [HIST_S3_PUT - HIST_S3_HEAD] = "put",
    [HIST_S3_COPY - HIST_S3_HEAD] = "copy",
    [HIST_S3_UPLOAD_PART - HIST_S3_HEAD] = "upload_part",
    [HIST_S3_MULTIPART - HIST_S3_HEAD] = "multipart",
    [HIST_S3_DELETE - HIST_S3_HEAD] = "delete",
    [HIST_S3_OTHER - HIST_S3_HEAD] = "other",
};

int ctr_write_prom(FILE *f, const char *labels)
{
	static const struct {
		enum ctr c;
		const char *outcome;
	} promo[] = {
	    {CTR_COPIED, "copied"},
	    {CTR_RESTORED, "restored"},
	    {CTR_ADOPTED, "adopted"},
	    {CTR_DUP_PATH, "duplicate"},
	    {CTR_DUP_CONTENT, "duplicate_content"},
	    {CTR_CONFLICTS, "conflict"},
	};
	char op[64];
	enum hist h;
	size_t i;

	prom_counter(f, "custodyfs_receptions_total",
		     "Reception rows committed for new content by this "
		     "process (uploads through the mount and by other routes).",
		     labels, CTR_RECEIVED);
	prom_counter(
	    f, "custodyfs_received_bytes_total",
	    "Sizes of the files counted by custodyfs_receptions_total.", labels,
	    CTR_BYTES_RECEIVED);
	prom_counter(f, "custodyfs_reception_errors_total",
		     "Uploads whose reception row failed.", labels,
		     CTR_ERR_RECEPTION);
	prom_head(f, "custodyfs_promotions_total", "counter",
		  "Promotions into the storage bucket that ended, by outcome "
		  "(failures: custodyfs_promotion_errors_total).");
	for (i = 0; i < sizeof(promo) / sizeof(promo[0]); i++) {
		snprintf(op, sizeof(op), "outcome=\"%s\"", promo[i].outcome);
		prom_sample(f, "custodyfs_promotions_total", labels, op,
			    ctr_get(promo[i].c));
	}
	prom_counter(f, "custodyfs_promotion_errors_total",
		     "Promotions that failed (conflicts excluded).", labels,
		     CTR_ERR_PROMOTION);
	prom_counter(f, "custodyfs_stored_bytes_total",
		     "Sizes of the files promoted as copied, restored or "
		     "adopted.",
		     labels, CTR_BYTES_STORED);

	prom_head(f, "custodyfs_upload_duration_seconds", "histogram",
		  "Time to commit a file written through the mount (close, "
		  "fsync or rename): its upload and its reception row.");
	prom_hist(f, "custodyfs_upload_duration_seconds", labels, NULL,
		  HIST_UPLOAD);
	prom_head(f, "custodyfs_upload_failures_total", "counter",
		  "Files written through the mount whose commit failed.");
	prom_sample(f, "custodyfs_upload_failures_total", labels, NULL,
		    atomic_load_explicit(&hist_val[HIST_UPLOAD].failures,
					 memory_order_relaxed));
	prom_head(f, "custodyfs_promotion_duration_seconds", "histogram",
		  "Time to promote one file, whatever its outcome.");
	prom_hist(f, "custodyfs_promotion_duration_seconds", labels, NULL,
		  HIST_PROMOTION);
	prom_head(f, "custodyfs_sql_duration_seconds", "histogram",
		  "Time of one database operation (its transaction, retries "
		  "included).");
	prom_hist(f, "custodyfs_sql_duration_seconds", labels, NULL, HIST_SQL);
	prom_head(f, "custodyfs_sql_failures_total", "counter",
		  "Database operations that failed.");
	prom_sample(f, "custodyfs_sql_failures_total", labels, NULL,
		    atomic_load_explicit(&hist_val[HIST_SQL].failures,
					 memory_order_relaxed));
	prom_head(f, "custodyfs_s3_request_duration_seconds", "histogram",
		  "Time of one S3 request (retries included), by operation.");
	for (h = HIST_S3_HEAD; h <= HIST_S3_OTHER; h++) {
		snprintf(op, sizeof(op), "op=\"%s\"",
			 hist_s3_op[h - HIST_S3_HEAD]);
		prom_hist(f, "custodyfs_s3_request_duration_seconds", labels,
			  op, h);
	}
	prom_head(f, "custodyfs_s3_request_failures_total", "counter",
		  "S3 requests that failed after their retries (a missing "
		  "key included), by operation.");
	for (h = HIST_S3_HEAD; h <= HIST_S3_OTHER; h++) {
		snprintf(op, sizeof(op), "op=\"%s\"",
			 hist_s3_op[h - HIST_S3_HEAD]);
		prom_sample(f, "custodyfs_s3_request_failures_total", labels,
			    op,
			    atomic_load_explicit(&hist_val[h].failures,
						 memory_order_relaxed));
	}
	prom_head(f, "custodyfs_sql_operation_duration_seconds", "summary",
		  "Time of the database operations (as "
		  "custodyfs_sql_duration_seconds), by operation.");
	for (i = 0; i <= CTR_SQL_WHATS; i++) {
		const char *w = i < CTR_SQL_WHATS
				    ? atomic_load_explicit(&sqlw[i].what,
							   memory_order_acquire)
				    : "other";
		char esc[128];

		if (!w)
			break;
		if (i == CTR_SQL_WHATS &&
		    !atomic_load_explicit(&sqlw[i].d.count,
					  memory_order_relaxed))
			break;
		ctr_prom_escape(w, esc, sizeof(esc));
		prom_summary(f, "custodyfs_sql_operation_duration_seconds",
			     labels, "what", esc, &sqlw[i].d);
	}
	prom_head(f, "custodyfs_file_open_duration_seconds", "histogram",
		  "Time a file written through the mount stays open: from its "
		  "create (or open for writing) to its release.");
	prom_hist(f, "custodyfs_file_open_duration_seconds", labels, NULL,
		  HIST_FILE_OPEN);
	prom_head(f, "custodyfs_fuse_request_duration_seconds", "summary",
		  "Time in the handler of each FUSE operation, by operation "
		  "(a kernel LOOKUP is a getattr).");
	for (i = 0; i < FOP_N; i++)
		prom_summary(f, "custodyfs_fuse_request_duration_seconds",
			     labels, "op", fop_names[i], &fop_val[i]);
	prom_head(f, "custodyfs_stage_duration_seconds", "summary",
		  "Time spent in the stages of committing a file, by stage "
		  "(hashing may run on another thread).");
	for (i = 0; i < STG_N; i++)
		prom_summary(f, "custodyfs_stage_duration_seconds", labels,
			     "stage", stage_names[i], &stage_val[i]);
	fflush(f);
	return ferror(f) ? -EIO : 0;
}
