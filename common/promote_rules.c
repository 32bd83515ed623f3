/* promote_rules.c - the functions of promote.h that need no struct
 * promote: the decision table of SPEC §3 (promote_outcome) and the
 * conditional DELETE of a received object (promote_delete_received*),
 * kept apart from the protocol in promote.c. */
#include "promote.h"

#include <errno.h>
#include <string.h>

enum db_outcome promote_outcome(int has_row, int row_same, int row_dup_content,
				int dest_present, int dest_same,
				int has_content)
{
	if (has_row) {
		if (!row_same)
			return DB_OUT_CONFLICT;
		if (row_dup_content)
			return DB_OUT_DUPLICATE_CONTENT;
		if (!dest_present)
			return DB_OUT_RESTORED;
		/* The object was changed behind the row's back: never
		 * overwritten, never called a duplicate. */
		return dest_same ? DB_OUT_DUPLICATE : DB_OUT_CONFLICT;
	}
	if (dest_present)
		return dest_same ? DB_OUT_ADOPTED : DB_OUT_CONFLICT;
	return has_content ? DB_OUT_DUPLICATE_CONTENT : DB_OUT_COPIED;
}

static int promote_delete_received_as(struct s3_client *s3, const char *bucket,
				      const char *key, const char *etag,
				      int fallback)
{
	struct s3_object_info info;
	int rc, same;

	rc = s3_delete_if(s3, bucket, key, etag);
	/* 412, or If-Match refused as not implemented (501) */
	if (rc != -EEXIST && rc != -ENOTSUP)
		return rc;
	rc = s3_head(s3, bucket, key, &info);
	if (rc)
		return rc;
	same = !strcmp(info.etag, etag);
	s3_object_info_free(&info);
	if (!same)
		return -ESTALE;
	if (!fallback)
		return -EOPNOTSUPP;
	return s3_delete(s3, bucket, key);
}

int promote_delete_received(struct s3_client *s3, const char *bucket,
			    const char *key, const char *etag)
{
	return promote_delete_received_as(s3, bucket, key, etag, 1);
}

int promote_delete_received_strict(struct s3_client *s3, const char *bucket,
				   const char *key, const char *etag)
{
	return promote_delete_received_as(s3, bucket, key, etag, 0);
}
