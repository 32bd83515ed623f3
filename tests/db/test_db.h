/* test_db.h - what the parts of the test_db program share (TAP output and
 * SQL helpers in test_db.c; the key lookup checks in test_db_keys.c; the
 * pool's bounded waits in test_db_pool.c). */
#ifndef CUSTODYFS_TEST_DB_H
#define CUSTODYFS_TEST_DB_H

#include <libpq-fe.h>

#include "db.h"

void ok(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Runs sql; 1 on success (else a diagnostic). */
int sql_ok(PGconn *c, const char *sql);
/* First column of the first row, malloc'd; NULL for no row, NULL or
 * error. */
char *sql_val_p(PGconn *c, const char *sql, int n, const char *const *p);
char *sql_val(PGconn *c, const char *sql);
/* Does sql's first value equal want (NULL: is NULL / no row)? */
int sql_is(PGconn *c, const char *sql, const char *want);
long sql_long(PGconn *c, const char *sql);
struct db *open_or_die(const char *conninfo, int pool);

/* test_db_keys.c */
void test_live_keys(struct db *d);
void test_record_guarded(struct db *d, PGconn *raw);
void test_unrowed_do(struct db *d, PGconn *raw);
void test_rename_guard(struct db *d, PGconn *raw);
void test_key_indexes(const char *conninfo, PGconn *raw);

/* test_db_attrs.c */
void test_attrs_may(struct db *d, PGconn *raw);
void test_attrs_move_claim(struct db *d, PGconn *raw);
void test_attrs_hidden(struct db *d, PGconn *raw);
void test_attrs_spare(struct db *d, PGconn *raw);
/* test_db_attrs_defer.c */
void test_attrs_defer(struct db *d, PGconn *raw);

/* test_db_pool.c */
void test_pool_wait(const char *conninfo);
void test_pool_bulk(const char *conninfo);

#endif
