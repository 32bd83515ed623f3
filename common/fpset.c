/* fpset.c - a set of 64-bit fingerprints; see fpset.h. */
#include "fpset.h"

#include <stdlib.h>
#include <string.h>

int fpset_has(const struct fpset *s, uint64_t fp)
{
	size_t i;

	if (!s->cap)
		return 0;
	for (i = fp & (s->cap - 1); s->slots[i]; i = (i + 1) & (s->cap - 1))
		if (s->slots[i] == fp)
			return 1;
	return 0;
}

static void fpset_put_raw(struct fpset *s, uint64_t fp)
{
	size_t i;

	for (i = fp & (s->cap - 1); s->slots[i]; i = (i + 1) & (s->cap - 1))
		if (s->slots[i] == fp)
			return;
	s->slots[i] = fp;
	s->n++;
}

void fpset_add(struct fpset *s, uint64_t fp, size_t max)
{
	if (s->n + 1 > max) {
		/* Forgetting only costs a database check later. */
		memset(s->slots, 0, s->cap * sizeof(*s->slots));
		s->n = 0;
	}
	if ((s->n + 1) * 2 > s->cap) {
		struct fpset ns = {0};
		size_t i;

		ns.cap = s->cap ? s->cap * 2 : 1024;
		ns.slots = calloc(ns.cap, sizeof(*ns.slots));
		if (!ns.slots)
			return;
		for (i = 0; i < s->cap; i++)
			if (s->slots[i])
				fpset_put_raw(&ns, s->slots[i]);
		free(s->slots);
		*s = ns;
	}
	fpset_put_raw(s, fp);
}

void fpset_del(struct fpset *s, uint64_t fp)
{
	size_t i, j;

	if (!s->cap)
		return;
	for (i = fp & (s->cap - 1); s->slots[i]; i = (i + 1) & (s->cap - 1))
		if (s->slots[i] == fp)
			break;
	if (!s->slots[i])
		return;
	/* Backward-shift deletion keeps probe chains intact. */
	s->slots[i] = 0;
	s->n--;
	for (j = (i + 1) & (s->cap - 1); s->slots[j];
	     j = (j + 1) & (s->cap - 1)) {
		uint64_t v = s->slots[j];

		s->slots[j] = 0;
		s->n--;
		fpset_put_raw(s, v);
	}
}

void fpset_free(struct fpset *s)
{
	free(s->slots);
	s->slots = NULL;
	s->cap = s->n = 0;
}
