/* tool_promote.c - `custodyfs promote --project P [--name N]
 * [--prefix-in-inbox X] -o config=FILE [--workers N] [--json]`: the seed's
 * whole pipeline without a mount.
 *
 *   1. the store answers (both buckets) and the database is migrated;
 *   2. objects in reception without a reception row of their upload (they
 *      came by another route) are logged first, by the mount's own
 *      reception scan (reception_scan: hashed from their bytes, the grace
 *      period kept so that an uploading mount logs its own); those still
 *      without a row (younger than the grace period) are left in
 *      reception and reported as "not logged yet";
 *   3. the project is selected, or created as mkdir projects/P does
 *      (db_project_create: who and when);
 *   4. every received file (key under X/, or all) is promoted to
 *      P/<its key> by promote_file, the mount's promotion, on --workers
 *      threads; directory markers are not files and stay.
 *
 * Counters count outcomes (what promote_file answered), never loop turns:
 * copied (restored and adopted are stores too), duplicates (same path or
 * same content), conflicts (the file stays), failed (it stays). On a
 * terminal a progress bar is redrawn in place on stderr; otherwise a plain
 * log line every few seconds. SIGINT / SIGTERM stop taking new files (the
 * ones in flight end); a second one kills. */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "db_projects.h"
#include "db_storage.h"
#include "log.h"
#include "names.h"
#include "promote.h"
#include "reception.h"
#include "tools.h"

#define PROMOTE_TOOL_WORKERS_MAX 32
#define PROMOTE_TICK_MS 250	  /* progress bar redraws */
#define PROMOTE_LOG_EVERY_MS 5000 /* progress lines when not a terminal */
#define PROMOTE_FAILURES_MAX 100  /* failures listed in the summary */
#define PROMOTE_KEYS_BATCH 500	  /* keys per reception-row lookup */
#define PROMOTE_NAME_MAX 1024	  /* a project name's bytes, as the mount's */

static volatile sig_atomic_t promote_stop_flag;

static void promote_on_signal(int sig)
{
	(void)sig;
	promote_stop_flag = 1;
}

static void promote_usage(FILE *f)
{
	fprintf(
	    f, "usage: custodyfs promote --project PREFIX [--name NAME] "
	       "[--prefix-in-inbox DIR]\n"
	       "                         -o config=FILE [--workers N] "
	       "[--json]\n"
	       "\n"
	       "Promotes every received file (or those under DIR/ in inbox/) "
	       "into project\n"
	       "PREFIX, each to PREFIX/<its path in inbox/>, with the "
	       "promotion of the mount\n"
	       "(mv inbox/F projects/PREFIX/F): the double check, "
	       "deduplication, the verified\n"
	       "server-side copy, both audit rows, then the source's removal. "
	       "The project is\n"
	       "selected, or created (named NAME, default PREFIX) as mkdir "
	       "projects/PREFIX\n"
	       "would. Objects that came by other routes are logged first "
	       "(hashed from their\n"
	       "bytes); those too recent to be logged yet stay in reception "
	       "and are reported.\n"
	       "Promoted files leave reception: a second run finds nothing "
	       "to do, and files\n"
	       "received again with the same content are duplicates (nothing "
	       "copied).\n"
	       "\n"
	       "  --project PREFIX        the project (1-63 of a-z 0-9 . _ -)\n"
	       "  --name NAME             its name when it is created\n"
	       "  --prefix-in-inbox DIR   only the files under inbox/DIR/\n"
	       "  --workers N             files promoted at once (default "
	       "[fs] promote_workers)\n"
	       "  -o config=FILE          the mount's configuration file\n"
	       "  --json                  the summary as one JSON object on "
	       "stdout\n"
	       "  -h, --help              this text\n"
	       "\n"
	       "On a terminal a progress bar (files done/total, copied, "
	       "duplicates,\n"
	       "conflicts, failed, bytes, rate, ETA) is redrawn on stderr; "
	       "otherwise a log\n"
	       "line every 5 s. Exit status: 0 every file was promoted, 1 a "
	       "file failed or\n"
	       "conflicted (it stays in inbox/), the store or the database is "
	       "down, or the\n"
	       "run was interrupted; 2 bad usage.\n");
}

