/* names.h - validation of names before anything reaches the store.
 *
 * S3 keys are at most 1024 bytes of UTF-8; components here at most 255
 * bytes; no control characters, no invalid UTF-8, no empty, "." or ".."
 * components. Return 0 or -errno: -ENAMETOOLONG, -EINVAL. */
#ifndef CUSTODYFS_NAMES_H
#define CUSTODYFS_NAMES_H

#include <stddef.h>

#define NAMES_MAX_COMPONENT 255
#define NAMES_MAX_KEY 1024

/* Is s[0..len) valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF)? */
int names_utf8_valid(const char *s, size_t len);

/* One path component (no '/'). */
int names_check_component(const char *name);

/* A relative path "a/b/c" (no leading or trailing '/', no "//"), every
 * component checked, and prefix_len + strlen(path) <= NAMES_MAX_KEY so the
 * full key fits. */
int names_check_relpath(const char *path, size_t prefix_len);

/* Returns the last component of path (pointer into path). */
const char *names_basename(const char *path);

#endif
