/* counters.h - this process's custody counters (audit/stats "mount.*").
 *
 * Lock-free atomic counters, incremented by the custody pipeline at its
 * outcome points (reception.c, promote.c) and read by whoever reports them
 * (the daemon's audit/stats, a batch tool's summary). Knows nothing of
 * FUSE, S3 or the database. They start at zero with the process and are
 * never reset: "since this mount". */
#ifndef CUSTODYFS_COUNTERS_H
#define CUSTODYFS_COUNTERS_H

#include <stdint.h>

enum ctr {
	CTR_RECEIVED,	    /* reception rows committed for new content:
			       uploads through the mount and uploads by other
			       routes logged by this process */
	CTR_BYTES_RECEIVED, /* their sizes */
	CTR_COPIED,	    /* promotions that stored bytes: copied */
	CTR_RESTORED,	    /* ... restored (row kept, object was gone) */
	CTR_ADOPTED,	    /* ... adopted (object there, no row) */
	CTR_DUP_PATH,	    /* promotions found already stored at the key */
	CTR_DUP_CONTENT,    /* promotions found stored under another key */
	CTR_CONFLICTS,	    /* promotions refused: another file at the key */
	CTR_BYTES_STORED,   /* sizes of the copied/restored/adopted files */
	CTR_ERR_RECEPTION,  /* uploads whose reception row failed */
	CTR_ERR_PROMOTION,  /* promotions that failed (conflicts excluded) */
	CTR_N
};

/* Adds n to counter c. Thread-safe, never blocks. */
void ctr_add(enum ctr c, uint64_t n);
/* The current value of c. */
uint64_t ctr_get(enum ctr c);
/* The stable name of c in reports ("received", "bytes_received", ...). */
const char *ctr_name(enum ctr c);

#endif
