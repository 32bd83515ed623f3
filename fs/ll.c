/* ll.c - the low-level operation table over the path-based handlers; see
 * ll.h. What libfuse 3.14's lib/fuse.c does for the high-level API, for the
 * options custodyfs uses (use_ino 0, nullpath_ok 0, hard_remove 0, no
 * remember, no auto_cache, no interrupts), written again here:
 *
 * - a node per name the kernel looked up: id, parent, name, nlookup (the
 *   kernel's references), refctr (nlookup > 0 counts one, each child one);
 *   a node whose refctr drops to 0 is freed;
 * - a request's paths are built from its node ids under the table lock and
 *   lock the nodes on them (treelock: readers count up, an unlink, rmdir or
 *   rename takes its target node for writing and waits for readers);
 * - an open file whose name is unlinked or renamed over is renamed to
 *   ".fuse_hidden<id><ctr>" instead (through the rename handler), and that
 *   name unlinked at its last release (or at unmount).
 *
 * Handlers of cfs_ops are called through the table (their timing wrappers
 * stay). Each request's caller (fuse_req_ctx) is this thread's context
 * while it runs: cfs_context(). Directories, statfs and extended
 * attributes: ll_dir.c. */
#include "ll.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ll_int.h"
#include "log.h"

#define TREELOCK_WRITE -1
#define TREELOCK_WAIT_OFFSET INT_MIN
#define NODE_TABLE_MIN 8192
#define FUSE_UNKNOWN_INO 0xffffffff /* libfuse's, for "no inode number" */

struct node {
	fuse_ino_t id;
	uint64_t gen;
	uint64_t nlookup;    /* the kernel's references */
	int refctr;	     /* nlookup > 0 counts 1, each child 1, a "." 1 */
	struct node *parent; /* NULL: removed (or the root) */
	char *name;	     /* NULL: removed */
	int open_count;	     /* open handles */
	int hidden;	     /* renamed to a hidden name while open */
	int treelock; /* > 0 readers, TREELOCK_WRITE, or a writer waits */
	struct node *id_next, *name_next;
};

/* A request waiting for path locks (or, with no path wanted, a forget
 * waiting for a node's locks to go), queued in arrival order. Each
 * release of a lock hands the locks on to the waiters in that order
 * (wake_up_queued), in the releaser's critical section: a writer queued
 * behind readers is not overtaken by readers that come later, and only
 * the waiter whose locks came is woken (libfuse's lock queue). */
struct lockq {
	struct lockq *next;
	pthread_cond_t cond;
	fuse_ino_t id1, id2;
	const char *name1, *name2;
	char **path1, **path2; /* NULL: a forget's wait */
	struct node **wnode1, **wnode2;
	int err;
	int done, first_locked, second_locked;
};

static struct {
	pthread_mutex_t lock;
	struct lockq *lockq;	 /* protected by lock: waiters, in order */
	struct node **ids;	 /* protected by lock: by id */
	struct node **names;	 /* protected by lock: by (parent, name) */
	size_t size;		 /* protected by lock: buckets of each */
	size_t count;		 /* protected by lock: nodes */
	fuse_ino_t ctr;		 /* protected by lock: the last id given */
	uint64_t gen;		 /* protected by lock */
	unsigned hidectr;	 /* protected by lock */
	struct fuse_config conf; /* set by init, read-only after */
	atomic_int active;
} nt = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* ---- the caller of the request this thread serves ---- */

static __thread fuse_req_t cur_req;
static __thread struct fuse_context cur_ctx;

void ll_enter(fuse_req_t req)
{
	const struct fuse_ctx *c = fuse_req_ctx(req);

	memset(&cur_ctx, 0, sizeof(cur_ctx));
	cur_ctx.uid = c->uid;
	cur_ctx.gid = c->gid;
	cur_ctx.pid = c->pid;
	cur_ctx.umask = c->umask;
	cur_ctx.private_data = cfs;
	cur_req = req;
}

void ll_leave(void)
{
	cur_req = NULL;
}

struct fuse_context *cfs_context(void)
{
	if (!atomic_load(&nt.active))
		return fuse_get_context();
	return cur_req ? &cur_ctx : NULL;
}

int cfs_getgroups(int size, gid_t list[])
{
	if (!atomic_load(&nt.active))
		return fuse_getgroups(size, list);
	if (!cur_req)
		return -EINVAL;
	return fuse_req_getgroups(cur_req, size, list);
}

int ll_active(void)
{
	return atomic_load(&nt.active);
}

/* ---- the node table (caller holds nt.lock) ---- */

static size_t id_hash(fuse_ino_t id)
{
	return (size_t)((id * 0x9E3779B97F4A7C15ULL) >> 20) % nt.size;
}

static size_t name_hash(fuse_ino_t parent, const char *name)
{
	uint64_t h = parent;

	for (; *name; name++)
		h = h * 31 + (unsigned char)*name;
	return (size_t)(h % nt.size);
}

static struct node *get_node(fuse_ino_t id)
{
	struct node *n;

	for (n = nt.ids[id_hash(id)]; n; n = n->id_next)
		if (n->id == id)
			return n;
	return NULL;
}

static struct node *lookup_node(fuse_ino_t parent, const char *name)
{
	struct node *n;

	for (n = nt.names[name_hash(parent, name)]; n; n = n->name_next)
		if (n->parent && n->parent->id == parent &&
		    !strcmp(n->name, name))
			return n;
	return NULL;
}

/* Doubles both hash tables when they are fuller than one node a bucket;
 * stays as is without memory. */
