/* upload.h - streaming upload of a spool file into one S3 object.
 *
 * While a file is being written, its bytes go to a spool file on disk (the
 * caller's fd) and, when the writes are sequential, are announced with
 * upload_write(). The upload_pool's hashers read them back from the spool,
 * in order, behind the writer, computing XXH3-128 and SHA-256 of the whole
 * file, and hand every completed part to a worker, which reads it from the
 * spool again, hashes it (the SigV4 payload hash) and PUTs it (multipart
 * upload; the worker of the first job creates it), so the object is mostly
 * uploaded by the time the file is closed. No hashing is on the writer's
 * path (for a sequential writer, one FUSE request at a time): upload_write
 * is bookkeeping, and the hashing runs beside the writer and the parts in
 * parallel. Uploads share the hashers in turn, one chunk (1 MiB) at a time,
 * and no hasher ever waits for the store. A non-sequential write or a
 * truncate calls upload_invalidate(): upload_finish() then rehashes the
 * spool and uploads it again. No object is ever copied onto itself: hashes
 * go into metadata only where the upload allows it (see upload_finish).
 *
 * A caller never waits for the pool to serve other files: upload_finish,
 * upload_set_key, upload_restart and upload_free take the upload back from
 * the hashers (a hasher in the middle of this file's chunk finishes that
 * chunk), hash what is left in the caller's thread, and run in the caller's
 * thread the jobs of this upload that no worker has started; they wait
 * only for this upload's own requests in flight.
 *
 * Knows S3 (s3.h) but no database and no FUSE. An upload is used by one
 * thread at a time (the caller serialises append/invalidate/finish); the
 * pool's workers synchronise with it internally. */
#ifndef CUSTODYFS_UPLOAD_H
#define CUSTODYFS_UPLOAD_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "hash.h"
#include "s3.h"

struct upload_pool;
struct upload;

/* The user metadata (x-amz-meta-custodyfs-upload) every object an upload
 * makes carries: 128 random bits in hex, drawn anew for each version of
 * the file (upload_new, and after each upload_finish). Nobody but this
 * process knows it before its request is sent (on Swift, a multipart
 * upload's metadata is readable in its segments container until it
 * completes), so an object that carries it is that version's, or a copy
 * of it; its bytes are checked all the same. */
#define UPLOAD_TAG "custodyfs-upload"
#define UPLOAD_TAG_HEX 33

struct upload_result {
	uint64_t size;
	char xxh128[HASH_XXH128_HEX];
	char sha256[HASH_SHA256_HEX];
	char etag[80];
	/* upload_finish: the request that makes the object (the PUT, or
	 * the completion of its parts) was sent, so a failure may have
	 * taken effect; 0: nothing of this version can be at the key. */
	int sent;
	/* The UPLOAD_TAG value the object of that request carries ("" when
	 * none could be drawn): what tells this upload's object from another
	 * client's of the same bytes (review-W 4b, W2). A rename's copy
	 * (reception.h) puts its rename tag's value here instead. */
	char tag[64];
};

/* Starts `workers` part uploaders and as many hashers. NULL on failure
 * (errno set). */
struct upload_pool *upload_pool_new(int workers);
/* Stops the hashers, then the workers once they have run every queued job.
 * Every upload of the pool must have been freed first. */
void upload_pool_free(struct upload_pool *p);

/* Multipart uploads left open by a process that died (their parts stay,
 * invisible and billed, until aborted). A process keeps a journal of the
 * multipart uploads it has open in a local directory (the spool): the
 * file is locked (flock) for as long as it lives. */

/* Creates and locks this process's journal in dir: *fd_out and its path
 * (*path_out, malloc'd), to give to upload_pool_set_journal. 0 or -errno. */
int upload_journal_open(const char *dir, int *fd_out, char **path_out);
/* From here on p records in fd (fd and path owned by p from here on) each
 * multipart upload it creates and each it completes or aborts.
 * upload_pool_free closes it, and removes the file when nothing it
 * recorded is left open. */
