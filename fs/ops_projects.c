/* ops_projects.c - projects/: the definitive store, read-only for now.
 *
 *   projects/            one directory per row of projects_registry
 *   projects/<p>         mkdir registers a project, rmdir removes one that
 *                        never stored a file; xattr user.custodyfs.name
 *   projects/<p>/...     the objects of the storage bucket under "<p>/",
 *                        plus duplicate_content rows of storage_audit shown
 *                        as symlinks to the stored file they duplicate
 *
 * The registry is cached for cache_ttl_ms (at most 2 s, so rows other tools
 * insert show within seconds); one fetch at a time, the others wait for it.
 * Object listings go through dircache.c's DC_STORE namespace.
 *
 * Empty subdirectories made with mkdir inside a project are kept in this
 * process's memory only: the storage bucket holds no object without a
 * storage_audit row (no directory markers), so such a directory lasts
 * until unmount, or until files stored under it make it a real prefix.
 *
 * Stored files are immutable: writing, truncating, unlinking or renaming
 * them is EPERM. Creating a file directly in a project is a drop plus a
 * promotion (ops_direct.c).
 * Handlers return 0 or -errno. */
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "db_projects.h"
#include "db_storage.h"
#include "fs.h"
#include "log.h"
#include "names.h"
#include "projects.h"

#define PJ_XATTR_NAME "user.custodyfs.name"
/* The registry is never older than this when it is read. */
#define PJ_TTL_MAX_MS 2000
/* A prefix not in the cached registry is looked up again when the cache
 * is older than this (another mount or tool may have just added it). */
#define PJ_MISS_REFETCH_MS 500
/* The longest name the xattr sets (bytes of UTF-8). */
#define PJ_NAME_MAX 1024
/* Names made by duplicate_content rows read per directory listing. */
#define PJ_LINKS_MAX 100000

/* A read-only handle on a stored object. */
struct pj_handle {
	struct fhandle base; /* base.area == AREA_PROJECTS; nothing else of
				it is used */
	char *key;
	uint64_t size;
	pthread_mutex_t lock;
	char etag[80];	  /* protected by lock: the object's; "" when the
			     listing named none */
	int served;	  /* protected by lock: data was returned from it */
	struct rawin win; /* protected by lock: read-ahead */
};

static pthread_mutex_t pj_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pj_cond = PTHREAD_COND_INITIALIZER;
static struct project_row *pj_rows;  /* protected by pj_lock */
static size_t pj_n;		     /* protected by pj_lock */
static int64_t pj_fetched_ms = -1;   /* protected by pj_lock; -1: refetch */
static int pj_fetching;		     /* protected by pj_lock: one fetch */
static uint64_t pj_gen;		     /* protected by pj_lock: bumped by
					every local change */
static char **pj_dirs;		     /* protected by pj_lock: empty
					subdirectories ("p/a/b") */
static size_t pj_ndirs, pj_dirs_cap; /* protected by pj_lock */

static int pj_group_set; /* set at init, read-only after */
static gid_t pj_group;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int projects_init(void)
{
	const char *g = cfs->cfg.project_group;
	struct group gr, *res = NULL;
	char buf[4096], *end;
	unsigned long v;

	if (!g)
		return 0;
	errno = 0;
	v = strtoul(g, &end, 10);
	if (*g >= '0' && *g <= '9' && !*end && !errno) {
		pj_group = (gid_t)v;
		pj_group_set = 1;
		return 0;
	}
	if (getgrnam_r(g, &gr, buf, sizeof(buf), &res) != 0 || !res) {
		fprintf(stderr,
			"custodyfs: [fs] project_group: no group named %s\n",
			g);
		return -EINVAL;
	}
	pj_group = gr.gr_gid;
	pj_group_set = 1;
	return 0;
}

void projects_free_all(void)
{
	size_t i;

	pthread_mutex_lock(&pj_lock);
	db_projects_free(pj_rows, pj_n);
	pj_rows = NULL;
	pj_n = 0;
	for (i = 0; i < pj_ndirs; i++)
		free(pj_dirs[i]);
	free(pj_dirs);
	pj_dirs = NULL;
	pj_ndirs = pj_dirs_cap = 0;
	pthread_mutex_unlock(&pj_lock);
}

/* ---- the registry cache ---- */

static int64_t pj_ttl(void)
{
	int64_t t = cfs->cfg.cache_ttl_ms;

	return t < PJ_TTL_MAX_MS ? t : PJ_TTL_MAX_MS;
}