static void maybe_grow(void)
{
	size_t i, old = nt.size, size = old * 2;
	struct node **ids, **names, *n, *next;

	if (nt.count < old)
		return;
	ids = calloc(size, sizeof(*ids));
	names = calloc(size, sizeof(*names));
	if (!ids || !names) {
		free(ids);
		free(names);
		return;
	}
	nt.size = size;
	for (i = 0; i < old; i++) {
		for (n = nt.ids[i]; n; n = next) {
			size_t h = id_hash(n->id);

			next = n->id_next;
			n->id_next = ids[h];
			ids[h] = n;
		}
		for (n = nt.names[i]; n; n = next) {
			size_t h = name_hash(n->parent->id, n->name);

			next = n->name_next;
			n->name_next = names[h];
			names[h] = n;
		}
	}
	free(nt.ids);
	free(nt.names);
	nt.ids = ids;
	nt.names = names;
}

static void unref_node(struct node *n);

static void unhash_name(struct node *n)
{
	struct node **p;

	if (!n->name)
		return;
	for (p = &nt.names[name_hash(n->parent->id, n->name)]; *p;
	     p = &(*p)->name_next) {
		if (*p != n)
			continue;
		*p = n->name_next;
		n->name_next = NULL;
		unref_node(n->parent);
		free(n->name);
		n->name = NULL;
		n->parent = NULL;
		return;
	}
	log_error("low-level: node %llu not found under its name",
		  (unsigned long long)n->id);
	abort();
}

/* 0 or -ENOMEM. */
static int hash_name(struct node *n, fuse_ino_t parent, const char *name)
{
	struct node *p = get_node(parent);
	size_t h;

	if (!p)
		return -ESTALE;
	n->name = strdup(name);
	if (!n->name)
		return -ENOMEM;
	h = name_hash(parent, name);
	p->refctr++;
	n->parent = p;
	n->name_next = nt.names[h];
	nt.names[h] = n;
	return 0;
}

static void delete_node(struct node *n)
{
	struct node **p;

	unhash_name(n);
	for (p = &nt.ids[id_hash(n->id)]; *p; p = &(*p)->id_next)
		if (*p == n) {
			*p = n->id_next;
			break;
		}
	nt.count--;
	free(n);
}

static void unref_node(struct node *n)
{
	if (--n->refctr == 0)
		delete_node(n);
}

static fuse_ino_t next_id(void)
{
	do {
		nt.ctr = (nt.ctr + 1) & 0xffffffff;
		if (!nt.ctr)
			nt.gen++;
	} while (nt.ctr == 0 || nt.ctr == FUSE_UNKNOWN_INO || get_node(nt.ctr));
	return nt.ctr;
}

static void inc_nlookup(struct node *n)
{
	if (!n->nlookup)
		n->refctr++;
	n->nlookup++;
}

/* The node of name in parent (name NULL: parent itself), made when there
 * is none, with one more lookup. NULL: no memory, or no parent. */
static struct node *find_node(fuse_ino_t parent, const char *name)
{
	struct node *n;

	pthread_mutex_lock(&nt.lock);
	n = name ? lookup_node(parent, name) : get_node(parent);
	if (!n && name) {
		n = calloc(1, sizeof(*n));
		if (!n)
			goto out;
		n->id = next_id();
		n->gen = nt.gen;
		if (hash_name(n, parent, name)) {
			free(n);
			n = NULL;
			goto out;
		}
		n->id_next = nt.ids[id_hash(n->id)];
		nt.ids[id_hash(n->id)] = n;
		nt.count++;
		maybe_grow();
	}
	if (n)
		inc_nlookup(n);
out:
	pthread_mutex_unlock(&nt.lock);
	return n;
}

static void queue_path(struct lockq *q);
static void dequeue_path(struct lockq *q);

static void forget_node(fuse_ino_t id, uint64_t nlookup)
{
	struct node *n;

	if (id == FUSE_ROOT_ID)
		return;
	pthread_mutex_lock(&nt.lock);
	n = get_node(id);
	/* A path of it may still be locked (an open or create whose reply
	 * the kernel refused): freed once it is let go. */
	if (n && n->nlookup == nlookup && n->treelock) {
		struct lockq q = {.id1 = id};

		queue_path(&q);
		do
			pthread_cond_wait(&q.cond, &nt.lock);
		while (n->nlookup == nlookup && n->treelock);
		dequeue_path(&q);
	}
	if (!n || n->nlookup < nlookup) {
		log_error("low-level: forget of %llu by %llu: not known",
			  (unsigned long long)id, (unsigned long long)nlookup);
	} else {
		n->nlookup -= nlookup;
		if (!n->nlookup)
			unref_node(n);
	}
	pthread_mutex_unlock(&nt.lock);
}

static void remove_node(fuse_ino_t dir, const char *name)
{
	struct node *n;

	pthread_mutex_lock(&nt.lock);
	n = lookup_node(dir, name);
	if (n)
		unhash_name(n);
	pthread_mutex_unlock(&nt.lock);
}

/* The node at oldname takes newname, hidden or not as hide says (only a
 * hidden name is renamed back unhidden: the daemon refuses renames from
 * hidden names). 0, -EBUSY (hide: the hidden name was taken meanwhile),
 * -ENOMEM. */