struct promote_item {
	char *key; /* in the reception bucket; also its path in the project */
	uint64_t size;
};

struct promote_run {
	struct tool_env *t;
	struct promote *p;
	const char *prefix;
	struct actor who;
	struct promote_item *items;
	size_t n;
	uint64_t total_bytes;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* with lock: a worker ended */
	size_t next;	     /* protected by lock: the next item to take */
	size_t running;	     /* protected by lock: workers not ended */
	size_t done;	     /* protected by lock: items answered */
	uint64_t done_bytes; /* protected by lock: their sizes */
	size_t by_outcome[DB_OUT_CONFLICT + 1]; /* protected by lock */
	size_t failed;				/* protected by lock */
	uint64_t bytes_stored; /* protected by lock: copied/restored/
				  adopted sizes */
	char **fail_key;       /* protected by lock: the first failures */
	int *fail_rc;	       /* protected by lock */
	size_t n_fail;	       /* protected by lock */
};

/* One file's answer, counted. */
static void promote_tally(struct promote_run *r, size_t i, int rc,
			  enum db_outcome o)
{
	pthread_mutex_lock(&r->lock);
	r->done++;
	r->done_bytes += r->items[i].size;
	if (rc == -EEXIST) {
		r->by_outcome[DB_OUT_CONFLICT]++;
	} else if (rc) {
		r->failed++;
	} else if ((unsigned)o < DB_OUT_CONFLICT) {
		r->by_outcome[o]++;
		if (o == DB_OUT_COPIED || o == DB_OUT_RESTORED ||
		    o == DB_OUT_ADOPTED)
			r->bytes_stored += r->items[i].size;
	}
	if (rc && r->n_fail < PROMOTE_FAILURES_MAX) {
		r->fail_key[r->n_fail] = r->items[i].key;
		r->fail_rc[r->n_fail++] = rc;
	}
	pthread_mutex_unlock(&r->lock);
}

