/* counters.c - see counters.h. */
#include <stdatomic.h>

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