static int rename_node(fuse_ino_t olddir, const char *oldname,
		       fuse_ino_t newdir, const char *newname, int hide)
{
	struct node *n, *nn, *dirs[2];
	int rc = 0, i;

	pthread_mutex_lock(&nt.lock);
	n = lookup_node(olddir, oldname);
	nn = lookup_node(newdir, newname);
	if (!n)
		goto out;
	if (nn && hide) {
		log_error("low-level: hidden name taken while hiding");
		rc = -EBUSY;
		goto out;
	}
	/* The old directory may go with the last name in it: kept (and the
	 * new one) by a reference of ours meanwhile. */
	dirs[0] = get_node(olddir);
	dirs[1] = get_node(newdir);
	for (i = 0; i < 2; i++)
		if (dirs[i])
			dirs[i]->refctr++;
	if (nn)
		unhash_name(nn);
	unhash_name(n);
	rc = hash_name(n, newdir, newname);
	if (rc == 0) /* a hidden node only moves back to its name, unhidden */
		n->hidden = hide;
	for (i = 0; i < 2; i++)
		if (dirs[i])
			unref_node(dirs[i]);
out:
	pthread_mutex_unlock(&nt.lock);
	return rc;
}

static int exchange_node(fuse_ino_t olddir, const char *oldname,
			 fuse_ino_t newdir, const char *newname)
{
	struct node *a, *b, *dirs[2];
	int rc = 0, i;

	pthread_mutex_lock(&nt.lock);
	a = lookup_node(olddir, oldname);
	b = lookup_node(newdir, newname);
	dirs[0] = get_node(olddir);
	dirs[1] = get_node(newdir);
	for (i = 0; i < 2; i++)
		if (dirs[i])
			dirs[i]->refctr++;
	if (a)
		unhash_name(a);
	if (b)
		unhash_name(b);
	if (a)
		rc = hash_name(a, newdir, newname);
	if (b && rc == 0)
		rc = hash_name(b, olddir, oldname);
	for (i = 0; i < 2; i++)
		if (dirs[i])
			unref_node(dirs[i]);
	pthread_mutex_unlock(&nt.lock);
	return rc;
}

/* ---- paths ---- */

/* Releases the locks try_get_path took on id's path (up to end). */
static void unlock_path(fuse_ino_t id, struct node *wnode, struct node *end)
{
	struct node *n;

	if (wnode)
		wnode->treelock = 0;
	for (n = get_node(id); n && n != end && n->id != FUSE_ROOT_ID;
	     n = n->parent) {
		n->treelock--;
		if (n->treelock == TREELOCK_WAIT_OFFSET)
			n->treelock = 0;
	}
}

/* Caller holds nt.lock. The path of id (and name below it, if not NULL),
 * its nodes locked for reading when need_lock (and name's node, if
 * wnodep, for writing). 0, -EAGAIN (locked: wait in line, wait_path),
 * -ESTALE (a node on the way has no name: removed), -ENOMEM. */
static int try_get_path(fuse_ino_t id, const char *name, char **path,
			struct node **wnodep, int need_lock)
{
	struct node *n, *wnode = NULL;
	size_t len = name ? strlen(name) + 1 : 0, at;
	char *buf;

	*path = NULL;
	for (n = get_node(id); n && n->id != FUSE_ROOT_ID; n = n->parent) {
		if (!n->name || !n->parent)
			return -ESTALE;
		len += strlen(n->name) + 1;
	}
	if (!n)
		return -ESTALE;
	if (wnodep) {
		wnode = lookup_node(id, name);
		if (wnode) {
			if (wnode->treelock != 0) {
				if (wnode->treelock > 0)
					wnode->treelock += TREELOCK_WAIT_OFFSET;
				return -EAGAIN;
			}
		}
	}
	for (n = get_node(id); need_lock && n->id != FUSE_ROOT_ID;
	     n = n->parent)
		if (n->treelock < 0)
			return -EAGAIN;
	buf = malloc(len + 2);
	if (!buf)
		return -ENOMEM;
	if (wnode)
		wnode->treelock = TREELOCK_WRITE;
	at = len;
	buf[at] = '\0';
	if (name) {
		at -= strlen(name);
		memcpy(buf + at, name, strlen(name));
		buf[--at] = '/';
	}
	for (n = get_node(id); n->id != FUSE_ROOT_ID; n = n->parent) {
		size_t l = strlen(n->name);

		at -= l;
		memcpy(buf + at, n->name, l);
		buf[--at] = '/';
		n->treelock += need_lock;
	}
	if (!len)
		strcpy(buf, "/");
	*path = buf;
	if (wnodep)
		*wnodep = wnode;
	return 0;
}

/* Caller holds nt.lock. Lets go of what q holds so far. */
static void queue_element_unlock(struct lockq *q)
{
	if (q->first_locked) {
		unlock_path(q->id1, q->wnode1 ? *q->wnode1 : NULL, NULL);
		free(*q->path1);
		*q->path1 = NULL;
		q->first_locked = 0;
	}
	if (q->second_locked) {
		unlock_path(q->id2, q->wnode2 ? *q->wnode2 : NULL, NULL);
		free(*q->path2);
		*q->path2 = NULL;
		q->second_locked = 0;
	}
}

/* Caller holds nt.lock. Tries q's locks for it; wakes it when they are
 * all its (or an error ends its wait). Only the first in line may hold
 * some of them while waiting for the rest (two waiters each holding one
 * of the other's would wait for ever). */
