/* promote_dir.c - a directory's promotion: every file under it by a
 * bounded pool of workers, each running promote_file (promote.c); see
 * promote.h. */
#include "promote.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "promote_internal.h"

/* The files of one directory promotion, shared by its workers. */
struct promote_batch {
	struct promote *p;
	const char *prefix;
	const struct actor *who;
	promote_check_fn check;
	promote_done_fn done_fn;
	void *check_arg;
	char **src;  /* source keys */
	char **dest; /* relpaths in the project */
	size_t n;
	pthread_mutex_t lock;
	size_t next;	/* protected by lock: the next file to take */
	size_t done;	/* protected by lock */
	size_t failed;	/* protected by lock */
	int first_rc;	/* protected by lock: of the first failure */
	size_t first_i; /* protected by lock */
};

static void *promote_batch_worker(void *arg)
{
	struct promote_batch *b = arg;

	for (;;) {
		size_t i;
		struct promote_result r;
		int rc = 0;

		pthread_mutex_lock(&b->lock);
		i = b->next++;
		pthread_mutex_unlock(&b->lock);
		if (i >= b->n)
			break;
		if (b->check)
			rc = b->check(b->check_arg, b->src[i]);
		if (!rc) {
			log_op_begin(); /* each file's own duration_ms */
			rc = promote_file(b->p, b->src[i], b->prefix,
					  b->dest[i], b->who, &r);
		}
		if (!rc && b->done_fn)
			b->done_fn(b->check_arg, b->src[i], b->dest[i], &r);
		pthread_mutex_lock(&b->lock);
		if (rc) {
			if (!b->first_rc || i < b->first_i) {
				/* the first in key order: reproducible */
				b->first_rc = rc;
				b->first_i = i;
			}
			b->failed++;
		} else {
			b->done++;
		}
		pthread_mutex_unlock(&b->lock);
	}
	return NULL;
}

#define PROMOTE_WORKERS_MAX 32

int promote_dir(struct promote *p, const char *src_dir, const char *prefix,
		const char *reldir, const struct actor *who,
		promote_check_fn check, promote_done_fn done, void *check_arg,
		struct promote_dir_result *res)
{
	struct promote_batch b = {.p = p,
				  .prefix = prefix,
				  .who = who,
				  .check = check,
				  .done_fn = done,
				  .check_arg = check_arg};
	struct promote_dir_result local;
	struct s3_list_result ls = {0};
	pthread_t th[PROMOTE_WORKERS_MAX];
	char **markers = NULL;
	size_t i, n_markers = 0, dl;
	char *dir = NULL;
	int rc, n_th = 0, workers;

	if (!res)
		res = &local;
	memset(res, 0, sizeof(*res));
	if (!p || !src_dir || !*src_dir || !prefix || !reldir || !*reldir)
		return -EINVAL;
	if (asprintf(&dir, "%s/", src_dir) < 0)
		return -ENOMEM;
	dl = strlen(dir);
	rc = s3_list_all(p->s3, p->cfg->reception_bucket, dir, NULL, 0, &ls);
	if (rc)
		goto out;
	b.src = calloc(ls.n_entries + 1, sizeof(*b.src));
	b.dest = calloc(ls.n_entries + 1, sizeof(*b.dest));
	markers = calloc(ls.n_entries + 1, sizeof(*markers));
	if (!b.src || !b.dest || !markers) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < ls.n_entries; i++) {
		const char *k = ls.entries[i].key;
		size_t kl = strlen(k);

		if (kl <= dl || k[kl - 1] == '/') {
			markers[n_markers++] = ls.entries[i].key;
			continue;
		}
		b.src[b.n] = ls.entries[i].key;
		if (asprintf(&b.dest[b.n], "%s/%s", reldir, k + dl) < 0) {
			rc = -ENOMEM;
			goto out;
		}
		b.n++;
	}
	res->n_files = b.n;
	pthread_mutex_init(&b.lock, NULL);
	workers = p->cfg->promote_workers > 0 ? p->cfg->promote_workers : 1;
	if (workers > PROMOTE_WORKERS_MAX)
		workers = PROMOTE_WORKERS_MAX;
	for (n_th = 0; n_th < workers && (size_t)n_th < b.n; n_th++)
		if (pthread_create(&th[n_th], NULL, promote_batch_worker, &b))
			break;
	if (!n_th)
		promote_batch_worker(&b); /* no thread: all here */
	for (i = 0; i < (size_t)n_th; i++)
		pthread_join(th[i], NULL);
	pthread_mutex_destroy(&b.lock);
	res->n_done = b.done;
	res->n_failed = b.failed;
	rc = b.first_rc;
	if (!rc && check) {
		/* what the listing cannot show: the directory stays */
		rc = check(check_arg, NULL);
		if (rc) {
			snprintf(res->first_failed, sizeof(res->first_failed),
				 "%s", dir);
			log_error("promotion of %s/%s: %zu files promoted; the "
				  "directory holds a file not stored yet (%s): "
				  "it stays in reception",
				  p->cfg->reception_bucket, src_dir, b.done,
				  strerror(-rc));
			goto out;
		}
	}
	if (rc) {
		snprintf(res->first_failed, sizeof(res->first_failed), "%s",
			 b.src[b.first_i]);
		log_error("promotion of %s/%s: %zu of %zu files promoted, %zu "
			  "failed (first: %s: %s); they stay in reception",
			  p->cfg->reception_bucket, src_dir, b.done, b.n,
			  b.failed, res->first_failed, strerror(-rc));
		goto out;
	}
	/* Every file is promoted: the directory leaves reception, its
	 * deepest markers first. */
	for (i = n_markers; i-- > 0;) {
		int r = s3_delete(p->s3, p->cfg->reception_bucket, markers[i]);

		if (r && !rc)
			rc = r;
	}
	log_info("promotion of %s/%s: %zu files promoted to %s/%s",
		 p->cfg->reception_bucket, src_dir, b.n, prefix, reldir);
out:
	for (i = 0; b.dest && i < b.n; i++)
		free(b.dest[i]);
	free(b.dest);
	free(b.src);
	free(markers);
	s3xml_list_free(&ls);
	free(dir);
	return rc;
}