static void *promote_worker(void *arg)
{
	struct promote_run *r = arg;

	for (;;) {
		struct promote_result res;
		char shown[NAMES_MAX_KEY * 4 + 1];
		size_t i;
		int rc;

		pthread_mutex_lock(&r->lock);
		i = promote_stop_flag ? r->n : r->next++;
		pthread_mutex_unlock(&r->lock);
		if (i >= r->n)
			break;
		rc = promote_file(r->p, r->items[i].key, r->prefix,
				  r->items[i].key, &r->who, &res);
		if (rc)
			tool_shown(r->items[i].key, shown, sizeof(shown));
		if (rc == -EEXIST)
			log_warn("%s: conflict: %s/%s/%s holds another file "
				 "(nothing overwritten, the file stays in "
				 "inbox/)",
				 shown, r->t->cfg.storage_bucket, r->prefix,
				 shown);
		else if (rc)
			log_error("%s: not promoted: %s (the file stays in "
				  "inbox/)",
				  shown, strerror(-rc));
		promote_tally(r, i, rc, res.outcome);
	}
	pthread_mutex_lock(&r->lock);
	r->running--;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

static double promote_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void promote_hms(char *out, size_t len, double s)
{
	int t;

	if (s < 0 || s > 359999) {
		snprintf(out, len, "--:--");
		return;
	}
	t = (int)(s + 0.5);
	if (t >= 3600)
		snprintf(out, len, "%d:%02d:%02d", t / 3600, t / 60 % 60,
			 t % 60);
	else
		snprintf(out, len, "%d:%02d", t / 60, t % 60);
}

/* The progress line (caller holds r->lock), at most width columns when
 * width > 0 (a terminal: with a bar), else a log line. */
static void promote_line(struct promote_run *r, double elapsed, int width,
			 char *out, size_t len)
{
	size_t dups = r->by_outcome[DB_OUT_DUPLICATE] +
		      r->by_outcome[DB_OUT_DUPLICATE_CONTENT];
	size_t stored = r->by_outcome[DB_OUT_COPIED] +
			r->by_outcome[DB_OUT_RESTORED] +
			r->by_outcome[DB_OUT_ADOPTED];
	double rate = elapsed > 0.2 ? (double)r->done_bytes / elapsed : 0;
	double frate = elapsed > 0.2 ? (double)r->done / elapsed : 0;
	double eta = -1;
	char bytes[32], brate[32], etas[32], tail[320], bar[64];
	int w;

	if (r->done >= r->n)
		eta = 0;
	else if (r->total_bytes > 0 && rate > 0)
		eta = (double)(r->total_bytes - r->done_bytes) / rate;
	else if (frate > 0)
		eta = (double)(r->n - r->done) / frate;
	tool_bytes(bytes, sizeof(bytes), (double)r->bytes_stored);
	tool_bytes(brate, sizeof(brate), rate);
	promote_hms(etas, sizeof(etas), eta);
	snprintf(tail, sizeof(tail),
		 "%zu/%zu files | copied %zu | duplicates %zu | conflicts "
		 "%zu | failed %zu | %s | %s/s %.1f files/s | ETA %s",
		 r->done, r->n, stored, dups, r->by_outcome[DB_OUT_CONFLICT],
		 r->failed, bytes, brate, frate, etas);
	if (width <= 0) {
		snprintf(out, len, "progress: %s", tail);
		return;
	}
	/* "[#####.....] " ahead of the counters when the width allows */
	w = width - 1 - (int)strlen(tail) - 3;
	if (w > (int)sizeof(bar) - 1)
		w = (int)sizeof(bar) - 1;
	if (w >= 10) {
		int fill =
		    r->n ? (int)((double)w * (double)r->done / (double)r->n)
			 : w;

		memset(bar, '#', (size_t)fill);
		memset(bar + fill, '.', (size_t)(w - fill));
		bar[w] = '\0';
		snprintf(out, len, "[%s] %s", bar, tail);
	} else {
		snprintf(out, len, "%s", tail);
	}
	if ((int)strlen(out) > width - 1 && width > 1)
		out[width - 1] = '\0'; /* never wraps: \r redraws one line */
}

static int promote_term_width(void)
{
	struct winsize ws;

	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
		return ws.ws_col;
	return 80;
}

/* Runs the workers and shows the progress until they end. */
static void promote_run_all(struct promote_run *r, int workers, int tty)
{
	pthread_t th[PROMOTE_TOOL_WORKERS_MAX];
	double start = promote_now(), last_log = start;
	int n_th = 0, i;
	char line[512];

	pthread_mutex_lock(&r->lock);
	for (i = 0; i < workers && (size_t)i < r->n; i++) {
		r->running++;
		if (pthread_create(&th[n_th], NULL, promote_worker, r)) {
			r->running--;
			break;
		}
		n_th++;
	}
	pthread_mutex_unlock(&r->lock);
	if (!n_th && r->n) {
		r->running = 1;
		promote_worker(r); /* no thread: all here */
	}
	pthread_mutex_lock(&r->lock);
	while (r->running > 0) {
		struct timespec until;
		double now;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += PROMOTE_TICK_MS * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&r->cond, &r->lock, &until);
		now = promote_now();
		if (tty) {
			promote_line(r, now - start, promote_term_width(), line,
				     sizeof(line));
			pthread_mutex_unlock(&r->lock);
			log_status(line);
			pthread_mutex_lock(&r->lock);
		} else if ((now - last_log) * 1000 >= PROMOTE_LOG_EVERY_MS) {
			last_log = now;
			promote_line(r, now - start, 0, line, sizeof(line));
			pthread_mutex_unlock(&r->lock);
			log_info("%s", line);
			pthread_mutex_lock(&r->lock);
		}
	}
	promote_line(r, promote_now() - start, tty ? promote_term_width() : 0,
		     line, sizeof(line));
	pthread_mutex_unlock(&r->lock);
	for (i = 0; i < n_th; i++)
		pthread_join(th[i], NULL);
	if (tty) {
		log_status(line); /* the final state stays on the screen */
		log_status(NULL);
		fputs(line, stderr);
		fputc('\n', stderr);
	} else {
		log_info("%s", line);
	}
}

