/* db_projects.h - projects_registry, and what the projects/ view reads
 * from storage_audit (db_projects.c).
 *
 * Same conventions as db.h: knows nothing of S3 or FUSE, SQL parameterised,
 * 0 or -errno (errmap_sqlstate), strings malloc'd and owned by the caller. */
#ifndef CUSTODYFS_DB_PROJECTS_H
#define CUSTODYFS_DB_PROJECTS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "db.h"

/* The longest project prefix (SPEC §3). */
#define DB_PROJECT_PREFIX_MAX 63

struct project_row {
	int64_t id;
	char *prefix;
	char *name;	   /* "" when the row has none */
	time_t created_at; /* 0 when NULL */
	char *created_by;  /* NULL when the row has none (seed, other tools) */
};

/* Is prefix a valid project prefix: 1 to 63 of a-z 0-9 . _ -, starting
 * with a letter or digit? 1 or 0. */
int db_project_prefix_valid(const char *prefix);

/* Every row of projects_registry with a valid prefix, by prefix (byte
 * order); rows another tool wrote with an invalid or NULL prefix are
 * skipped (and counted in *skipped, may be NULL). Free with
 * db_projects_free. */
int db_projects_list(struct db *d, struct project_row **rows, size_t *n,
		     size_t *skipped);
void db_projects_free(struct project_row *rows, size_t n);

/* Registers prefix (which the caller validated) with name (NULL: the
 * prefix), created_at = now(), created_by = actor_format(who). Serialised
 * per prefix by an advisory lock, and the unique index on prefix decides
 * against writers that skip it: -EEXIST when the prefix is registered,
 * whoever did it. -EINPROGRESS: the COMMIT's outcome is unknown. */
int db_project_create(struct db *d, const char *prefix, const char *name,
		      const struct actor *who, int64_t *id_out);

/* UPDATE of the name only (the registry's trigger allows nothing else).
 * -ENOENT when there is no such project. */
int db_project_set_name(struct db *d, const char *prefix, const char *name);

/* Removes a project that never stored a file: -ENOTEMPTY when any
 * storage_audit row names it (the trigger custodyfs_projects_guard decides,
 * SQLSTATE 2BP01 since migration 7), -ENOENT when it is not registered. */
int db_project_delete(struct db *d, const char *prefix);

/* What the projects/ view shows of the storage_audit rows of outcome
 * 'duplicate_content' in one directory: a symlink, or a directory that
 * holds such rows deeper down. */
struct project_link {
	char *key;	    /* a link: its dest_key "<prefix>/<path>"; a
			       directory: "<key_prefix><name>/" */
	char *duplicate_of; /* a link: the stored key it stands for; a
			       directory: NULL */
};

/* The direct children of key_prefix ("p/" or "p/sub/") made by the live
 * (removed_at IS NULL) duplicate_content rows of bucket under it: one
 * entry per name (the newest row of a link; a directory wins over a link
 * of the same name), in byte order, at most max (0: no bound). Free with
 * db_project_links_free. */
int db_project_links(struct db *d, const char *bucket, const char *key_prefix,
		     size_t max, struct project_link **rows, size_t *n);
/* The one row of exactly key, if any: 0 with *target set (malloc'd), or
 * -ENOENT. */
int db_project_link_get(struct db *d, const char *bucket, const char *key,
			char **target);
void db_project_links_free(struct project_link *rows, size_t n);

#endif
