/* bench_dset.c - NOT a test: prints how long a directory listing of N
 * entries takes to build and to answer a lookup of every name, with the
 * daemon's dset (fs/dset.c) and with the linear array it replaced (the
 * old dircache.c: a duplicate check per inserted name, a scan per lookup).
 *
 *   build/tests/bench_dset [N]     (default 100000) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dset.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The old dircache.c's structure: an array searched linearly. */
static struct dentry *linear_find(struct dentry *e, size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!strcmp(e[i].name, name))
			return &e[i];
	return NULL;
}

int main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000, i, hits = 0;
	struct dset s = DSET_INIT;
	struct dentry *lin;
	char **names;
	double t0, t1, t2;

	names = calloc(n, sizeof(*names));
	lin = calloc(n, sizeof(*lin));
	if (!names || !lin)
		return 1;
	for (i = 0; i < n; i++)
		if (asprintf(&names[i], "scan-2026-11-30-%07zu.tif", i) < 0)
			return 1;

	t0 = now_s();
	for (i = 0; i < n; i++)
		if (!dset_find(&s, names[i]) &&
		    dset_set(&s, names[i], 0, i, 0, "etag"))
			return 1;
	t1 = now_s();
	for (i = 0; i < n; i++)
		hits += dset_find(&s, names[i]) != NULL;
	t2 = now_s();
	printf("dset    %zu entries: build %.3f s, %zu lookups %.3f s\n", n,
	       t1 - t0, n, t2 - t1);

	t0 = now_s();
	for (i = 0; i < n; i++) {
		if (linear_find(lin, i, names[i]))
			continue;
		lin[i].name = names[i];
	}
	t1 = now_s();
	for (i = 0; i < n; i++)
		hits += linear_find(lin, n, names[i]) != NULL;
	t2 = now_s();
	printf("linear  %zu entries: build %.3f s, %zu lookups %.3f s\n", n,
	       t1 - t0, n, t2 - t1);
	if (hits != 2 * n) {
		fprintf(stderr, "bench_dset: %zu of %zu names found\n", hits,
			2 * n);
		return 1;
	}
	dset_free(&s);
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(lin);
	return 0;
}