/* Root, anyone when [fs] project_group is unset, or its members: the
 * mount's rule for creating projects and promoting into them. 0 or
 * -EACCES (said on stderr), -EINVAL for a group that does not exist. */
static int promote_may(const struct tool_env *t, const char *prefix)
{
	const char *g = t->cfg.project_group;
	gid_t gid, groups[256];
	struct group *gr;
	char *end;
	int n, i;

	if (!g || !*g || getuid() == 0)
		return 0;
	gr = getgrnam(g);
	if (gr) {
		gid = gr->gr_gid;
	} else {
		errno = 0;
		gid = (gid_t)strtoul(g, &end, 10);
		if (errno || *end || end == g) {
			fprintf(stderr,
				"custodyfs promote: [fs] project_group %s: no "
				"such group\n",
				g);
			return -EINVAL;
		}
	}
	if (getgid() == gid)
		return 0;
	n = getgroups((int)(sizeof(groups) / sizeof(groups[0])), groups);
	for (i = 0; i < n; i++)
		if (groups[i] == gid)
			return 0;
	fprintf(stderr,
		"custodyfs promote: project %s: refused to uid %u: not in "
		"[fs] project_group %s\n",
		prefix, (unsigned)getuid(), g);
	return -EACCES;
}

/* A project name as the mount takes it (user.custodyfs.name): 1 to
 * PROMOTE_NAME_MAX bytes of UTF-8, no control characters. */
static int promote_name_ok(const char *name)
{
	size_t i, l = strlen(name);

	if (!l || l > PROMOTE_NAME_MAX || !names_utf8_valid(name, l))
		return 0;
	for (i = 0; i < l; i++)
		if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
			return 0;
	return 1;
}

static int promote_live_cmp(const void *a, const void *b)
{
	return strcmp(((const struct reception_live *)a)->object_key,
		      ((const struct reception_live *)b)->object_key);
}

/* Does key (as listed: etag, size) have a live reception row of that
 * upload (a row without an ETag or a size, the seed's, counts, as in
 * promote.c)? rows sorted by key (byte order). */
static int promote_rowed(const struct reception_live *rows, size_t n,
			 const struct s3_list_entry *le)
{
	struct reception_live k = {.object_key = le->key};
	const struct reception_live *row =
	    bsearch(&k, rows, n, sizeof(*rows), promote_live_cmp);

	return row &&
	       (!row->etag || !row->etag[0] || !strcmp(row->etag, le->etag)) &&
	       (row->size < 0 || (uint64_t)row->size == le->size);
}

/* The files to promote: the listed objects under dir (not markers) with a
 * live reception row of their upload, into r->items; *unlogged counts
 * those without (left in reception). 0 or -errno. */
