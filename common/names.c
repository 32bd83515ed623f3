/* names.c - see names.h. */
#include "names.h"

#include <errno.h>
#include <string.h>

int names_utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (i < len) {
		unsigned c = p[i];
		unsigned cp, need, k;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			need = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			need = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3;
			cp = c & 0x07;
		} else {
			return 0;
		}
		if (len - i <= need)
			return 0;
		for (k = 1; k <= need; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (p[i + k] & 0x3f);
		}
		if ((need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += need + 1;
	}
	return 1;
}

int names_check_component(const char *name)
{
	size_t len = strlen(name), i;

	if (len == 0 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return -EINVAL;
	if (len > NAMES_MAX_COMPONENT)
		return -ENAMETOOLONG;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c < 0x20 || c == 0x7f || c == '/')
			return -EINVAL;
	}
	if (!names_utf8_valid(name, len))
		return -EINVAL;
	return 0;
}

int names_check_relpath(const char *path, size_t prefix_len)
{
	char comp[NAMES_MAX_COMPONENT + 2];
	const char *p = path;
	size_t total = strlen(path);

	if (total == 0)
		return -EINVAL;
	if (prefix_len + total > NAMES_MAX_KEY)
		return -ENAMETOOLONG;
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		int rc;

		if (n > NAMES_MAX_COMPONENT)
			return -ENAMETOOLONG;
		memcpy(comp, p, n);
		comp[n] = '\0';
		rc = names_check_component(comp);
		if (rc)
			return rc;
		if (!slash)
			break;
		p = slash + 1;
	}
	return 0;
}

const char *names_basename(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}
