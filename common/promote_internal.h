/* promote_internal.h - struct promote, shared by promote.c (one file's
 * promotion, recovery) and promote_dir.c (a directory's). Not for callers
 * outside common/promote*.c: they use promote.h. */
#ifndef CUSTODYFS_PROMOTE_INTERNAL_H
#define CUSTODYFS_PROMOTE_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "promote.h"

struct inflight {
	int64_t id;
	struct inflight *next;
};

struct promote {
	const struct cfg *cfg;
	struct s3_client *s3;
	struct db *db;
	struct db_owner *owner; /* its id: db_owner_id() (entries of an id
				   this process held before and could not
				   take again are its no more: taken over
				   like a dead process's) */
	pthread_mutex_t lock;
	struct inflight *inflight; /* protected by lock: journal entries this
				      process is working on */
	/* Read-held from a decision's start until its entry is in inflight,
	 * write-held by inflight_claim: no thread claims an entry another
	 * one has just committed and not yet listed. */
	pthread_rwlock_t decide_lock;
	/* the background recovery (promote_recover_start) */
	pthread_t recovery;
	int recovering;		  /* protected by lock: it is started */
	int stopping;		  /* protected by lock: promote_free waits */
	pthread_cond_t stop_cond; /* with lock: stopping was set */
};

#endif