static void queue_element_wakeup(struct lockq *q)
{
	int first = q == nt.lockq, rc = 0;

	if (!q->path1) { /* a forget: waits for the node to be let go */
		struct node *n = get_node(q->id1);

		if (!n || n->treelock == 0)
			pthread_cond_signal(&q->cond);
		return;
	}
	if (!q->first_locked) {
		rc = try_get_path(q->id1, q->name1, q->path1, q->wnode1, 1);
		if (rc == 0)
			q->first_locked = 1;
		else if (rc != -EAGAIN)
			goto fail;
	}
	if (!q->second_locked && q->path2) {
		rc = try_get_path(q->id2, q->name2, q->path2, q->wnode2, 1);
		if (rc == 0)
			q->second_locked = 1;
		else if (rc != -EAGAIN)
			goto fail;
	}
	if (q->first_locked && (q->second_locked || !q->path2)) {
		rc = 0;
		goto done;
	}
	if (!first)
		queue_element_unlock(q);
	return; /* still waits */
fail:
	queue_element_unlock(q);
done:
	q->err = rc;
	q->done = 1;
	pthread_cond_signal(&q->cond);
}

/* Caller holds nt.lock: after locks were let go, in the queue's order. */
static void wake_up_queued(void)
{
	struct lockq *q;

	for (q = nt.lockq; q; q = q->next)
		if (!q->done)
			queue_element_wakeup(q);
}

/* Caller holds nt.lock. q (its fields for the locks set) joins the line. */
static void queue_path(struct lockq *q)
{
	struct lockq **p;

	q->done = q->first_locked = q->second_locked = 0;
	q->next = NULL;
	pthread_cond_init(&q->cond, NULL);
	for (p = &nt.lockq; *p; p = &(*p)->next)
		;
	*p = q;
}

/* Caller holds nt.lock. q leaves the line. */
static void dequeue_path(struct lockq *q)
{
	struct lockq **p;

	for (p = &nt.lockq; *p != q; p = &(*p)->next)
		;
	*p = q->next;
	pthread_cond_destroy(&q->cond);
}

/* Caller holds nt.lock. Waits in line for q's locks: 0 (q's paths set and
 * locked) or the -errno that ended the wait. */
static int wait_path(struct lockq *q)
{
	queue_path(q);
	do
		pthread_cond_wait(&q->cond, &nt.lock);
	while (!q->done);
	dequeue_path(q);
	return q->err;
}

/* try_get_path, waiting for the locks. */
static int get_path_common(fuse_ino_t id, const char *name, char **path,
			   struct node **wnodep)
{
	int rc;

	pthread_mutex_lock(&nt.lock);
	rc = try_get_path(id, name, path, wnodep, 1);
	if (rc == -EAGAIN) {
		struct lockq q = {
		    .id1 = id, .name1 = name, .path1 = path, .wnode1 = wnodep};

		rc = wait_path(&q);
	}
	pthread_mutex_unlock(&nt.lock);
	return rc;
}

int ll_get_path(fuse_ino_t id, char **path)
{
	return get_path_common(id, NULL, path, NULL);
}

/* A removed node has no path: 0 with *path NULL (handlers then act on
 * the file handle). */
int ll_get_path_nullok(fuse_ino_t id, char **path)
{
	int rc = get_path_common(id, NULL, path, NULL);

	return rc == -ESTALE ? 0 : rc;
}

static int get_path_name(fuse_ino_t id, const char *name, char **path)
{
	return get_path_common(id, name, path, NULL);
}

static int get_path_wrlock(fuse_ino_t id, const char *name, char **path,
			   struct node **wnode)
{
	return get_path_common(id, name, path, wnode);
}

/* Caller holds nt.lock. Both paths of a rename or link, or neither:
 * try_get_path's answers. */
static int try_get_path2(fuse_ino_t id1, const char *name1, fuse_ino_t id2,
			 const char *name2, char **path1, char **path2,
			 struct node **wnode1, struct node **wnode2)
{
	int rc = try_get_path(id1, name1, path1, wnode1, 1);

	if (rc == 0) {
		rc = try_get_path(id2, name2, path2, wnode2, 1);
		if (rc) {
			unlock_path(id1, wnode1 ? *wnode1 : NULL, NULL);
			free(*path1);
			*path1 = NULL;
		}
	}
	return rc;
}

/* Both paths of a rename or link, locked together. */
static int get_path2(fuse_ino_t id1, const char *name1, fuse_ino_t id2,
		     const char *name2, char **path1, char **path2,
		     struct node **wnode1, struct node **wnode2)
{
	int rc;

	pthread_mutex_lock(&nt.lock);
	rc =
	    try_get_path2(id1, name1, id2, name2, path1, path2, wnode1, wnode2);
	if (rc == -EAGAIN) {
		struct lockq q = {.id1 = id1,
				  .name1 = name1,
				  .path1 = path1,
				  .wnode1 = wnode1,
				  .id2 = id2,
				  .name2 = name2,
				  .path2 = path2,
				  .wnode2 = wnode2};

		rc = wait_path(&q);
	}
	pthread_mutex_unlock(&nt.lock);
	return rc;
}

static void free_path_wrlock(fuse_ino_t id, struct node *wnode, char *path)
{
	if (!path)
		return;
	pthread_mutex_lock(&nt.lock);
	unlock_path(id, wnode, NULL);
	wake_up_queued();
	pthread_mutex_unlock(&nt.lock);
	free(path);
}

void ll_free_path(fuse_ino_t id, char *path)
{
	free_path_wrlock(id, NULL, path);
}

static void free_path2(fuse_ino_t id1, fuse_ino_t id2, struct node *w1,
		       struct node *w2, char *p1, char *p2)
{
	pthread_mutex_lock(&nt.lock);
	unlock_path(id1, w1, NULL);
	unlock_path(id2, w2, NULL);
	wake_up_queued();
	pthread_mutex_unlock(&nt.lock);
	free(p1);
	free(p2);
}

