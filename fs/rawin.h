/* rawin: the read-ahead window of a read-only handle on a stored object
 * (inbox/ and projects/ alike). Pure bookkeeping: it never fetches; the
 * caller fills the buffer with its own ranged GET. The caller serialises
 * every call on one window (the handle's lock). */
#ifndef CUSTODYFS_RAWIN_H
#define CUSTODYFS_RAWIN_H

#include <stddef.h>
#include <stdint.h>

#define RAWIN_MIN (128u << 10)
#define RAWIN_MAX (8u << 20)

struct rawin {
	char *buf;     /* owned: what the last fetch brought */
	size_t cap;    /* allocated size of buf */
	uint64_t off;  /* object offset of buf[0] */
	size_t len;    /* valid bytes in buf */
	size_t ra;     /* current window: grows on sequential reads */
	uint64_t next; /* where a sequential read goes */
};

/* Copies [off, off+size) into out when the window holds all of it.
 * Returns size, or 0 when the caller must fetch. */
size_t rawin_serve(struct rawin *w, char *out, uint64_t off, size_t size);

/* Plans the fetch for a read of size bytes at off of an object of objsize
 * bytes (off < objsize): doubles the window on a sequential read (up to
 * RAWIN_MAX), resets it to RAWIN_MIN otherwise, makes buf hold it and sets
 * *want to the bytes to fetch into buf (never past the object's end).
 * Returns 0, or -ENOMEM (the window is then empty). */
int rawin_plan(struct rawin *w, uint64_t off, size_t size, uint64_t objsize,
	       size_t *want);

/* After a fetch at off that brought got bytes into buf (got == 0 and
 * failed != 0 for a failed one): records them and copies up to size of
 * them into out. Returns the bytes copied (0 after a failure). */
size_t rawin_filled(struct rawin *w, char *out, uint64_t off, size_t size,
		    size_t got, int failed);

/* Frees the buffer; the window can be used again (empty). */
void rawin_free(struct rawin *w);

#endif