static int promote_select(struct promote_run *r, struct s3_list_result *ls,
			  size_t *unlogged)
{
	size_t i, j, b;

	r->items = calloc(ls->n_entries + 1, sizeof(*r->items));
	if (!r->items)
		return -ENOMEM;
	for (b = 0; b < ls->n_entries; b += PROMOTE_KEYS_BATCH) {
		size_t nb = ls->n_entries - b < PROMOTE_KEYS_BATCH
				? ls->n_entries - b
				: PROMOTE_KEYS_BATCH;
		const char *keys[PROMOTE_KEYS_BATCH];
		struct reception_live *rows = NULL;
		size_t n_rows = 0, nk = 0;
		int rc;

		for (j = 0; j < nb; j++) {
			const char *k = ls->entries[b + j].key;

			if (*k && k[strlen(k) - 1] != '/')
				keys[nk++] = k;
		}
		if (!nk)
			continue;
		rc =
		    db_reception_live_keys(r->t->db, r->t->cfg.reception_bucket,
					   keys, nk, &rows, &n_rows);
		if (rc)
			return rc;
		qsort(rows, n_rows, sizeof(*rows), promote_live_cmp);
		for (j = 0; j < nb; j++) {
			struct s3_list_entry *le = &ls->entries[b + j];
			size_t kl = strlen(le->key);

			if (!kl || le->key[kl - 1] == '/')
				continue; /* a directory marker */
			if (!promote_rowed(rows, n_rows, le)) {
				char shown[NAMES_MAX_KEY * 4 + 1];

				log_warn(
				    "%s: not logged yet (no reception "
				    "row of this upload): left in "
				    "reception",
				    tool_shown(le->key, shown, sizeof(shown)));
				(*unlogged)++;
				continue;
			}
			i = r->n++;
			r->items[i].key = le->key; /* borrowed from ls */
			r->items[i].size = le->size;
			r->total_bytes += le->size;
		}
		db_reception_live_free(rows, n_rows);
	}
	return 0;
}

/* Selects or creates the project. *created set. 0, or TOOL_USAGE /
 * TOOL_FAILED with a message on stderr. */
static int promote_project(struct promote_run *r, const char *name,
			   int *created, char *shown, size_t shown_len)
{
	int rc;

	rc = db_project_create(r->t->db, r->prefix, name, &r->who, NULL);
	if (rc == -EINPROGRESS) /* the COMMIT's answer was lost: look */
		rc = db_project_name(r->t->db, r->prefix, shown, shown_len)
			 ? -EIO
			 : -EEXIST;
	*created = rc == 0;
	if (rc && rc != -EEXIST) {
		fprintf(stderr,
			"custodyfs promote: project %s cannot be created: "
			"%s\n",
			r->prefix, strerror(-rc));
		return TOOL_FAILED;
	}
	rc = db_project_name(r->t->db, r->prefix, shown, shown_len);
	if (rc) {
		fprintf(stderr, "custodyfs promote: project %s: %s\n",
			r->prefix, strerror(-rc));
		return TOOL_FAILED;
	}
	if (!*created && name && strcmp(name, shown)) {
		fprintf(stderr,
			"custodyfs promote: project %s exists, named \"%s\", "
			"not \"%s\": nothing promoted (rename it with "
			"setfattr -n user.custodyfs.name on a mount, or leave "
			"--name out)\n",
			r->prefix, shown, name);
		return TOOL_USAGE;
	}
	if (*created)
		log_info("project %s (\"%s\") created by %s (uid %u)",
			 r->prefix, shown, r->who.user, (unsigned)r->who.uid);
	return 0;
}

