/* test_examples.c - every example configuration (the .conf files of examples/) is
 * accepted by the daemon's own parser, cfg_load(). TAP, one test per file
 * given on the command line (tests/meson.build passes them).
 *
 * Each file is copied to a private 0600 temporary file first: a checkout
 * leaves examples 0644, and cfg_load() rightly refuses a readable file that
 * holds a secret. Credentials for the examples that hold none come from
 * AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, as they would on a server. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"

static int copy_private(const char *src, char *tmpl)
{
	char buf[8192];
	size_t n;
	FILE *in, *out;
	int fd = mkstemp(tmpl), rc = 0; /* mode 0600 */

	if (fd < 0)
		return -1;
	in = fopen(src, "r");
	out = fdopen(fd, "w");
	if (!in || !out) {
		if (in)
			fclose(in);
		if (out)
			fclose(out);
		else
			close(fd);
		return -1;
	}
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		if (fwrite(buf, 1, n, out) != n)
			rc = -1;
	if (ferror(in))
		rc = -1;
	fclose(in);
	if (fclose(out) != 0)
		rc = -1;
	return rc;
}

int main(int argc, char **argv)
{
	int i, failed = 0;

	setenv("AWS_ACCESS_KEY_ID", "example-key", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "example-secret", 1);
	unsetenv("AWS_SESSION_TOKEN");
	printf("1..%d\n", argc - 1);
	for (i = 1; i < argc; i++) {
		char tmp[] = "/tmp/custodyfs-example-XXXXXX", err[512];
		struct cfg c;
		int rc;

		if (copy_private(argv[i], tmp) != 0) {
			printf("not ok %d - %s: cannot copy\n", i, argv[i]);
			failed++;
			continue;
		}
		rc = cfg_load(tmp, &c, err, sizeof(err));
		unlink(tmp);
		if (rc) {
			printf("not ok %d - %s: %s\n", i, argv[i], err);
			failed++;
			continue;
		}
		printf("ok %d - %s (endpoint %s, ca_file %s)\n", i, argv[i],
		       c.endpoint, c.ca_file ? c.ca_file : "(system)");
		cfg_free(&c);
	}
	return failed ? 1 : 0;
}
