/* nameidx.c - see nameidx.h. */
#include "nameidx.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

static pthread_once_t seed_once = PTHREAD_ONCE_INIT;
static uint64_t seed; /* written once, by seed_init */

static void seed_init(void)
{
	struct timespec ts;

	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) == sizeof(seed))
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^
	       (uint64_t)getpid();
}

static uint64_t hash_of(const char *name)
{
	pthread_once(&seed_once, seed_init);
	return XXH3_64bits_withSeed(name, strlen(name), seed);
}

void nameidx_free(struct nameidx *ix)
{
	free(ix->slots);
	ix->slots = NULL;
	ix->cap = ix->n = 0;
}

/* The slot holding name, or the empty slot where it would go. */
static size_t find_slot(const struct nameidx *ix, const char *name, uint64_t h)
{
	size_t mask = ix->cap - 1, i = (size_t)h & mask;

	while (ix->slots[i].key) {
		if (ix->slots[i].hash == h && !strcmp(ix->slots[i].key, name))
			return i;
		i = (i + 1) & mask;
	}
	return i;
}

static int grow(struct nameidx *ix, size_t cap)
{
	struct nameidx_slot *old = ix->slots, *ns;
	size_t old_cap = ix->cap, i;

	ns = calloc(cap, sizeof(*ns));
	if (!ns)
		return -ENOMEM;
	ix->slots = ns;
	ix->cap = cap;
	for (i = 0; i < old_cap; i++) {
		size_t j;

		if (!old[i].key)
			continue;
		j = (size_t)old[i].hash & (cap - 1);
		while (ns[j].key)
			j = (j + 1) & (cap - 1);
		ns[j] = old[i];
	}
	free(old);
	return 0;
}

int nameidx_reserve(struct nameidx *ix, size_t n)
{
	size_t cap = ix->cap ? ix->cap : 16;

	/* At most half full: probe sequences stay short. */
	while (cap / 2 < n) {
		if (cap > SIZE_MAX / 4 / sizeof(struct nameidx_slot))
			return -ENOMEM;
		cap *= 2;
	}
	return cap == ix->cap ? 0 : grow(ix, cap);
}

int nameidx_get(const struct nameidx *ix, const char *name, uintptr_t *val)
{
	size_t i;

	if (!ix->n)
		return 0;
	i = find_slot(ix, name, hash_of(name));
	if (!ix->slots[i].key)
		return 0;
	if (val)
		*val = ix->slots[i].val;
	return 1;
}

int nameidx_put(struct nameidx *ix, const char *name, uintptr_t val)
{
	uint64_t h = hash_of(name);
	size_t i;
	int rc;

	if (ix->cap) {
		i = find_slot(ix, name, h);
		if (ix->slots[i].key)
			goto set; /* replacing allocates nothing: never fails */
	}
	rc = nameidx_reserve(ix, ix->n + 1);
	if (rc)
		return rc;
	i = find_slot(ix, name, h);
	ix->n++;
set:
	ix->slots[i].key = name;
	ix->slots[i].hash = h;
	ix->slots[i].val = val;
	return 0;
}

int nameidx_del(struct nameidx *ix, const char *name)
{
	size_t mask, i, j;

	if (!ix->n)
		return 0;
	mask = ix->cap - 1;
	i = find_slot(ix, name, hash_of(name));
	if (!ix->slots[i].key)
		return 0;
	/* Backward shift: move up every later entry of the cluster whose
	 * home slot is not cyclically within (i, j], so no probe sequence
	 * crosses an empty slot before reaching its entry. */
	for (j = (i + 1) & mask; ix->slots[j].key; j = (j + 1) & mask) {
		size_t k = (size_t)ix->slots[j].hash & mask;
		int stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);

		if (stays)
			continue;
		ix->slots[i] = ix->slots[j];
		i = j;
	}
	memset(&ix->slots[i], 0, sizeof(ix->slots[i]));
	ix->n--;
	return 1;
}
