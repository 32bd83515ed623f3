/* rawin: see rawin.h. */
#include "rawin.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

size_t rawin_serve(struct rawin *w, char *out, uint64_t off, size_t size)
{
	if (!w->buf || off < w->off || off + size > w->off + w->len)
		return 0;
	memcpy(out, w->buf + (off - w->off), size);
	w->next = off + size;
	return size;
}

int rawin_plan(struct rawin *w, uint64_t off, size_t size, uint64_t objsize,
	       size_t *want)
{
	size_t n;

	if (off == w->next && w->ra)
		w->ra = w->ra * 2 > RAWIN_MAX ? RAWIN_MAX : w->ra * 2;
	else
		w->ra = RAWIN_MIN;
	n = size > w->ra ? size : w->ra;
	if (n > objsize - off)
		n = (size_t)(objsize - off);
	if (w->cap < n) {
		char *nb = realloc(w->buf, n);

		if (!nb) {
			w->len = 0;
			return -ENOMEM;
		}
		w->buf = nb;
		w->cap = n;
	}
	*want = n;
	return 0;
}

size_t rawin_filled(struct rawin *w, char *out, uint64_t off, size_t size,
		    size_t got, int failed)
{
	if (failed) {
		w->len = 0;
		return 0;
	}
	w->off = off;
	w->len = got;
	if (got < size)
		size = got;
	memcpy(out, w->buf, size);
	w->next = off + size;
	return size;
}

void rawin_free(struct rawin *w)
{
	free(w->buf);
	memset(w, 0, sizeof(*w));
}
