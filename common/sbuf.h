/* sbuf.h - growable NUL-terminated byte buffer.
 *
 * Ownership: the struct is caller-owned (usually on the stack); the heap
 * buffer s is owned by the sbuf until sbuf_detach() hands it to the caller or
 * sbuf_free() releases it.  Functions return 0 or -ENOMEM; after -ENOMEM the
 * buffer keeps its previous content. */
#ifndef CUSTODYFS_SBUF_H
#define CUSTODYFS_SBUF_H

#include <stdarg.h>
#include <stddef.h>

struct sbuf {
	char *s;    /* NULL until the first append; always NUL-terminated after */
	size_t len; /* bytes used, not counting the NUL */
	size_t cap; /* bytes allocated */
};

#define SBUF_INIT {NULL, 0, 0}

int sbuf_add(struct sbuf *b, const void *data, size_t len);
int sbuf_adds(struct sbuf *b, const char *str);
int sbuf_addc(struct sbuf *b, char c);
int sbuf_addf(struct sbuf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int sbuf_vaddf(struct sbuf *b, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));
/* Returns the string (never NULL: "" when empty) and leaves b empty. */
char *sbuf_detach(struct sbuf *b);
/* Returns the string, "" when empty; still owned by b. */
const char *sbuf_str(const struct sbuf *b);
void sbuf_reset(struct sbuf *b); /* len = 0, keeps the allocation */
void sbuf_free(struct sbuf *b);

#endif