/* Returns with pj_lock held and the registry no older than max_age_ms
 * (fetched by this thread, or by the one fetching it when we came), or
 * -errno without the lock. */
static int pj_registry_locked(int64_t max_age_ms)
{
	struct project_row *rows;
	int64_t start;
	uint64_t gen;
	size_t n;
	int rc;

	pthread_mutex_lock(&pj_lock);
	start = now_ms();
	for (;;) {
		if (pj_fetched_ms >= 0 &&
		    now_ms() - pj_fetched_ms <= max_age_ms)
			return 0;
		if (!pj_fetching)
			break;
		/* Being fetched: share that fetch if it began after we
		 * asked, else wait and look again. */
		while (pj_fetching)
			pthread_cond_wait(&pj_cond, &pj_lock);
		if (pj_fetched_ms >= start)
			return 0;
	}
	pj_fetching = 1;
	gen = pj_gen;
	pthread_mutex_unlock(&pj_lock);
	start = now_ms();
	rc = db_projects_list(cfs->db, &rows, &n, NULL);
	pthread_mutex_lock(&pj_lock);
	pj_fetching = 0;
	pthread_cond_broadcast(&pj_cond);
	if (rc) {
		pthread_mutex_unlock(&pj_lock);
		log_warn("projects/: cannot read projects_registry: %s",
			 strerror(-rc));
		return rc;
	}
	db_projects_free(pj_rows, pj_n);
	pj_rows = rows;
	pj_n = n;
	/* A local change during the fetch may not be in it: good for this
	 * caller, not for the next one. */
	pj_fetched_ms = gen == pj_gen ? start : -1;
	return 0;
}

/* Caller holds pj_lock. */
static struct project_row *pj_find_locked(const char *prefix, size_t len)
{
	size_t lo = 0, hi = pj_n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strncmp(pj_rows[mid].prefix, prefix, len);

