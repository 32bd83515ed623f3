/* main.c - custodyfs: mount the chain-of-custody file system.
 *
 *   custodyfs [-f] [-d] -o config=FILE[,fuse options] MOUNTPOINT
 *   custodyfs status | recover | promote | reconcile | cleanup | verify
 *                                             (tools/, no FUSE)
 *
 * Secrets come only from the config file (mode 0600), the environment or
 * the AWS credentials file: never from argv. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "chain.h"
#include "db_attrs.h"
#include "fs.h"
#include "fuseinit.h"
#include "inbox.h"
#include "inval.h"
#include "ll.h"
#include "log.h"
#include "monitor.h"
#include "notify.h"
#include "projects.h"
#include "tools.h"

#include <fuse_lowlevel.h>

struct cfs_opts {
	char *config;
	int show_version;
	int show_help;
	char *first_nonopt; /* SOURCE of "custodyfs SOURCE MOUNTPOINT" */
	int n_nonopt;
	int no_default_permissions; /* -o no_default_permissions */
	char *loglevel;		    /* -o loglevel=, over [fs] log_level */
	int lowlevel;		    /* -o lowlevel: libfuse's low-level API */
};

#define CFS_OPT(t, p, v)                                                       \
	{                                                                      \
		t, offsetof(struct cfs_opts, p), v                             \
	}

enum { KEY_DISCARD = 1 };