int ll_path_ino(const char *path, fuse_ino_t *ino)
{
	char *tmp = strdup(path), *save = NULL, *c;
	fuse_ino_t id = FUSE_ROOT_ID;
	int rc = 0;

	if (!tmp)
		return -ENOMEM;
	pthread_mutex_lock(&nt.lock);
	for (c = strtok_r(tmp, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		struct node *n = lookup_node(id, c);

		if (!n) {
			rc = -ENOENT;
			break;
		}
		id = n->id;
	}
	pthread_mutex_unlock(&nt.lock);
	free(tmp);
	if (!rc)
		*ino = id;
	return rc;
}

size_t ll_node_count(void)
{
	size_t n;

	pthread_mutex_lock(&nt.lock);
	n = nt.count;
	pthread_mutex_unlock(&nt.lock);
	return n;
}

/* ---- replies ---- */

void ll_reply_err(fuse_req_t req, int err)
{
	ll_leave();
	fuse_reply_err(req, -err);
}

static void reply_entry(fuse_req_t req, const struct fuse_entry_param *e,
			int err)
{
	ll_leave();
	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	/* The request was interrupted: the kernel takes no reference. */
	if (fuse_reply_entry(req, e) == -ENOENT && e->ino != 0)
		forget_node(e->ino, 1);
}

static int do_lookup(fuse_ino_t parent, const char *name,
		     struct fuse_entry_param *e)
{
	struct node *n = find_node(parent, name);

	if (!n)
		return -ENOMEM;
	e->ino = n->id;
	e->generation = n->gen;
	e->entry_timeout = nt.conf.entry_timeout;
	e->attr_timeout = nt.conf.attr_timeout;
	e->attr.st_ino = n->id; /* use_ino 0: the node id */
	return 0;
}

/* getattr of path, then the node of name in parent with one more lookup. */
static int lookup_path(fuse_ino_t parent, const char *name, const char *path,
		       struct fuse_entry_param *e, struct fuse_file_info *fi)
{
	int rc;

	memset(e, 0, sizeof(*e));
	rc = cfs_ops.getattr(path, &e->attr, fi);
	if (rc == 0)
		rc = do_lookup(parent, name, e);
	return rc;
}

/* ---- operations ---- */

static void ll_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/* libfuse's defaults (fuse_new), then the handlers' own. */
	memset(&nt.conf, 0, sizeof(nt.conf));
	nt.conf.entry_timeout = 1.0;
	nt.conf.attr_timeout = 1.0;
	nt.conf.negative_timeout = 0.0;
	if (conn->capable & FUSE_CAP_EXPORT_SUPPORT)
		conn->want |= FUSE_CAP_EXPORT_SUPPORT;
	conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_POSIX_LOCKS |
			FUSE_CAP_FLOCK_LOCKS);
	cfs_ops.init(conn, &nt.conf);
	if (nt.conf.use_ino || nt.conf.nullpath_ok || nt.conf.hard_remove ||
	    nt.conf.remember || nt.conf.kernel_cache || nt.conf.direct_io ||
	    nt.conf.auto_cache)
		log_warn("low-level: a fuse_config option set by init is not "
			 "followed (use_ino, nullpath_ok, hard_remove, "
			 "remember, kernel_cache, direct_io, auto_cache)");
}

static void ll_destroy(void *userdata)
{
	(void)userdata;
	cfs_ops.destroy(cfs);
}

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	struct node *dot = NULL;
	char *path;
	int err;

	memset(&e, 0, sizeof(e));
	ll_enter(req);
	if (name[0] == '.' &&
	    (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'))) {
		struct node *p;

		pthread_mutex_lock(&nt.lock);
		p = get_node(parent);
		if (!p ||
		    (name[1] == '.' && !p->parent && parent != FUSE_ROOT_ID)) {
			pthread_mutex_unlock(&nt.lock);
			reply_entry(req, &e, -ESTALE);
			return;
		}
		if (name[1] == '\0') {
			dot = p;
			dot->refctr++;
		} else if (p->parent) {
			parent = p->parent->id;
		}
		pthread_mutex_unlock(&nt.lock);
		name = NULL;
	}
	err = get_path_name(parent, name, &path);
	if (!err) {
		err = lookup_path(parent, name, path, &e, NULL);
		if (err == -ENOENT && nt.conf.negative_timeout != 0.0) {
			e.ino = 0;
			e.entry_timeout = nt.conf.negative_timeout;
			err = 0;
		}
		ll_free_path(parent, path);
	}
	if (dot) {
		pthread_mutex_lock(&nt.lock);
		unref_node(dot);
		pthread_mutex_unlock(&nt.lock);
	}
	reply_entry(req, &e, err);
}

static void ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	forget_node(ino, nlookup);
	fuse_reply_none(req);
}

static void ll_forget_multi(fuse_req_t req, size_t count,
			    struct fuse_forget_data *forgets)
{
	size_t i;