		if (c == 0 && pj_rows[mid].prefix[len])
			c = 1;
		if (c == 0)
			return &pj_rows[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* The project of rel ("p" or "p/..."): 0 with pj_lock held and *row set,
 * -ENOENT or -errno without the lock. */
static int pj_project_locked(const char *rel, struct project_row **row)
{
	const char *slash = strchr(rel, '/');
	size_t len = slash ? (size_t)(slash - rel) : strlen(rel);
	int rc;

	if (len < 1 || len > DB_PROJECT_PREFIX_MAX)
		return -ENOENT;
	rc = pj_registry_locked(pj_ttl());
	if (rc)
		return rc;
	*row = pj_find_locked(rel, len);
	if (*row)
		return 0;
	if (now_ms() - pj_fetched_ms < PJ_MISS_REFETCH_MS) {
		/* Fetched a moment ago: a project created since (by another
		 * mount or tool, e.g. just before a mv into it) is asked for
		 * by its prefix alone, one index probe, not a whole list. */
		char prefix[DB_PROJECT_PREFIX_MAX + 1], name[256];

		pthread_mutex_unlock(&pj_lock);
		memcpy(prefix, rel, len);
		prefix[len] = 0;
		rc = db_project_name(cfs->db, prefix, name, sizeof(name));
		if (rc)
			return rc;
	} else {
		pthread_mutex_unlock(&pj_lock);
	}
	rc = pj_registry_locked(0);
	if (rc)
		return rc;
	*row = pj_find_locked(rel, len);
	if (*row)
		return 0;
	pthread_mutex_unlock(&pj_lock);
	return -ENOENT;
}

/* Does rel's project exist? 0, -ENOENT or -errno. */
static int pj_project_exists(const char *rel)
{
	struct project_row *row;
	int rc = pj_project_locked(rel, &row);

	if (rc == 0)
		pthread_mutex_unlock(&pj_lock);
	return rc;
}

/* The registry changed here: the next reader fetches it again. */
static void pj_registry_changed(void)
{
	pthread_mutex_lock(&pj_lock);
	pj_fetched_ms = -1;
	pj_gen++;
	pthread_mutex_unlock(&pj_lock);
}

/* ---- who may create, remove and name projects ---- */

/* Root, or anyone when [fs] project_group is unset, or a member of it
 * (primary or supplementary group of the calling thread). 0 or -EACCES. */
static int pj_may_administer(const char *what, const char *prefix)
{
	struct fuse_context *ctx = cfs_context();
	gid_t groups[256];
	int n, i;

	if (!pj_group_set || !ctx || ctx->uid == 0 || ctx->gid == pj_group)
		return 0;
	n = cfs_getgroups((int)(sizeof(groups) / sizeof(groups[0])), groups);
	for (i = 0; i < n && i < (int)(sizeof(groups) / sizeof(groups[0])); i++)
		if (groups[i] == pj_group)
			return 0;
	log_info("projects/%s: %s refused to uid %u: not in project_group %s%s",
		 prefix, what, (unsigned)ctx->uid, cfs->cfg.project_group,
		 n < 0 ? " (its groups could not be read)" : "");
	return -EACCES;
}

int projects_may_promote(const char *prefix)
{
	return pj_may_administer("promotion", prefix);
}

/* ---- empty subdirectories (memory) ---- */

/* Caller holds pj_lock. Index of rel in pj_dirs, or -1. */
static long pj_dir_find_locked(const char *rel)
{
	size_t i;

	for (i = 0; i < pj_ndirs; i++)
		if (!strcmp(pj_dirs[i], rel))
			return (long)i;
	return -1;
}

static int pj_dir_known(const char *rel)
{
	int r;

	pthread_mutex_lock(&pj_lock);
	r = pj_dir_find_locked(rel) >= 0;
	pthread_mutex_unlock(&pj_lock);
	return r;
}

/* Caller holds pj_lock. Does a kept directory lie under rel/? */
static int pj_dir_has_children_locked(const char *rel)
{
	size_t i, n = strlen(rel);

	for (i = 0; i < pj_ndirs; i++)
		if (!strncmp(pj_dirs[i], rel, n) && pj_dirs[i][n] == '/')
			return 1;
	return 0;
}

/* Caller holds pj_lock. Drops rel and everything kept under it. */
static void pj_dir_drop_tree_locked(const char *rel)
{
	size_t i = 0, n = strlen(rel);

	while (i < pj_ndirs) {
		if (!strncmp(pj_dirs[i], rel, n) &&
		    (!pj_dirs[i][n] || pj_dirs[i][n] == '/')) {
			free(pj_dirs[i]);
			pj_dirs[i] = pj_dirs[--pj_ndirs];
		} else {
			i++;
		}
	}
}

/* ---- attributes ---- */

/* projects/, a project and its subdirectories: writable by root and
 * [fs] project_group (0775, that group), or by anyone when no group is
 * set (0777), so that with default_permissions the kernel lets exactly
 * those users create projects and promote into them (the daemon checks
 * the same in pj_may_administer and projects_may_promote, for mounts
 * without it). Nothing here can be removed or renamed but by those
 * checks; stored files are immutable whatever the mode says. Not sticky:
 * the kernel would then refuse any user but root a rename onto a stored
 * name (a duplicate promotion), stored files being the mount's; a held
 * rsync temp file is kept its writer's by the daemon instead
 * (ops_direct.c, direct_may_remove). */
static void pj_dir_stat(struct stat *st, time_t when)
{
	memset(st, 0, sizeof(*st));
	st->st_mode = S_IFDIR | (pj_group_set ? 0775 : 0777);
	st->st_nlink = 2;
	st->st_uid = cfs->uid;
	st->st_gid = pj_group_set ? pj_group : cfs->gid;
	st->st_blksize = 1 << 20;
	st->st_mtime = st->st_ctime = st->st_atime = when;
}

static void pj_file_stat(struct stat *st, uint64_t size, time_t mtime)
{
	/* Stored files are immutable: no write bit. */
	cfs_ro_file_stat(st, size, &(struct timespec){.tv_sec = mtime});
	st->st_blksize = 1 << 20;
}

/* The relative path from the directory of link (a key "p/a/l") to target
 * (a key "p/b/t"), e.g. "../b/t". NULL: ENOMEM. */
static char *pj_relative(const char *link, const char *target)
{
	size_t common = 0, i, ups = 0, len;
	const char *rest;
	char *out, *o;

	/* Longest common run of whole directory components. */
	for (i = 0; link[i] && target[i] && link[i] == target[i]; i++)
		if (link[i] == '/')
			common = i + 1;
	for (i = common; link[i]; i++)
		if (link[i] == '/')
			ups++;
	rest = target + common;
	len = ups * 3 + strlen(rest) + 1;
	out = malloc(len);
	if (!out)
		return NULL;
	o = out;
	for (i = 0; i < ups; i++, o += 3)
		memcpy(o, "../", 3);
	memcpy(o, rest, strlen(rest) + 1);
	return out;
}

/* rel is a duplicate_content row's key: 0 with *target the stored key it
 * stands for (malloc'd), -ENOENT, or -errno. */
static int pj_link_target(const char *rel, char **target)
{
	return db_project_link_get(cfs->db, cfs->cfg.storage_bucket, rel,
				   target);
}

/* Does any duplicate_content row lie under rel/ (a directory only links
 * make)? 1, 0, or -errno. */
static int pj_links_under(const char *rel)
{
	struct project_link *rows;
	char *prefix;
	size_t n;
	int rc;

	if (asprintf(&prefix, "%s/", rel) < 0)
		return -ENOMEM;
	rc = db_project_links(cfs->db, cfs->cfg.storage_bucket, prefix, 1,
			      &rows, &n);
	free(prefix);
	if (rc)
		return rc;
	db_project_links_free(rows, n);
	return n > 0;
}

/* Errors: ENOENT, EIO (store or database unreachable), ENOMEM. */
int projects_getattr(const char *rel, struct stat *st)
{
	struct project_row *row;
	struct dentry e;
	char *target;
	int rc;

	if (!*rel) {
		pj_dir_stat(st, cfs->started);
		return 0;
	}
	rc = pj_project_locked(rel, &row);
	if (rc)
		return rc;
	if (!strchr(rel, '/')) {
		pj_dir_stat(st,
			    row->created_at ? row->created_at : cfs->started);
		pthread_mutex_unlock(&pj_lock);
		return 0;
	}
	pthread_mutex_unlock(&pj_lock);
	if (names_check_relpath(rel, 0))
		return -ENOENT;
	rc = dcache_lookup_in(DC_STORE, rel, &e);
	if (rc == 0) {
		if (e.is_dir)
			pj_dir_stat(st, cfs->started);
		else
			pj_file_stat(st, e.size, e.mtime);
		return 0;
	}
	if (rc != -ENOENT)
		return rc;
	if (pj_dir_known(rel)) {
		pj_dir_stat(st, cfs->started);
		return 0;
	}
	rc = pj_link_target(rel, &target);
	if (rc == 0) {
		char *r = pj_relative(rel, target);

		free(target);
		if (!r)
			return -ENOMEM;
		memset(st, 0, sizeof(*st));
		st->st_mode = S_IFLNK | 0777;
		st->st_nlink = 1;
		st->st_uid = cfs->uid;
		st->st_gid = cfs->gid;
		st->st_size = (off_t)strlen(r);
		st->st_mtime = st->st_ctime = st->st_atime = cfs->started;
		free(r);
		return 0;
	}
	if (rc != -ENOENT)
		return rc;
	rc = pj_links_under(rel);
	if (rc < 0)
		return rc;
	if (rc == 0)
		return -ENOENT;
	pj_dir_stat(st, cfs->started);
	return 0;
}

/* Errors: ENOENT, EINVAL (not a link), EIO, ENOMEM. */
int projects_readlink(const char *rel, char *buf, size_t size)
{
	char *target, *r;
	int rc;

	if (!strchr(rel, '/'))
		return -EINVAL; /* projects/ and projects/<p> are directories */
	rc = pj_project_exists(rel);
	if (rc)
		return rc;
	rc = pj_link_target(rel, &target);
	if (rc == -ENOENT)
		return projects_getattr(rel, &(struct stat){0}) ? -ENOENT
								: -EINVAL;
	if (rc)
		return rc;
	r = pj_relative(rel, target);
	free(target);
	if (!r)
		return -ENOMEM;
	if (size)
		snprintf(buf, size, "%s", r);
	free(r);
	return 0;
}

/* ---- listings ---- */

struct pj_list_ctx {
	void *buf;
	fuse_fill_dir_t filler;
	const char *rel;
	size_t rel_len;
	struct project_link *links;
	size_t n_links;
	char **extra; /* kept empty subdirectories' names */
	size_t n_extra;
};

static void pj_list_add(void *arg, const struct dentry *e)
{
	struct pj_list_ctx *c = arg;
	struct stat st;

	if (e->is_dir)
		pj_dir_stat(&st, cfs->started);
	else
		pj_file_stat(&st, e->size, e->mtime);
	c->filler(c->buf, e->name, &st, 0, 0);
}

/* After the store's entries: links and kept subdirectories it lacks. */
static void pj_list_done(void *arg, const struct dcache_view *v)
{
	struct pj_list_ctx *c = arg;
	struct stat st;
	char last[NAMES_MAX_COMPONENT + 1] = "";
	size_t i;

	for (i = 0; i < c->n_links; i++) {
		const char *name = c->links[i].key + c->rel_len + 1;
		const char *slash = strchr(name, '/');
		size_t len = slash ? (size_t)(slash - name) : strlen(name);
		char comp[NAMES_MAX_COMPONENT + 1];

		if (!len || len > NAMES_MAX_COMPONENT)
			continue;
		memcpy(comp, name, len);
		comp[len] = '\0';
		if (!strcmp(comp, last) || dcache_view_has(v, comp))
			continue;
		memcpy(last, comp, len + 1);
		if (!slash && !c->links[i].duplicate_of)
			continue;
		memset(&st, 0, sizeof(st));
		st.st_mode = slash ? S_IFDIR | 0755 : S_IFLNK | 0777;
		c->filler(c->buf, comp, &st, 0, 0);
	}
	for (i = 0; i < c->n_extra; i++) {
		size_t j;
		int dup = dcache_view_has(v, c->extra[i]);

		for (j = 0; j < c->n_links && !dup; j++) {
			const char *name = c->links[j].key + c->rel_len + 1;
			size_t len = strlen(c->extra[i]);

			dup = !strncmp(name, c->extra[i], len) &&
			      (!name[len] || name[len] == '/');
		}
		if (dup)
			continue;
		pj_dir_stat(&st, cfs->started);
		c->filler(c->buf, c->extra[i], &st, 0, 0);
	}
}

/* Errors: ENOENT, ENOTDIR, EIO, ENOMEM. */
int projects_readdir(const char *rel, void *buf, fuse_fill_dir_t filler)
{
	struct pj_list_ctx c = {.buf = buf, .filler = filler, .rel = rel};
	struct stat st;
	char *prefix = NULL;
	size_t i, n;
	int rc;

	if (!*rel) {
		rc = pj_registry_locked(pj_ttl());
		if (rc)
			return rc;
		for (i = 0; i < pj_n; i++) {
			pj_dir_stat(&st, pj_rows[i].created_at);
			filler(buf, pj_rows[i].prefix, &st, 0, 0);
		}
		pthread_mutex_unlock(&pj_lock);
		return 0;
	}
	rc = projects_getattr(rel, &st);
	if (rc)
		return rc;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	c.rel_len = strlen(rel);
	if (asprintf(&prefix, "%s/", rel) < 0)
		return -ENOMEM;
	rc = db_project_links(cfs->db, cfs->cfg.storage_bucket, prefix,
			      PJ_LINKS_MAX, &c.links, &c.n_links);
	free(prefix);
	if (rc)
		return rc;
	/* The kept subdirectories directly under rel. */
	pthread_mutex_lock(&pj_lock);
	for (i = 0, n = 0; i < pj_ndirs; i++)
		if (!strncmp(pj_dirs[i], rel, c.rel_len) &&
		    pj_dirs[i][c.rel_len] == '/' &&
		    !strchr(pj_dirs[i] + c.rel_len + 1, '/'))
			n++;
	c.extra = calloc(n ? n : 1, sizeof(*c.extra));
	for (i = 0; c.extra && i < pj_ndirs; i++)
		if (!strncmp(pj_dirs[i], rel, c.rel_len) &&
		    pj_dirs[i][c.rel_len] == '/' &&
		    !strchr(pj_dirs[i] + c.rel_len + 1, '/')) {
			c.extra[c.n_extra] = strdup(pj_dirs[i] + c.rel_len + 1);
			if (!c.extra[c.n_extra])
				break;
			c.n_extra++;
		}
	pthread_mutex_unlock(&pj_lock);
	if (!c.extra || c.n_extra != n)
		rc = -ENOMEM;
	else
		rc = dcache_list_in(DC_STORE, rel, pj_list_add, pj_list_done,
				    &c);
	for (i = 0; i < c.n_extra; i++)
		free(c.extra[i]);
	free(c.extra);
	db_project_links_free(c.links, c.n_links);
	return rc;
}

/* ---- projects and subdirectories ---- */

/* A project: prefix validated, registered with who and when. Inside one:
 * an empty subdirectory kept in memory (see the top of this file).
 * Errors: EINVAL (prefix or name), ENAMETOOLONG, EACCES (not root nor in
 * project_group), EEXIST, ENOENT (no such project or parent), ENOTDIR,
 * EIO, ENOMEM. */
int projects_mkdir(const char *rel, mode_t mode)
{
	struct actor who;
	struct stat st;
	char *parent, *copy;
	int rc;

	(void)mode;
	if (!strchr(rel, '/')) {
		if (!db_project_prefix_valid(rel)) {
			log_info("projects/: refused project prefix \"%.80s\": "
				 "1 to 63 of a-z 0-9 . _ -, starting with a "
				 "letter or digit",
				 rel);
			return -EINVAL;
		}
		rc = pj_may_administer("mkdir", rel);
		if (rc)
			return rc;
		cfs_actor(&who);
		rc = db_project_create(cfs->db, rel, NULL, &who, NULL);
		pj_registry_changed();
		if (rc == 0)
			log_info("projects/%s: project created by %s (uid %u)",
				 rel, who.user, (unsigned)who.uid);
		return rc;
	}
	rc = names_check_relpath(rel, 0);
	if (rc)
		return rc;
	rc = projects_getattr(rel, &st);
	if (rc == 0)
		return -EEXIST;
	if (rc != -ENOENT)
		return rc;
	parent = strndup(rel, (size_t)(strrchr(rel, '/') - rel));
	if (!parent)
		return -ENOMEM;
	rc = projects_getattr(parent, &st);
	free(parent);
	if (rc)
		return rc;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	copy = strdup(rel);
	if (!copy)
		return -ENOMEM;
	pthread_mutex_lock(&pj_lock);
	if (pj_dir_find_locked(rel) >= 0) {
		rc = -EEXIST;
	} else if (pj_ndirs == pj_dirs_cap) {
		size_t cap = pj_dirs_cap ? pj_dirs_cap * 2 : 16;
		char **nd = realloc(pj_dirs, cap * sizeof(*nd));

		if (!nd) {
			rc = -ENOMEM;
		} else {
			pj_dirs = nd;
			pj_dirs_cap = cap;
		}
	}
	if (rc == 0) {
		pj_dirs[pj_ndirs++] = copy;
		copy = NULL;
	}
	pthread_mutex_unlock(&pj_lock);
	free(copy);
	return rc;
}

/* Is anything stored in the bucket under rel/? 1, 0 or -errno. */
static int pj_store_has(const char *rel)
{
	struct s3_list_result res = {0};
	char *prefix;
	int rc;

	if (asprintf(&prefix, "%s/", rel) < 0)
		return -ENOMEM;
	rc = s3_list_page(cfs->s3, cfs->cfg.storage_bucket, prefix, NULL, NULL,
			  1, &res);
	if (rc == 0)
		rc = res.n_entries > 0 || res.n_prefixes > 0;
	s3xml_list_free(&res);
	free(prefix);
	return rc;
}

/* A project that never stored a file (no storage_audit row names it, the
 * database decides) and holds no object; or an empty kept subdirectory.
 * Errors: ENOENT, ENOTDIR, ENOTEMPTY, EACCES, EPERM (a directory of stored
 * files), EIO, ENOMEM. */
int projects_rmdir(const char *rel)
{
	struct stat st;
	int rc;

	if (!strchr(rel, '/')) {
		rc = pj_project_exists(rel);
		if (rc)
			return rc;
		rc = pj_may_administer("rmdir", rel);
		if (rc)
			return rc;
		rc = pj_store_has(rel);
		if (rc < 0)
			return rc;
		if (rc > 0)
			return -ENOTEMPTY;
		pthread_mutex_lock(&pj_lock);
		rc = pj_dir_has_children_locked(rel) ? -ENOTEMPTY : 0;
		pthread_mutex_unlock(&pj_lock);
		if (rc)
			return rc;
		rc = db_project_delete(cfs->db, rel);
		pj_registry_changed();
		if (rc == 0)
			log_info("projects/%s: project removed", rel);
		return rc;
	}
	rc = projects_getattr(rel, &st);
	if (rc)
		return rc;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	pthread_mutex_lock(&pj_lock);
	if (pj_dir_find_locked(rel) < 0)
		rc = -ENOTEMPTY; /* made by stored files or links */
	else if (pj_dir_has_children_locked(rel))
		rc = -ENOTEMPTY;
	pthread_mutex_unlock(&pj_lock);
	if (rc)
		return rc;
	rc = pj_store_has(rel);
	if (rc == 0)
		rc = pj_links_under(rel);
	if (rc < 0)
		return rc;
	if (rc > 0)
		return -ENOTEMPTY;
	pthread_mutex_lock(&pj_lock);
	pj_dir_drop_tree_locked(rel);
	pthread_mutex_unlock(&pj_lock);
	return 0;
}

/* Stored files are immutable (creating a new file in a project is
 * ops_direct.c's). Errors: EPERM, ENOENT (no such project). */
int projects_change(const char *rel)
{
	const char *slash = strchr(rel, '/');
	int rc;

	if (!*rel)
		return -EPERM;
	rc = pj_project_exists(rel);
	if (rc == -ENOENT && !slash)
		return -EPERM; /* rename/create of projects/<new>: mkdir only */
	return rc ? rc : -EPERM;
}

/* ---- reading stored files ---- */

/* Read-only opens of stored files. Errors: EPERM (opened for writing or
 * truncating: stored files are immutable), EISDIR, ENOENT, EIO, ENOMEM. */
int projects_open(const char *rel, struct fuse_file_info *fi)
{
	struct pj_handle *h;
	struct dentry e;
	int rc;

	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
		return -EPERM;
	if (!strchr(rel, '/'))
		return -EISDIR; /* projects/ and projects/<p> */
	rc = pj_project_exists(rel);
	if (rc)
		return rc;
	rc = dcache_lookup_in(DC_STORE, rel, &e);
	if (rc)
		return rc;
	if (e.is_dir)
		return -EISDIR;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->base.area = AREA_PROJECTS;
	h->key = strdup(rel);
	if (!h->key) {
		free(h);
		return -ENOMEM;
	}
	h->size = e.size;
	snprintf(h->etag, sizeof(h->etag), "%s", e.etag);
	pthread_mutex_init(&h->lock, NULL);
	fi->fh = (uint64_t)(uintptr_t)h;
	/* Stored files never change: the page cache may keep them. */
	fi->keep_cache = 1;
	return 0;
}

/* Caller holds h->lock. One ranged GET into h->win.buf, pinned to the ETag
 * of the object opened. A store whose listing gives another ETag form
 * than its GETs would refuse the first read: before any data was served,
 * the ETag a HEAD gives now is taken instead, if the size is the same. */
static int pj_get(struct pj_handle *h, uint64_t off, size_t want, size_t *got)
{
	struct s3_object_info info = {0};
	int rc;

	if (!h->etag[0])
		return s3_get_range(cfs->s3, cfs->cfg.storage_bucket, h->key,
				    off, want, h->win.buf, got);
	rc = s3_get_range_if(cfs->s3, cfs->cfg.storage_bucket, h->key, off,
			     want, h->etag, h->win.buf, got);
	if (rc != -EEXIST || h->served)
		return rc;
	if (s3_head(cfs->s3, cfs->cfg.storage_bucket, h->key, &info) == 0 &&
	    info.size == h->size && info.etag[0] &&
	    strcmp(info.etag, h->etag)) {
		log_info("projects/%s: the listing's ETag %s is %s for a GET",
			 h->key, h->etag, info.etag);
		snprintf(h->etag, sizeof(h->etag), "%s", info.etag);
		rc = s3_get_range_if(cfs->s3, cfs->cfg.storage_bucket, h->key,
				     off, want, h->etag, h->win.buf, got);
	}
	s3_object_info_free(&info);
	return rc;
}

/* Ranged GETs pinned to the ETag seen at open (If-Match), through a
 * read-ahead window that grows on sequential reads. Errors: EIO, ENOMEM,
 * ESTALE (the object was replaced behind us). */
int projects_read(struct fhandle *fh, char *out, size_t size, off_t off_)
{
	struct pj_handle *h = (struct pj_handle *)fh;
	uint64_t off = (uint64_t)off_;
	size_t got = 0, want;
	int rc;

	if (off_ < 0)
		return -EINVAL;
	if (off >= h->size)
		return 0;
	if (size > h->size - off)
		size = (size_t)(h->size - off);
	pthread_mutex_lock(&h->lock);
	if (rawin_serve(&h->win, out, off, size)) {
		pthread_mutex_unlock(&h->lock);
		return (int)size;
	}
	rc = rawin_plan(&h->win, off, size, h->size, &want);
	if (rc) {
		pthread_mutex_unlock(&h->lock);
		return rc;
	}
	rc = pj_get(h, off, want, &got);
	size = rawin_filled(&h->win, out, off, size, got, rc);
	if (rc) {
		pthread_mutex_unlock(&h->lock);
		log_error("projects/%s: read at %llu failed: %s", h->key,
			  (unsigned long long)off, strerror(-rc));
		return rc == -EEXIST ? -ESTALE : rc;
	}
	h->served = 1;
	pthread_mutex_unlock(&h->lock);
	return (int)size;
}

int projects_fh_getattr(struct fhandle *fh, struct stat *st)
{
	struct pj_handle *h = (struct pj_handle *)fh;

	pj_file_stat(st, h->size, cfs->started);
	return 0;
}

void projects_release(struct fhandle *fh)
{
	struct pj_handle *h = (struct pj_handle *)fh;

	pthread_mutex_destroy(&h->lock);
	rawin_free(&h->win);
	free(h->key);
	free(h);
}

/* ---- user.custodyfs.name on projects/<p> ---- */

/* Errors: ENODATA (another name, or not a project), ERANGE, ENOENT, EIO. */
int projects_getxattr(const char *rel, const char *name, char *value,
		      size_t size)
{
	struct project_row *row;
	size_t len;
	int rc;

	if (!*rel || strchr(rel, '/') || strcmp(name, PJ_XATTR_NAME))
		return -ENODATA;
	rc = pj_project_locked(rel, &row);
	if (rc)
		return rc;
	len = strlen(row->name);
	if (size && len > size)
		rc = -ERANGE;
	else if (size)
		memcpy(value, row->name, len);
	pthread_mutex_unlock(&pj_lock);
	return rc ? rc : (int)len;
}

/* Errors: ENOENT, ERANGE, EIO. */
int projects_listxattr(const char *rel, char *list, size_t size)
{
	static const char names[] = PJ_XATTR_NAME; /* with its NUL */
	int rc;

	if (!*rel || strchr(rel, '/'))
		return 0;
	rc = pj_project_exists(rel);
	if (rc)
		return rc;
	if (!size)
		return (int)sizeof(names);
	if (size < sizeof(names))
		return -ERANGE;
	memcpy(list, names, sizeof(names));
	return (int)sizeof(names);
}

/* The project's name (UPDATE of name only). Errors: ENOTSUP (another
 * attribute, or not a project), EINVAL (empty, invalid UTF-8, control
 * characters), ERANGE (over PJ_NAME_MAX bytes), EEXIST (XATTR_CREATE: the
 * name always exists), EACCES, ENOENT, EIO, ENOMEM. */
int projects_setxattr(const char *rel, const char *name, const char *value,
		      size_t size, int flags)
{
	char *v;
	size_t i;
	int rc;

	if (!*rel || strchr(rel, '/') || strcmp(name, PJ_XATTR_NAME))
		return -ENOTSUP;
	rc = pj_project_exists(rel);
	if (rc)
		return rc;
	if (flags & XATTR_CREATE)
		return -EEXIST;
	if (size > PJ_NAME_MAX)
		return -ERANGE;
	if (!size || !names_utf8_valid(value, size))
		return -EINVAL;
	for (i = 0; i < size; i++)
		if ((unsigned char)value[i] < 0x20 || value[i] == 0x7f)
			return -EINVAL;
	rc = pj_may_administer("naming", rel);
	if (rc)
		return rc;
	v = strndup(value, size);
	if (!v)
		return -ENOMEM;
	rc = db_project_set_name(cfs->db, rel, v);
	pj_registry_changed();
	if (rc == 0) {
		char *q = malloc(4 * strlen(v) + 3);

		if (q) {
			log_quote(q, 4 * strlen(v) + 3, v);
			log_info("projects/%s: named %s", rel, q);
		}
		free(q);
	}
	free(v);
	return rc;
}

/* The name cannot be removed (the registry requires one). Errors: EPERM
 * (user.custodyfs.name), ENODATA (another), ENOENT, EIO. */
int projects_removexattr(const char *rel, const char *name)
{
	int rc;

	if (!*rel || strchr(rel, '/') || strcmp(name, PJ_XATTR_NAME))
		return -ENODATA;
	rc = pj_project_exists(rel);
	return rc ? rc : -EPERM;
}