static const struct fuse_opt cfs_opt_spec[] = {
    CFS_OPT("config=%s", config, 0),
    CFS_OPT("loglevel=%s", loglevel, 0),
    CFS_OPT("--version", show_version, 1),
    CFS_OPT("-V", show_version, 1),
    CFS_OPT("--help", show_help, 1),
    CFS_OPT("-h", show_help, 1),
    CFS_OPT("no_default_permissions", no_default_permissions, 1),
    CFS_OPT("lowlevel", lowlevel, 1),
    /* fstab-only options, meaningless to FUSE: dropped (mount(8) and
     * mount.fuse3 drop most of them first; mount.fuse3 run by hand or by
     * another tool passes them on). x-* options: cfs_opt_proc. */
    FUSE_OPT_KEY("_netdev", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("defaults", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("nouser", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("noauto", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("auto", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("nofail", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("user", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("users", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("comment=", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_END,
};

/* mount(8) and fstab run "custodyfs SOURCE MOUNTPOINT -o opts" (through
 * mount.fuse3): SOURCE is the config file unless -o config= is given. */
static int cfs_opt_proc(void *data, const char *arg, int key,
			struct fuse_args *outargs)
{
	struct cfs_opts *o = data;

	/* x-systemd.automount, x-systemd.idle-timeout=, x-gvfs-show, ...:
	 * comments for other tools (mount(8): "x-*"), never for FUSE. */
	if (key == FUSE_OPT_KEY_OPT && !strncmp(arg, "x-", 2))
		return 0;
	if (key != FUSE_OPT_KEY_NONOPT)
		return 1;
	if (o->n_nonopt++ == 0) {
		o->first_nonopt = strdup(arg);
		return 0;
	}
	return 1;
}

static void usage(const char *prog)
{
	printf("usage: %s [-f] [-d] -o config=FILE[,options] MOUNTPOINT\n"
	       "       %s CONFIG MOUNTPOINT [-o options]   (mount(8), fstab)\n"
	       "\n"
	       "custodyfs mounts a chain-of-custody file system:\n"
	       "  inbox/     files dropped here are received into the "
	       "reception bucket\n"
	       "  projects/  the definitive store, one directory per project\n"
	       "  audit/     read-only views of the audit tables\n"
	       "\n"
	       "options:\n"
	       "  -o config=FILE   INI configuration ([s3], [postgres], "
	       "[fs]); must be mode 0600\n"
	       "                   when it holds a secret\n"
	       "  -f               stay in the foreground (log to stderr; "
	       "else syslog)\n"
	       "  -o loglevel=L    error, warning, info (default) or debug\n"
	       "                   (also [fs] log_level)\n"
	       "  -d               debug: foreground and FUSE request log\n"
	       "  -o allow_other   let other users use the mount\n"
	       "  -o no_default_permissions\n"
	       "                   do not let the kernel check permissions "
	       "(single-user\n"
	       "                   mounts; also [fs] default_permissions = "
	       "false).\n"
	       "                   By default it checks them: inbox/ is a "
	       "sticky shared\n"
	       "                   drop (1777), files are owned by who wrote "
	       "them.\n"
	       "                   Without it the daemon still refuses "
	       "(EPERM) a chmod\n"
	       "                   by another than the owner and a chown "
	       "by another\n"
	       "                   than root (the owner may change the "
	       "group to its own)\n"
	       "  -o lowlevel      experimental: serve the mount through "
	       "libfuse's low-level\n"
	       "                   API (node ids of the daemon's own); "
	       "behaves as without it\n"
	       "  -V, --version    print the version\n"
	       "  -h, --help       this text\n"
	       "\n"
	       "Unmount with: fusermount3 -u MOUNTPOINT\n"
	       "\n"
	       "batch tools (no mount needed; each has --help):\n"
	       "  %s status  -o config=FILE [--json]\n"
	       "  %s recover -o config=FILE [--json]\n"
	       "  %s promote --project P [--name N] "
	       "[--prefix-in-inbox DIR] -o config=FILE\n"
	       "                    [--workers N] [--json]\n"
	       "  %s reconcile -o config=FILE [--apply] [--verify-hashes] "
	       "[--json]\n"
	       "  %s cleanup -o config=FILE [--dry-run] [--older-than D] "
	       "[--verify-hashes]\n"
	       "                    [--json]\n"
	       "  %s verify  -o config=FILE [--anchor] [--json]\n",
	       prog, prog, prog, prog, prog, prog, prog, prog);
}

static int make_dirs(const char *path)
{
	char *p = strdup(path), *s;
	int rc = 0;

	if (!p)
		return -ENOMEM;
	for (s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0700) != 0 && errno != EEXIST)
			rc = -errno;
		*s = '/';
	}
	if (!rc && mkdir(p, 0700) != 0 && errno != EEXIST)
		rc = -errno;
	free(p);
	return rc;
}

static int cfs_setup(const char *config, const char *loglevel)
{
	char err[512];
	long added = 0;
	int rc;

	rc = cfg_load(config, &cfs->cfg, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "custodyfs: config: %s\n", err);
		return rc;
	}
	if (loglevel) {
		enum log_level lvl;

		if (log_level_parse(loglevel, &lvl) != 0) {
			fprintf(stderr,
				"custodyfs: -o loglevel=%s: expected error, "
				"warning, info, debug or 0..3\n",
				loglevel);
			return -EINVAL;
		}
		cfs->cfg.log_level = (int)lvl;
	}
	log_set_level((enum log_level)cfs->cfg.log_level);
	rc = make_dirs(cfs->cfg.spool_dir);
	if (rc) {
		fprintf(stderr, "custodyfs: spool_dir %s: %s\n",
			cfs->cfg.spool_dir, strerror(-rc));
		return rc;
	}
	cfs->s3 = tool_s3_new(&cfs->cfg);
	if (!cfs->s3) {
		fprintf(stderr, "custodyfs: cannot set up the S3 client: %s\n",
			strerror(errno));
		return -EIO;
	}
	/* A certificate the config does not trust is a configuration error:
	 * refused now, not one EACCES per request once mounted. A store not
	 * reachable now is not (READY=1 waits for it: notify.c). */
	rc = s3_tls_check(cfs->s3, err, sizeof(err));
	if (rc == -EACCES || rc == -ENOMEM) {
		char shown[512];

		cfg_redact_url(cfs->cfg.endpoint, shown, sizeof(shown));
		fprintf(stderr,
			"custodyfs: [s3] endpoint %s: the store's TLS "
			"certificate cannot be verified: %s. Set [s3] ca_file "
			"to the PEM file of the "
			"certificate authority that signed it (verify_tls = "
			"false turns verification off: not for production)\n",
			shown, rc == -ENOMEM ? strerror(ENOMEM) : err);
		return rc;
	}
	if (rc) {
		char shown[512];

		cfg_redact_url(cfs->cfg.endpoint, shown, sizeof(shown));
		log_warn("[s3] endpoint %s: no TLS connection now (%s): "
			 "mounting anyway, the certificate is checked with "
			 "every request",
			 shown, err);
	}
	cfs->db =
	    db_open(cfs->cfg.conninfo, cfs->cfg.db_pool_size, err, sizeof(err));
	if (!cfs->db) {
		fprintf(stderr, "custodyfs: database: %s\n", err);
		return -EIO;
	}
	rc = db_migrate(cfs->db);
	if (rc) {
		fprintf(stderr, "custodyfs: database migration failed: %s\n",
			strerror(-rc));
		return rc;
	}
	if (gethostname(cfs->host, sizeof(cfs->host) - 1) != 0)
		snprintf(cfs->host, sizeof(cfs->host), "unknown");
	cfs->uid = getuid();
	cfs->gid = getgid();
	cfs->foreign_uid =
	    cfs->cfg.foreign_uid < 0 ? cfs->uid : (uid_t)cfs->cfg.foreign_uid;
	cfs->foreign_gid =
	    cfs->cfg.foreign_gid < 0 ? cfs->gid : (gid_t)cfs->cfg.foreign_gid;
	cfs->started = time(NULL);
	/* Files written before ownership was kept are their writer's. */
	rc = db_attrs_backfill(cfs->db, cfs->cfg.reception_bucket,
			       (int64_t)cfs->foreign_gid, &added);
	if (rc) {
		fprintf(stderr, "custodyfs: owners of received files: %s\n",
			strerror(-rc));
		return rc;
	}
	if (added > 0)
		log_info("owners of %ld received files taken from the "
			 "reception audit (received_uid)",
			 added);
	return projects_init();
}

int cfs_stop_due(void)
{
	struct timespec now;
	int64_t ms, since;

	if (!cfs->se || !fuse_session_exited(cfs->se))
		return 0;
	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	pthread_mutex_lock(&cfs->lock);
	if (!cfs->stop_seen_ms) {
		cfs->stop_seen_ms = ms;
		log_info("stopping: work in flight is finished; directory "
			 "promotions start no new file after %d s",
			 cfs->cfg.stop_timeout_s);
	}
	since = ms - cfs->stop_seen_ms;
	pthread_mutex_unlock(&cfs->lock);
	return since >= (int64_t)cfs->cfg.stop_timeout_s * 1000;
}

/* The sweeps of what processes that are gone left: multipart uploads
 * open (their journals in the spool directory), once, and their rows
 * (hidden names' and pending attributes, and their heartbeats), at once
 * and then every cfs_live_sweep_ms until the stop: a process is gone only
 * once its heartbeat is stale (db_live_watch), which a crash just before
 * this start is not (review-36). It runs on a thread of its own once the
 * mount is up: a store or a database that does not answer must not hold
 * up requests nor a stop. cfs_teardown stops and joins it, or leaves it
 * behind (then the S3 client, the config and the database are not
 * freed). */
static struct {
	pthread_t thread;
	int started;	 /* set before the loop, read at teardown */
	atomic_int stop; /* set by cfs_teardown: take no next upload */
	atomic_int done; /* set by the thread as it ends */
} sweeper;

/* The period of the rows' sweep: a third of the grace, 1 s to 10 s, so
 * that a crashed process's rows go within about grace + period. */
static long cfs_live_sweep_ms(void)
{
	long ms = (long)cfs->cfg.live_grace_s * 1000 / 3;

	return ms < 1000 ? 1000 : ms > 10000 ? 10000 : ms;
}

/* What gone processes left in the database (each sweep logs itself). */
static void cfs_sweep_gone(void)
{
	/* Not before this process's own heartbeats have been written for a
	 * grace without a failure: at start, and after a database outage
	 * (every heartbeat is then stale, and live processes write theirs
	 * again within a second or so: review-37 F3). */
	if (db_live_steady_ms(cfs->db) < (long)cfs->cfg.live_grace_s * 1000) {
		log_debug("sweep of gone processes' rows: waiting for this "
			  "process's heartbeats to be steady for %d s",
			  cfs->cfg.live_grace_s);
		return;
	}
	/* A stop meanwhile ends it between steps (review-37 F6). */
	if (atomic_load(&sweeper.stop))
		return;
	attrov_sweep_hidden();
	if (atomic_load(&sweeper.stop))
		return;
	attrov_sweep_pending();
	if (atomic_load(&sweeper.stop))
		return;
	if (db_live_beats_sweep(cfs->db) < 0)
		log_debug("heartbeats of processes that are gone: not "
			  "dropped (the next sweep tries again)");
}

static void *cfs_sweep_main(void *arg)
{
	struct timespec nap = {0, 50 * 1000000L};
	size_t swept = 0;
	long waited;
	int rc;

	(void)arg;
	cfs_sweep_gone();
	rc = upload_journal_sweep(cfs->s3, cfs->cfg.spool_dir, &sweeper.stop,
				  &swept);
	if (swept)
		log_info("aborted %zu multipart uploads left open by processes "
			 "that died",
			 swept);
	if (rc == -ECANCELED)
		log_info("multipart uploads left by processes that died: "
			 "sweep cut short by the stop (the next mount or "
			 "custodyfs recover goes on)");
	else if (rc)
		log_warn("multipart uploads left by processes that died: %s "
			 "(the next mount or custodyfs recover tries again)",
			 strerror(-rc));
	while (!atomic_load(&sweeper.stop)) {
		for (waited = 0; waited < cfs_live_sweep_ms() &&
				 !atomic_load(&sweeper.stop);
		     waited += 50)
			nanosleep(&nap, NULL);
		if (!atomic_load(&sweeper.stop))
			cfs_sweep_gone();
	}
	atomic_store(&sweeper.done, 1);
	return NULL;
}

/* Stops the sweep thread: waits for it at most wait_ms (it finishes the
 * abort it is in, then takes no other). Returns 1 when it is still running
 * (it is detached then, and still uses the S3 client and the config). */
static int cfs_sweep_stop(int wait_ms)
{
	struct timespec nap = {0, 50 * 1000000L};
	int waited = 0;

	if (!sweeper.started)
		return 0;
	atomic_store(&sweeper.stop, 1);
	while (!atomic_load(&sweeper.done) && waited < wait_ms) {
		nanosleep(&nap, NULL);
		waited += 50;
	}
	sweeper.started = 0;
	if (!atomic_load(&sweeper.done)) {
		log_warn("the sweep of what processes that died left is still "
			 "waiting for the store or the database: left behind "
			 "(the next mount or custodyfs recover goes on)");
		pthread_detach(sweeper.thread);
		return 1;
	}
	pthread_join(sweeper.thread, NULL);
	return 0;
}

/* Threads start after fuse_daemonize(): they would not survive its fork. */
static int cfs_start_workers(void)
{
	struct timespec now;
	char *jpath = NULL;
	int rc, jfd;

	clock_gettime(CLOCK_REALTIME, &now);
	snprintf(cfs->claimer, sizeof(cfs->claimer), "%s:%ld:%lld.%09ld",
		 cfs->host, (long)getpid(), (long long)now.tv_sec, now.tv_nsec);
	/* Before any request: other mounts' live claims are then never
	 * dropped or moved by this one's renames and removals. */
	rc = db_set_claimer(cfs->db, cfs->claimer);
	if (rc)
		return rc;
	/* Its liveness lock, lost with its session, is taken again within a
	 * second, and its heartbeat is written every second: other mounts
	 * take it for gone only when both lapsed (review-31 R1, review-36).
	 * What dead processes left goes in the background (cfs_sweep_main),
	 * never while this start waits. */
	rc = db_live_watch(cfs->db, cfs->cfg.live_grace_s);
	if (rc)
		return rc;
	/* This mount's new files keep their claims while open. */
	rc = ofile_claims_start();
	if (rc)
		log_warn("claims on new files' names: cannot start their "
			 "renewal (%s): a file open longer than [fs] "
			 "claim_lease may be taken over",
			 strerror(-rc));
	cfs->pool = upload_pool_new(cfs->cfg.upload_workers);
	if (!cfs->pool)
		return -ENOMEM;
	rc = upload_journal_open(cfs->cfg.spool_dir, &jfd, &jpath);
	if (rc == 0)
		upload_pool_set_journal(cfs->pool, jfd, jpath);
	else
		log_warn("no journal of multipart uploads in %s: %s (uploads "
			 "left open by a crash are not aborted later)",
			 cfs->cfg.spool_dir, strerror(-rc));
	/* Multipart uploads that processes which died with this spool
	 * directory left open are aborted in the background (a live
	 * mount's journal, this one's too, is locked: left alone). */
	rc = pthread_create(&sweeper.thread, NULL, cfs_sweep_main, NULL);
	if (rc == 0)
		sweeper.started = 1;
	else
		log_warn("multipart uploads left by processes that died: "
			 "cannot start the sweep (%s): the next mount or "
			 "custodyfs recover aborts them",
			 strerror(rc));
	cfs->rcp = reception_new(&cfs->cfg, cfs->s3, cfs->db);
	if (!cfs->rcp)
		return -ENOMEM;
	/* Its own database session holds this mount's journal owner lock:
	 * opened after the fork too. Then what crashed mounts left open. */
	cfs->promote = promote_new(&cfs->cfg, cfs->s3, cfs->db, &rc);
	if (!cfs->promote) {
		log_error("promotion: cannot take a journal owner id: %s",
			  strerror(-rc));
		return rc;
	}
	/* In the background: the mount answers meanwhile; a rename that
	 * meets an entry it has not reached yet finishes that one itself. */
	rc = promote_recover_start(cfs->promote);
	if (rc)
		log_error("promotion: recovery could not start (%s): open "
			  "entries are taken over by the promotions they "
			  "block, the next mount or custodyfs recover",
			  strerror(-rc));
	if (cfs->cfg.chain_anchor_interval_s > 0) {
		cfs->anchorer = chain_anchorer_start(
		    cfs->db, cfs->s3, cfs->cfg.storage_bucket, cfs->host,
		    cfs->cfg.chain_anchor_interval_s);
		if (!cfs->anchorer)
			log_error("chain: periodic anchors could not start "
				  "(%s): custodyfs verify --anchor writes them",
				  strerror(errno));
	}
	return 0;
}

/* How long unmount waits for background listing refreshes. */
#define CFS_SHUTDOWN_WAIT_MS 10000
/* A kernel cache notification in flight at unmount (inval.c). */
#define INVAL_STOP_WAIT_MS 2000

/* Frees the daemon's state once the FUSE loop has ended (its worker
 * threads are joined then). Threads of our own go first: listing refreshes
 * (which feed the reception worker), then the reception worker, then open
 * files and the upload pool. Returns 1 when a listing refresh outlived its
 * bounded wait: it may still use the S3 client and the config, which are
 * then left allocated, and the caller must leave with _exit(). */
static int cfs_teardown(void)
{
	int stragglers, sweep_left;

	atomic_store(&sweeper.stop, 1); /* first: it ends meanwhile */
	stragglers = dcache_shutdown(CFS_SHUTDOWN_WAIT_MS);
	sweep_left = cfs_sweep_stop(CFS_SHUTDOWN_WAIT_MS);
	stragglers |= sweep_left;

	chain_anchorer_stop(cfs->anchorer);
	cfs->anchorer = NULL;
	ofile_claims_stop();

	promote_free(cfs->promote); /* the FUSE loop has ended: none runs */
	cfs->promote = NULL;
	reception_free(cfs->rcp);
	cfs->rcp = NULL;
	monitor_stop(); /* the final counts, once the workers are done */
	fh_free_all();	/* handles whose release never came (a stop) */
	ofile_free_all();
	upload_pool_free(cfs->pool);
	cfs->pool = NULL;
	dcache_free_all();
	projects_free_all();
	attrov_free_all();
	/* A sweep left behind may still read cfs->db: then it stays as it
	 * is, neither closed nor cleared (the process _exits, review-37
	 * F6). */
	if (!sweep_left) {
		db_close(cfs->db);
		cfs->db = NULL;
	}
	notify_join(); /* the readiness probe uses the S3 client */
	if (stragglers)
		return 1;
	s3_client_free(cfs->s3);
	cfs->s3 = NULL;
	cfg_free(&cfs->cfg);
	return 0;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts fo = {0};
	struct fuse_loop_config *lc = NULL;
	struct cfs_opts opts = {0};
	struct fuse *fuse = NULL;
	struct fuse_session *se = NULL;
	static struct cfs state;
	int rc = 1, abandoned = 0, inval_stuck = 0;
	long conn_id = -1;

	/* custodyfs status | recover | promote ...: the batch tools, no FUSE */
	if (argc >= 2 && tool_is_name(argv[1])) {
		log_init("custodyfs", 0, LOG_LVL_INFO);
		return tool_main(argc - 1, argv + 1);
	}
	cfs = &state;
	pthread_mutex_init(&cfs->lock, NULL);
	if (fuse_opt_parse(&args, &opts, cfs_opt_spec, cfs_opt_proc) == -1)
		return 1;
	if (opts.n_nonopt == 1) {
		/* Only a mountpoint: give it back to libfuse. */
		if (fuse_opt_add_arg(&args, opts.first_nonopt) == -1)
			return 1;
	} else if (opts.n_nonopt >= 2 && !opts.config &&
		   strcmp(opts.first_nonopt, "custodyfs")) {
		opts.config = strdup(opts.first_nonopt);
	}
	if (opts.show_version) {
		printf("custodyfs %s (libfuse %s)\n", CUSTODYFS_VERSION,
		       fuse_pkgversion());
		rc = 0;
		goto out_args;
	}
	if (opts.show_help) {
		usage(argv[0]);
		rc = 0;
		goto out_args;
	}
	if (fuse_parse_cmdline(&args, &fo) != 0)
		goto out_args;
	if (!fo.mountpoint || !opts.config) {
		fprintf(stderr, "custodyfs: %s\n",
			!opts.config ? "missing -o config=FILE"
				     : "missing MOUNTPOINT");
		usage(argv[0]);
		rc = 2;
		goto out_args;
	}
	log_init("custodyfs", !fo.foreground, LOG_LVL_INFO);
	/* Resolved now, before the mount hides the directory (and before a
	 * lookup could re-enter this file system). */
	cfs->mountpoint = realpath(fo.mountpoint, NULL);
	if (!cfs->mountpoint) {
		fprintf(stderr, "custodyfs: mountpoint %s: %s\n", fo.mountpoint,
			strerror(errno));
		goto out_setup;
	}
	if (cfs_setup(opts.config, opts.loglevel) != 0)
		goto out_setup;
	/* The kernel checks permissions against what getattr reports (modes
	 * and owners from attrs.c), unless turned off for a single user. */
	cfs->perm_checks =
	    cfs->cfg.default_permissions && !opts.no_default_permissions;
	if (cfs->perm_checks &&
	    fuse_opt_add_arg(&args, "-odefault_permissions") == -1)
		goto out_setup;
	if (opts.lowlevel) {
		/* The low-level API over the same handlers (ll.h). */
		if (ll_setup() != 0)
			goto out_setup;
		se = fuse_session_new(&args, &cfs_ll_ops, sizeof(cfs_ll_ops),
				      cfs);
		if (!se) {
			ll_free_all();
			goto out_setup;
		}
		if (fuse_session_mount(se, fo.mountpoint) != 0)
			goto out_fuse;
	} else {
		fuse = fuse_new(&args, &cfs_ops, sizeof(cfs_ops), cfs);
		if (!fuse)
			goto out_setup;
		se = fuse_get_session(fuse);
		if (fuse_mount(fuse, fo.mountpoint) != 0)
			goto out_fuse;
	}
	/* The kernel's connection, for a stop stuck in it (fuseinit.h): by
	 * the device number of this mount's root, now, never by path. */
	conn_id = fuseinit_conn_id(cfs->mountpoint);
	if (conn_id < 0)
		log_warn("cannot tell the FUSE connection of %s: a stop stuck "
			 "in the kernel cannot abort it",
			 cfs->mountpoint);
	if (fuseinit_install(se) != 0)
		log_warn(
		    "cannot wrap the FUSE device I/O: lookups and listings "
		    "of one directory stay serialized");
	if (fuse_daemonize(fo.foreground) != 0)
		goto out_unmount;
	/* Before the workers: a stop while they start (with the mount in
	 * place) must end the session, to be unmounted cleanly once the loop
	 * sees it, not kill the daemon and leave a dead mount (review-36
	 * R6). */
	if (fuse_set_signal_handlers(se) != 0)
		goto out_unmount;
	if (cfs_start_workers() != 0) {
		log_error("cannot start worker threads");
		fuse_remove_signal_handlers(se);
		goto out_unmount;
	}
	cfs->se = se;
	/* Handlers never notify the kernel themselves (inval.h). */
	if (inval_start(fuse, se, cfs->mountpoint,
			conn_id >= 0 ? makedev(0, (unsigned)conn_id) : 0) != 0)
		log_warn("cannot start the kernel cache invalidation thread: "
			 "a file replaced in the store meanwhile shows its new "
			 "attributes once the kernel's cache times out");
	log_info("mounted %s (reception bucket %s, storage bucket %s, FUSE "
		 "connection %ld)",
		 fo.mountpoint, cfs->cfg.reception_bucket,
		 cfs->cfg.storage_bucket, conn_id);
	if (opts.lowlevel)
		log_info("served through libfuse's low-level API (-o lowlevel, "
			 "experimental)");
	/* READY=1 for systemd once the store answers too (notify.c). */
	if (notify_start() != 0)
		log_warn("cannot start the readiness thread: systemd is not "
			 "told the mount is ready");
	/* The metrics file and STATUS= (monitor.c). */
	if (monitor_start() != 0)
		log_warn("cannot start the metrics thread: no metrics file "
			 "and no STATUS= counters");
	if (fo.singlethread) {
		rc = fuse ? fuse_loop(fuse) : fuse_session_loop(se);
	} else {
		lc = fuse_loop_cfg_create();
		if (!lc)
			goto out_signals;
		fuse_loop_cfg_set_clone_fd(lc, fo.clone_fd);
		fuse_loop_cfg_set_max_threads(lc,
					      (unsigned)cfs->cfg.max_threads);
		fuse_loop_cfg_set_idle_threads(lc, 4);
		rc = fuse ? fuse_loop_mt(fuse, lc)
			  : fuse_session_loop_mt(se, lc);
		fuse_loop_cfg_destroy(lc);
	}
	/* libfuse returns the number of the signal that ended the loop:
	 * SIGTERM (systemctl stop, kill), SIGINT and SIGHUP are a requested
	 * stop, which unmounts cleanly below, not a failure. */
	if (rc == SIGTERM || rc == SIGINT || rc == SIGHUP || rc == -SIGTERM ||
	    rc == -SIGINT || rc == -SIGHUP)
		rc = 0;
	rc = rc ? 1 : 0;
	log_info("unmounted %s", fo.mountpoint);
out_signals:
	cfs->se = NULL; /* no request runs any more */
	notify_stopping();
	fuse_remove_signal_handlers(se);
	/* Before the unmount: a notification still waiting on the kernel
	 * then uses the session, which is never destroyed under it. */
	inval_stuck = inval_stop(INVAL_STOP_WAIT_MS);
	if (inval_stuck) {
		/* It waits in the kernel on a request the ended loop never
		 * answers (a page a READ holds locked): the process could not
		 * even exit under it. Aborting the connection fails those
		 * requests; the mount is going away anyway. */
		int arc = fuseinit_abort_conn(conn_id);

		if (arc)
			log_warn("cannot abort FUSE connection %ld: %s",
				 conn_id, strerror(-arc));
		else {
			log_warn(
			    "FUSE connection %ld aborted: the kernel cache "
			    "invalidation was stuck on it",
			    conn_id);
			inval_stuck = inval_stop(INVAL_STOP_WAIT_MS);
		}
		if (inval_stuck)
			inval_abandon();
	}
out_unmount:
	if (fuse)
		fuse_unmount(fuse);
	else
		fuse_session_unmount(se);
out_fuse:
	if (!inval_stuck && fuse) {
		fuse_destroy(fuse);
	} else if (!inval_stuck) {
		/* As fuse_destroy: hidden names unlinked, then the session
		 * (its destroy handler), then the nodes. */
		ll_unmounted();
		fuse_session_destroy(se);
		ll_free_all();
	}
out_setup:
	abandoned = cfs_teardown() || inval_stuck;
	free(cfs->mountpoint);
	cfs->mountpoint = NULL;
	free(fo.mountpoint);
out_args:
	free(opts.config);
	free(opts.loglevel);
	free(opts.first_nonopt);
	fuse_opt_free_args(&args);
	if (abandoned) {
		/* A refresh thread is still inside the S3 client, or the
		 * invalidation thread inside the kernel: no exit handlers
		 * (curl, OpenSSL, libfuse) may run under it. */
		fflush(NULL);
		_exit(rc);
	}
	return rc;
}