	for (i = 0; i < count; i++)
		forget_node(forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void reply_attr(fuse_req_t req, fuse_ino_t ino, struct stat *st)
{
	st->st_ino = ino;
	ll_leave();
	fuse_reply_attr(req, st, nt.conf.attr_timeout);
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct stat st;
	char *path;
	int err;

	memset(&st, 0, sizeof(st));
	ll_enter(req);
	err = fi ? ll_get_path_nullok(ino, &path) : ll_get_path(ino, &path);
	if (!err) {
		err = cfs_ops.getattr(path, &st, fi);
		ll_free_path(ino, path);
	}
	if (err) {
		ll_reply_err(req, err);
		return;
	}
	pthread_mutex_lock(&nt.lock);
	{
		struct node *n = get_node(ino);

		if (n && n->hidden && st.st_nlink > 0)
			st.st_nlink--;
	}
	pthread_mutex_unlock(&nt.lock);
	reply_attr(req, ino, &st);
}

/* chmod, chown, truncate, utimens, in that order (libfuse's), then the
 * attributes as they are now. */
static void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int valid, struct fuse_file_info *fi)
{
	struct stat st;
	char *path;
	int err;

	memset(&st, 0, sizeof(st));
	ll_enter(req);
	err = fi ? ll_get_path_nullok(ino, &path) : ll_get_path(ino, &path);
	if (err) {
		ll_reply_err(req, err);
		return;
	}
	if (valid & FUSE_SET_ATTR_MODE)
		err = cfs_ops.chmod(path, attr->st_mode, fi);
	if (!err && (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))) {
		uid_t uid =
		    (valid & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1;
		gid_t gid =
		    (valid & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1;

		err = cfs_ops.chown(path, uid, gid, fi);
	}
	if (!err && (valid & FUSE_SET_ATTR_SIZE))
		err = cfs_ops.truncate(path, attr->st_size, fi);
	if (!err && (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME))) {
		struct timespec tv[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};

		if (valid & FUSE_SET_ATTR_ATIME_NOW)
			tv[0].tv_nsec = UTIME_NOW;
		else if (valid & FUSE_SET_ATTR_ATIME)
			tv[0] = attr->st_atim;
		if (valid & FUSE_SET_ATTR_MTIME_NOW)
			tv[1].tv_nsec = UTIME_NOW;
		else if (valid & FUSE_SET_ATTR_MTIME)
			tv[1] = attr->st_mtim;
		err = cfs_ops.utimens(path, tv, fi);
	}
	if (!err)
		err = cfs_ops.getattr(path, &st, fi);
	ll_free_path(ino, path);
	if (err)
		ll_reply_err(req, err);
	else
		reply_attr(req, ino, &st);
}

static void ll_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char link[PATH_MAX + 1];
	char *path;
	int err;

	ll_enter(req);
	err = ll_get_path(ino, &path);
	if (!err) {
		err = cfs_ops.readlink(path, link, sizeof(link));
		ll_free_path(ino, path);
	}
	if (err) {
		ll_reply_err(req, err);
		return;
	}
	link[PATH_MAX] = '\0';
	ll_leave();
	fuse_reply_readlink(req, link);
}

static void ll_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	struct fuse_entry_param e;
	char *path;
	int err;

	memset(&e, 0, sizeof(e));
	ll_enter(req);
	err = get_path_name(parent, name, &path);
	if (!err) {
		err = -ENOSYS;
		if (S_ISREG(mode)) {
			struct fuse_file_info fi;

			memset(&fi, 0, sizeof(fi));
			fi.flags = O_CREAT | O_EXCL | O_WRONLY;
			err = cfs_ops.create(path, mode, &fi);
			if (!err) {
				err = lookup_path(parent, name, path, &e, &fi);
				cfs_ops.release(path, &fi);
			}
		}
		if (err == -ENOSYS) {
			err = cfs_ops.mknod(path, mode, rdev);
			if (!err)
				err = lookup_path(parent, name, path, &e, NULL);
		}
		ll_free_path(parent, path);
	}
	reply_entry(req, &e, err);
}

static void ll_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	struct fuse_entry_param e;
	char *path;
	int err;

	memset(&e, 0, sizeof(e));
	ll_enter(req);
	err = get_path_name(parent, name, &path);
	if (!err) {
		err = cfs_ops.mkdir(path, mode);
		if (!err)
			err = lookup_path(parent, name, path, &e, NULL);
		ll_free_path(parent, path);
	}
	reply_entry(req, &e, err);
}

static int is_open(fuse_ino_t dir, const char *name)
{
	struct node *n;
	int open;

	pthread_mutex_lock(&nt.lock);
	n = lookup_node(dir, name);
	open = n && n->open_count > 0;
	pthread_mutex_unlock(&nt.lock);
	return open;
}

/* A hidden name for the open node name in dir that no node and nothing in
 * the file system has: its path, or NULL (node gone, no memory, or ten
 * names taken). */
static char *hidden_name(fuse_ino_t dir, const char *oldname, char *newname,
			 size_t size)
{
	char *newpath = NULL;
	int rc, tries = 10;

	do {
		struct node *n;
		struct stat st;

		pthread_mutex_lock(&nt.lock);
		n = lookup_node(dir, oldname);
		if (!n) {
			pthread_mutex_unlock(&nt.lock);
			return NULL;
		}
		do {
			nt.hidectr++;
			snprintf(newname, size, ".fuse_hidden%08x%08x",
				 (unsigned)n->id, nt.hidectr);
		} while (lookup_node(dir, newname));
		/* Only the string is wanted: no path lock (the unlink or
		 * rename hiding it holds its own). */
		rc = try_get_path(dir, newname, &newpath, NULL, 0);
		pthread_mutex_unlock(&nt.lock);
		if (rc)
			break;
		memset(&st, 0, sizeof(st));
		rc = cfs_ops.getattr(newpath, &st, NULL);
		if (rc == -ENOENT)
			break;
		free(newpath);
		newpath = NULL;
	} while (rc == 0 && --tries);
	return newpath;
}

/* An open file's name goes to a hidden name (fuse.c's hide_node): the
 * daemon's rename, then the node's. hidden (may be NULL): the hidden name
 * (malloc'd path; the caller frees it) when both were renamed. 0 or
 * -errno. */