static void promote_summary(struct promote_run *r, int json, int created,
			    const char *pname, const char *dir, size_t unlogged,
			    size_t logged, double elapsed)
{
	size_t i, not_tried = r->n - r->done;
	char b[32], shown[NAMES_MAX_KEY * 4 + 1];

	if (json) {
		printf("{\"ok\": %s, \"project\": ",
		       r->failed || r->by_outcome[DB_OUT_CONFLICT] || not_tried
			   ? "false"
			   : "true");
		tool_json_str(stdout, r->prefix);
		printf(", \"project_name\": ");
		tool_json_str(stdout, pname);
		printf(", \"project_created\": %s, \"prefix_in_inbox\": ",
		       created ? "true" : "false");
		tool_json_str(stdout, dir);
		printf(", \"files\": %zu, \"done\": %zu, \"copied\": %zu, "
		       "\"restored\": %zu, \"adopted\": %zu, \"duplicates\": "
		       "%zu, \"duplicates_path\": %zu, \"duplicates_content\": "
		       "%zu, \"conflicts\": %zu, \"failed\": %zu, "
		       "\"not_tried\": %zu, \"not_logged\": %zu, "
		       "\"logged_now\": %zu, \"bytes_copied\": %llu, "
		       "\"seconds\": %.3f, \"failures\": [",
		       r->n, r->done, r->by_outcome[DB_OUT_COPIED],
		       r->by_outcome[DB_OUT_RESTORED],
		       r->by_outcome[DB_OUT_ADOPTED],
		       r->by_outcome[DB_OUT_DUPLICATE] +
			   r->by_outcome[DB_OUT_DUPLICATE_CONTENT],
		       r->by_outcome[DB_OUT_DUPLICATE],
		       r->by_outcome[DB_OUT_DUPLICATE_CONTENT],
		       r->by_outcome[DB_OUT_CONFLICT], r->failed, not_tried,
		       unlogged, logged, (unsigned long long)r->bytes_stored,
		       elapsed);
		for (i = 0; i < r->n_fail; i++) {
			printf("%s{\"key\": ", i ? ", " : "");
			tool_json_str(stdout, r->fail_key[i]);
			printf(", \"error\": ");
			tool_json_str(stdout, r->fail_rc[i] == -EEXIST
						  ? "conflict"
						  : strerror(-r->fail_rc[i]));
			printf("}");
		}
		printf("]}\n");
		return;
	}
	tool_bytes(b, sizeof(b), (double)r->bytes_stored);
	printf("project     %s \"%s\" (%s)\n", r->prefix, pname,
	       created ? "created" : "selected");
	printf("files       %zu in inbox/%s%s\n", r->n, dir ? dir : "",
	       dir ? "/" : "");
	printf("copied      %zu  (%s; restored %zu, adopted %zu)\n",
	       r->by_outcome[DB_OUT_COPIED] + r->by_outcome[DB_OUT_RESTORED] +
		   r->by_outcome[DB_OUT_ADOPTED],
	       b, r->by_outcome[DB_OUT_RESTORED],
	       r->by_outcome[DB_OUT_ADOPTED]);
	printf("duplicates  %zu  (same path %zu, same content %zu)\n",
	       r->by_outcome[DB_OUT_DUPLICATE] +
		   r->by_outcome[DB_OUT_DUPLICATE_CONTENT],
	       r->by_outcome[DB_OUT_DUPLICATE],
	       r->by_outcome[DB_OUT_DUPLICATE_CONTENT]);
	printf("conflicts   %zu\nfailed      %zu\n",
	       r->by_outcome[DB_OUT_CONFLICT], r->failed);
	if (not_tried)
		printf("not tried   %zu  (interrupted)\n", not_tried);
	printf("not logged  %zu  (no reception row yet: left in reception)\n",
	       unlogged);
	printf("logged now  %zu  (arrived by other routes, logged before "
	       "their promotion)\n",
	       logged);
	printf("time        %.1f s\n", elapsed);
	for (i = 0; i < r->n_fail; i++)
		printf("  %s: %s\n",
		       tool_shown(r->fail_key[i], shown, sizeof(shown)),
		       r->fail_rc[i] == -EEXIST ? "conflict"
						: strerror(-r->fail_rc[i]));
}