void upload_pool_set_journal(struct upload_pool *p, int fd, char *path);
/* Aborts, with standard S3 requests only, the multipart uploads that the
 * journals in dir of processes that are gone (their lock free) left open;
 * a journal goes once all of its uploads are aborted or gone. Never
 * touches a live process's uploads (its journal is locked), nor any upload
 * not journaled (another tool's, another host's). *aborted gets the count.
 * stop (NULL: never) is read between uploads: once set, the sweep ends
 * with -ECANCELED and what is left stays for the next one.
 * 0, or the first error (what failed is tried again by the next sweep). */
int upload_journal_sweep(struct s3_client *s3, const char *dir,
			 const atomic_int *stop, size_t *aborted);

/* A new upload of fd (owned by the caller, must stay open until
 * upload_free) to bucket/key. part_size >= 5 MiB. Strings are copied.
 * NULL on OOM. */
struct upload *upload_new(struct upload_pool *p, struct s3_client *s3,
			  const char *bucket, const char *key, int fd,
			  uint64_t part_size);

/* The caller has just written data[0..len) at offset `off` of the spool.
 * Sequential appends (off == bytes appended so far) are hashed (read back
 * from the spool by a hasher, so the hashes are the spool's bytes; data
 * itself is not kept) and may start part uploads; anything else
 * invalidates the stream. Returns 0, or the first background part error
 * as -errno (the upload then falls back to a full re-upload at finish, so
 * callers may ignore it). */
int upload_write(struct upload *u, const void *data, size_t len, off_t off);

/* meta[] (copied) is what a multipart upload started while streaming is
 * created with: set it before the writes that reach part_size. At finish,
 * an upload created with other values than the final meta[] for any name
 * but "mtime" is uploaded again from the spool; "mtime" may be older (the
 * time the upload was created). 0 or -ENOMEM (the previous meta kept). */
int upload_set_meta(struct upload *u, const struct s3_kv *meta, size_t n);

/* The spool was changed other than by appending (truncate, rewrite): the
 * streamed state is dropped (pending multipart aborted at finish). */
void upload_invalidate(struct upload *u);

/* The spool was truncated to 0 bytes: streaming starts over from offset 0
 * (a multipart upload in flight is aborted). */
void upload_restart(struct upload *u);

/* The UPLOAD_TAG value (UPLOAD_TAG_HEX bytes with its NUL; "" when none
 * was drawn) the next upload_finish's object will carry, into out (n
 * bytes): the current version's, kept until that finish ends (also when
 * it uploads the spool again); a new one is drawn after it, and by
 * upload_restart. */
void upload_tag(struct upload *u, char *out, size_t n);

/* Rebinds the upload to another key (rename before close). Invalidates a
 * multipart upload already started for the old key. */
int upload_set_key(struct upload *u, const char *key);

/* Makes the object hold exactly the spool's `size` bytes and fills *res
 * (size, xxh128, sha256 as computed here from the bytes, etag). Hashes in
 * the caller's thread what the hashers have not, waits for the part
 * uploads (running those no worker has started), then:
 *  - streamed, one part: a single PUT with meta[] plus "xxh128"/"sha256";
 *    (every request that makes an object also carries UPLOAD_TAG);
 *  - streamed, multipart: CompleteMultipartUpload; the upload was created
 *    before the hashes were known, with upload_set_meta's meta[] (see
 *    there), so the object carries no hashes (res, i.e. the caller's
 *    audit row, is their record);
 *  - not streamed (invalidated): the spool is hashed first, then PUT, or
 *    uploaded in parts with meta[] plus the hashes given at create.
 * The last request is the PUT or the completion: nothing rewrites the
 * object afterwards (no copy onto itself), so a failure never leaves a new
 * object behind a reported error except when the completion itself is
 * ambiguous (its answer lost). -errno on failure (-ENOMEM when there is
 * no memory to hash the rest: the file fails, nothing is uploaded); a
 * failed multipart upload is aborted, and the next finish uploads from
 * the spool.
 * After success: if size was 0, streaming starts over from offset 0 (the
 * first close of `echo x > f`/`dd` commits an empty file, then the real
 * writes stream); otherwise the next version is uploaded from the spool.
 * The caller still owns meta[]. */
int upload_finish(struct upload *u, uint64_t size, const struct s3_kv *meta,
		  size_t n_meta, struct upload_result *res);

/* Aborts any multipart upload in flight and frees u. */
void upload_free(struct upload *u);

#endif