static int hide_node(const char *oldpath, fuse_ino_t dir, const char *oldname,
		     char *newname, size_t size, char **hidden)
{
	char *newpath;
	int err = -EBUSY;

	newpath = hidden_name(dir, oldname, newname, size);
	if (newpath) {
		err = cfs_ops.rename(oldpath, newpath, 0);
		if (!err)
			err = rename_node(dir, oldname, dir, newname, 1);
		if (!err && hidden) {
			*hidden = newpath;
			newpath = NULL;
		}
		free(newpath);
	}
	return err;
}

/* A rename that hid its open target (hide_node: hname, at hpath) failed.
 * The daemon leaves a failed rename's target as it was (inbox_rename): a
 * writer's open file gets its name back, read-only handles keep reading
 * the copy made for them under the hidden name, which goes with their
 * last handle. Unless the name is gone while the hidden one stays, the
 * node goes back to `name`, no longer hidden, so that fstat and the path
 * operations of its handles see the file the name still has, and its last
 * release unlinks nothing (review-ll M2). */
static void unhide_node(fuse_ino_t dir, const char *name, const char *path,
			const char *hname, const char *hpath)
{
	struct stat st;

	if (cfs_ops.getattr(hpath, &st, NULL) == 0 &&
	    cfs_ops.getattr(path, &st, NULL) != 0)
		return; /* only the hidden name holds it: stays hidden */
	rename_node(dir, hname, dir, name, 0);
}

static void ll_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct node *wnode;
	char *path;
	int err;

	ll_enter(req);
	err = get_path_wrlock(parent, name, &path, &wnode);
	if (!err) {
		if (is_open(parent, name)) {
			char hname[64];

			err = hide_node(path, parent, name, hname,
					sizeof(hname), NULL);
		} else {
			err = cfs_ops.unlink(path);
			if (!err)
				remove_node(parent, name);
		}
		free_path_wrlock(parent, wnode, path);
	}
	ll_reply_err(req, err);
}

static void ll_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct node *wnode;
	char *path;
	int err;

	ll_enter(req);
	err = get_path_wrlock(parent, name, &path, &wnode);
	if (!err) {
		err = cfs_ops.rmdir(path);
		if (!err)
			remove_node(parent, name);
		free_path_wrlock(parent, wnode, path);
	}
	ll_reply_err(req, err);
}

static void ll_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	struct fuse_entry_param e;
	char *path;
	int err;

	memset(&e, 0, sizeof(e));
	ll_enter(req);
	err = get_path_name(parent, name, &path);
	if (!err) {
		err = cfs_ops.symlink(link, path);
		if (!err)
			err = lookup_path(parent, name, path, &e, NULL);
		ll_free_path(parent, path);
	}
	reply_entry(req, &e, err);
}

static void ll_rename(fuse_req_t req, fuse_ino_t olddir, const char *oldname,
		      fuse_ino_t newdir, const char *newname,
		      unsigned int flags)
{
	struct node *w1 = NULL, *w2 = NULL;
	char *oldpath = NULL, *newpath = NULL, *hpath = NULL, hname[64];
	int err;

	ll_enter(req);
	err = get_path2(olddir, oldname, newdir, newname, &oldpath, &newpath,
			&w1, &w2);
	if (!err) {
		if (!(flags & RENAME_EXCHANGE) && is_open(newdir, newname))
			err = hide_node(newpath, newdir, newname, hname,
					sizeof(hname), &hpath);
		if (!err) {
			err = cfs_ops.rename(oldpath, newpath, flags);
			if (!err && (flags & RENAME_EXCHANGE))
				err = exchange_node(olddir, oldname, newdir,
						    newname);
			else if (!err)
				err = rename_node(olddir, oldname, newdir,
						  newname, 0);
			else if (hpath)
				unhide_node(newdir, newname, newpath, hname,
					    hpath);
		}
		free(hpath);
		free_path2(olddir, newdir, w1, w2, oldpath, newpath);
	}
	ll_reply_err(req, err);
}

static void ll_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		    const char *newname)
{
	struct fuse_entry_param e;
	char *oldpath = NULL, *newpath = NULL;
	int err;

	memset(&e, 0, sizeof(e));
	ll_enter(req);
	err = get_path2(ino, NULL, newparent, newname, &oldpath, &newpath, NULL,
			NULL);
	if (!err) {
		err = cfs_ops.link(oldpath, newpath);
		if (!err)
			err =
			    lookup_path(newparent, newname, newpath, &e, NULL);
		free_path2(ino, newparent, NULL, NULL, oldpath, newpath);
	}
	reply_entry(req, &e, err);
}

/* The release handler, then the node's open count; the last release of a
 * hidden node unlinks its hidden name (path NULL: its directory went). */
static void do_release(fuse_ino_t ino, const char *path,
		       struct fuse_file_info *fi)
{
	struct node *n;
	int unlink_hidden = 0;

	cfs_ops.release(path, fi);
	pthread_mutex_lock(&nt.lock);
	n = get_node(ino);
	if (n && n->open_count > 0 && --n->open_count == 0 && n->hidden) {
		unlink_hidden = 1;
		n->hidden = 0;
	}
	pthread_mutex_unlock(&nt.lock);
	if (unlink_hidden && path)
		cfs_ops.unlink(path);
}