int tool_promote(int argc, char **argv)
{
	enum { O_PROJECT = 256, O_NAME, O_DIR, O_WORKERS, O_JSON };
	static const struct option lopts[] = {
	    {"project", required_argument, NULL, O_PROJECT},
	    {"name", required_argument, NULL, O_NAME},
	    {"prefix-in-inbox", required_argument, NULL, O_DIR},
	    {"workers", required_argument, NULL, O_WORKERS},
	    {"json", no_argument, NULL, O_JSON},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct promote_run r = {0};
	struct s3_list_result ls = {0};
	struct reception *rcp = NULL;
	struct sigaction sa = {0};
	struct tool_env t;
	char *config = NULL, *prefix = NULL, *name = NULL, *dir = NULL;
	char *list_prefix = NULL, err[512], pname[1024] = "";
	size_t unlogged = 0, logged = 0;
	long workers = 0;
	int json = 0, c, rc, created = 0, env_loaded = 0, tty;
	int status = TOOL_USAGE;
	double start;

	optind = 1;
	while ((c = getopt_long(argc, argv, "o:h", lopts, NULL)) != -1) {
		char *end;

		switch (c) {
		case 'o':
			if (tool_parse_o("promote", optarg, &config))
				goto out;
			break;
		case O_PROJECT:
			free(prefix);
			prefix = strdup(optarg);
			break;
		case O_NAME:
			free(name);
			name = strdup(optarg);
			break;
		case O_DIR:
			free(dir);
			dir = strdup(optarg);
			break;
		case O_WORKERS:
			errno = 0;
			workers = strtol(optarg, &end, 10);
			if (errno || *end || workers < 1 ||
			    workers > PROMOTE_TOOL_WORKERS_MAX) {
				fprintf(stderr,
					"custodyfs promote: --workers: 1 to "
					"%d\n",
					PROMOTE_TOOL_WORKERS_MAX);
				goto out;
			}
			break;
		case O_JSON:
			json = 1;
			break;
		case 'h':
			promote_usage(stdout);
			status = TOOL_OK;
			goto out;
		default:
			promote_usage(stderr);
			goto out;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "custodyfs promote: unexpected argument %s\n",
			argv[optind]);
		goto out;
	}
	if (!prefix) {
		fprintf(stderr, "custodyfs promote: missing --project\n");
		promote_usage(stderr);
		goto out;
	}
	if (!db_project_prefix_valid(prefix)) {
		fprintf(stderr,
			"custodyfs promote: project prefix \"%s\": 1 to 63 of "
			"a-z 0-9 . _ -, starting with a letter or digit\n",
			prefix);
		goto out;
	}
	if (name && !promote_name_ok(name)) {
		fprintf(stderr,
			"custodyfs promote: --name: 1 to %d bytes of UTF-8 "
			"without control characters\n",
			PROMOTE_NAME_MAX);
		goto out;
	}
	if (dir) {
		size_t l = strlen(dir);

		while (l > 0 && dir[l - 1] == '/')
			dir[--l] = '\0';
		if (!l || names_check_relpath(dir, 0)) {
			fprintf(stderr,
				"custodyfs promote: --prefix-in-inbox: not a "
				"path in inbox/\n");
			goto out;
		}
		if (asprintf(&list_prefix, "%s/", dir) < 0) {
			list_prefix = NULL;
			status = TOOL_FAILED;
			goto out;
		}
	}
	rc = tool_env_load(&t, "promote", config);
	env_loaded = 1;
	if (rc) {
		status = rc;
		goto out;
	}
	status = TOOL_FAILED;
	if (workers > 0)
		t.cfg.promote_workers = (int)workers;
	if (t.cfg.promote_workers < 1)
		t.cfg.promote_workers = 1;
	if (t.cfg.promote_workers > PROMOTE_TOOL_WORKERS_MAX)
		t.cfg.promote_workers = PROMOTE_TOOL_WORKERS_MAX;
	t.cfg.scan_interval_s = 0; /* one scan, below */
	tty = isatty(STDERR_FILENO);
	if (tty && t.cfg.log_level > LOG_LVL_WARN)
		log_set_level(LOG_LVL_WARN); /* per-file lines: the bar */
	if (promote_may(&t, prefix)) {
		status = TOOL_USAGE;
		goto out;
	}
	/* 1. Nothing is changed unless the store answers. */
	rc = tool_bucket_check(&t, t.cfg.reception_bucket);
	if (!rc)
		rc = tool_bucket_check(&t, t.cfg.storage_bucket);
	if (rc) {
		fprintf(stderr,
			"custodyfs promote: the store does not answer (%s): "
			"nothing done\n",
			strerror(-rc));
		goto out;
	}
	if (tool_db_open(&t, t.cfg.promote_workers + 2, err, sizeof(err))) {
		fprintf(stderr, "custodyfs promote: database: %s\n", err);
		goto out;
	}
	rc = db_migrate(t.db);
	if (rc) {
		fprintf(stderr,
			"custodyfs promote: database migration failed: %s\n",
			strerror(-rc));
		goto out;
	}
	/* 2. What came by other routes gets its row, as a mount's scan. */
	rcp = reception_new(&t.cfg, t.s3, t.db);
	if (!rcp)
		goto out;
	rc = reception_scan(rcp, list_prefix ? list_prefix : "", &logged);
	reception_free(rcp);
	rcp = NULL;
	if (rc) {
		fprintf(stderr,
			"custodyfs promote: reception scan: %s: nothing "
			"promoted\n",
			strerror(-rc));
		goto out;
	}
	rc = s3_list_all(t.s3, t.cfg.reception_bucket, list_prefix, NULL, 0,
			 &ls);
	if (rc) {
		fprintf(stderr,
			"custodyfs promote: listing %s: %s: nothing "
			"promoted\n",
			t.cfg.reception_bucket, strerror(-rc));
		goto out;
	}
	r.t = &t;
	r.prefix = prefix;
	tool_actor(&t, &r.who);
	pthread_mutex_init(&r.lock, NULL);
	pthread_cond_init(&r.cond, NULL);
	r.fail_key = calloc(PROMOTE_FAILURES_MAX, sizeof(*r.fail_key));
	r.fail_rc = calloc(PROMOTE_FAILURES_MAX, sizeof(*r.fail_rc));
	if (!r.fail_key || !r.fail_rc)
		goto out_run;
	rc = promote_select(&r, &ls, &unlogged);
	if (rc) {
		fprintf(stderr,
			"custodyfs promote: reception rows: %s: nothing "
			"promoted\n",
			strerror(-rc));
		goto out_run;
	}
	/* 3. The project. */
	rc = promote_project(&r, name, &created, pname, sizeof(pname));
	if (rc) {
		status = rc;
		goto out_run;
	}
	/* 4. The files. */
	r.p = promote_new(&t.cfg, t.s3, t.db, &rc);
	if (!r.p) {
		fprintf(stderr,
			"custodyfs promote: cannot take a journal owner id: "
			"%s\n",
			strerror(-rc));
		goto out_run;
	}
	log_info("promoting %zu files from %s/%s to %s/%s/ on %d workers", r.n,
		 t.cfg.reception_bucket, list_prefix ? list_prefix : "",
		 t.cfg.storage_bucket, prefix, t.cfg.promote_workers);
	sa.sa_handler = promote_on_signal;
	sa.sa_flags = SA_RESETHAND; /* a second signal kills */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	start = promote_now();
	promote_run_all(&r, t.cfg.promote_workers, tty);
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	promote_summary(&r, json, created, pname, dir, unlogged, logged,
			promote_now() - start);
	status = r.failed || r.by_outcome[DB_OUT_CONFLICT] || r.done < r.n
		     ? TOOL_FAILED
		     : TOOL_OK;
out_run:
	promote_free(r.p);
	pthread_cond_destroy(&r.cond);
	pthread_mutex_destroy(&r.lock);
out:
	fflush(stdout);
	free(r.items);
	free(r.fail_key);
	free(r.fail_rc);
	s3xml_list_free(&ls);
	reception_free(rcp);
	if (env_loaded)
		tool_env_free(&t);
	free(list_prefix);
	free(config);
	free(prefix);
	free(name);
	free(dir);
	return status;
}