static void ll_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	struct fuse_entry_param e;
	char *path;
	int err;

	memset(&e, 0, sizeof(e));
	ll_enter(req);
	err = get_path_name(parent, name, &path);
	if (err) {
		ll_reply_err(req, err);
		return;
	}
	err = cfs_ops.create(path, mode, fi);
	if (!err) {
		err = lookup_path(parent, name, path, &e, fi);
		if (err) {
			cfs_ops.release(path, fi);
		} else if (!S_ISREG(e.attr.st_mode)) {
			err = -EIO;
			cfs_ops.release(path, fi);
			forget_node(e.ino, 1);
		}
	}
	if (err) {
		ll_reply_err(req, err);
	} else {
		struct node *n;

		pthread_mutex_lock(&nt.lock);
		n = get_node(e.ino);
		if (n)
			n->open_count++;
		pthread_mutex_unlock(&nt.lock);
		ll_leave();
		if (fuse_reply_create(req, &e, fi) == -ENOENT) {
			/* The open was interrupted: undone. */
			do_release(e.ino, path, fi);
			forget_node(e.ino, 1);
		}
	}
	ll_free_path(parent, path);
}

static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	char *path;
	int err;

	ll_enter(req);
	err = ll_get_path(ino, &path);
	if (!err)
		err = cfs_ops.open(path, fi);
	if (err) {
		ll_reply_err(req, err);
	} else {
		struct node *n;

		pthread_mutex_lock(&nt.lock);
		n = get_node(ino);
		if (n)
			n->open_count++;
		pthread_mutex_unlock(&nt.lock);
		ll_leave();
		if (fuse_reply_open(req, fi) == -ENOENT)
			do_release(ino, path, fi);
	}
	ll_free_path(ino, path);
}

static void ll_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	char *path = NULL;
	int err = 0;

	ll_enter(req);
	ll_get_path_nullok(ino, &path);
	if (fi->flush) {
		err = cfs_ops.flush(path, fi);
		if (err == -ENOSYS)
			err = 0;
	}
	do_release(ino, path, fi);
	ll_free_path(ino, path);
	ll_reply_err(req, err);
}

const struct fuse_lowlevel_ops cfs_ll_ops = {
    .init = ll_init,
    .destroy = ll_destroy,
    .lookup = ll_lookup,
    .forget = ll_forget,
    .forget_multi = ll_forget_multi,
    .getattr = ll_getattr,
    .setattr = ll_setattr,
    .readlink = ll_readlink,
    .mknod = ll_mknod,
    .mkdir = ll_mkdir,
    .unlink = ll_unlink,
    .rmdir = ll_rmdir,
    .symlink = ll_symlink,
    .rename = ll_rename,
    .link = ll_link,
    .create = ll_create,
    .open = ll_open,
    .read = ll_read,
    .write = ll_write,
    .flush = ll_flush,
    .release = ll_release,
    .fsync = ll_fsync,
    .opendir = ll_opendir,
    .readdir = ll_readdir,
    .readdirplus = ll_readdirplus,
    .releasedir = ll_releasedir,
    .statfs = ll_statfs,
    .setxattr = ll_setxattr,
    .getxattr = ll_getxattr,
    .listxattr = ll_listxattr,
    .removexattr = ll_removexattr,
};

/* ---- life cycle ---- */

int ll_setup(void)
{
	struct node *root;

	nt.size = NODE_TABLE_MIN;
	nt.ids = calloc(nt.size, sizeof(*nt.ids));
	nt.names = calloc(nt.size, sizeof(*nt.names));
	root = calloc(1, sizeof(*root));
	if (!nt.ids || !nt.names || !root) {
		free(nt.ids);
		free(nt.names);
		free(root);
		nt.ids = nt.names = NULL;
		return -ENOMEM;
	}
	root->id = FUSE_ROOT_ID;
	root->nlookup = 1;
	root->refctr = 1;
	nt.ids[id_hash(root->id)] = root;
	nt.count = 1;
	nt.ctr = FUSE_ROOT_ID;
	atomic_store(&nt.active, 1);
	return 0;
}

void ll_unmounted(void)
{
	size_t i, left = 0, known = 0;

	if (!nt.ids)
		return;
	/* Hidden names of files still open: unlinked, as libfuse does. No
	 * request runs any more; the handler runs without a caller. */
	for (;;) {
		char *path = NULL;

		pthread_mutex_lock(&nt.lock);
		for (i = 0; i < nt.size && !path; i++) {
			struct node *n;

			for (n = nt.ids[i]; n && !path; n = n->id_next) {
				if (!n->hidden)
					continue;
				n->hidden = 0;
				try_get_path(n->id, NULL, &path, NULL, 0);
			}
		}
		pthread_mutex_unlock(&nt.lock);
		if (!path)
			break;
		cfs_ops.unlink(path);
		free(path);
	}
	pthread_mutex_lock(&nt.lock);
	for (i = 0; i < nt.size; i++) {
		struct node *n;

		for (n = nt.ids[i]; n; n = n->id_next) {
			known++;
			left += n->id != FUSE_ROOT_ID && n->nlookup > 0;
		}
	}
	pthread_mutex_unlock(&nt.lock);
	log_info("low-level: %zu nodes at unmount, %zu the kernel had not "
		 "forgotten",
		 known, left);
}

void ll_free_all(void)
{
	size_t i;

	if (!nt.ids)
		return;
	pthread_mutex_lock(&nt.lock);
	for (i = 0; i < nt.size; i++) {
		struct node *n, *next;

		for (n = nt.ids[i]; n; n = next) {
			next = n->id_next;
			free(n->name);
			free(n);
		}
	}
	free(nt.ids);
	free(nt.names);
	nt.ids = nt.names = NULL;
	nt.count = 0;
	pthread_mutex_unlock(&nt.lock);
}
