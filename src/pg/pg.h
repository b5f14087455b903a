/*
 * pg.h - the C side of ntt.core.pg for other C files.
 *
 * A C binding that receives a Conn (ntt.PgConn) from Lua gets its PGconn
 * with ntt_pg_checkconn and may then stream a COPY itself, e.g. the walker
 * feeding enumeration rows without building Lua tables:
 *
 *     PGconn *c = ntt_pg_checkconn(L, 1);
 *     char err[1024], state[6]; long long rows;
 *     ntt_copybuf b; ntt_copybuf_init(&b);
 *     if (ntt_pg_copy_begin(c, "COPY t (a, b) FROM STDIN (FORMAT binary)",
 *                           err, sizeof err, state) != 0) -> fail;
 *     ntt_copybuf_header(&b);
 *     for each row: ntt_copybuf_tuple(&b, 2); ntt_copybuf_int64(&b, v);
 *                   ntt_copybuf_field(&b, p, n);
 *                   if (b.len > 256 KiB) { ntt_pg_copy_send(c, b.data, b.len, err, sizeof err);
 *                                          b.len = 0; }
 *     ntt_copybuf_trailer(&b);
 *     rc = b.failed ? -1 : ntt_pg_copy_send(c, b.data, b.len, err, sizeof err);
 *     ntt_copybuf_free(&b);
 *     ntt_pg_copy_end(c, rc ? "why" : NULL, &rows, err, sizeof err, state);
 * (ntt_pg_copy_end must always follow a successful begin: it leaves the
 * connection ready for the next statement, aborting the COPY when told.)
 *
 * None of these functions touches a lua_State except ntt_pg_checkconn, so
 * a worker thread may run a COPY on a connection that no other thread uses
 * meanwhile.  Functions returning int return 0 on success and -1 on
 * failure (message in errbuf; SQLSTATE in sqlstate when given, "" if none).
 */
#ifndef NTT_PG_H
#define NTT_PG_H

#include <endian.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <libpq-fe.h>
#include "lua.h"

/* The PGconn of the Conn at idx; raises on a non-Conn or a closed Conn. */
PGconn *ntt_pg_checkconn(lua_State *L, int idx);

/*
 * A growing buffer of PGCOPY binary data.  Append functions return 0, or
 * -1 when memory ran out (the buffer then stays failed: every later append
 * returns -1 too, so a caller may check once at the end).
 */
typedef struct {
    char *data;
    size_t len, cap;
    int failed;
} ntt_copybuf;

/* Inline: the walker encodes millions of fields per medium. */
static inline void ntt_copybuf_init(ntt_copybuf *b) { memset(b, 0, sizeof *b); }

static inline void ntt_copybuf_free(ntt_copybuf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

static inline int ntt_copybuf_put(ntt_copybuf *b, const void *p, size_t n)
{
    if (b->failed) return -1;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->len + n) cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) { b->failed = 1; return -1; }
        b->data = d;
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static inline int ntt_copybuf_be16(ntt_copybuf *b, int16_t v)
{ uint16_t x = htobe16((uint16_t)v); return ntt_copybuf_put(b, &x, 2); }
static inline int ntt_copybuf_be32(ntt_copybuf *b, int32_t v)
{ uint32_t x = htobe32((uint32_t)v); return ntt_copybuf_put(b, &x, 4); }
static inline int ntt_copybuf_be64(ntt_copybuf *b, uint64_t v)
{ uint64_t x = htobe64(v); return ntt_copybuf_put(b, &x, 8); }

/* "PGCOPY\n\377\r\n\0", flags 0, header extension length 0. */
static inline int ntt_copybuf_header(ntt_copybuf *b)
{
    ntt_copybuf_put(b, "PGCOPY\n\377\r\n", 11);   /* 10 bytes + the literal's NUL */
    ntt_copybuf_be32(b, 0);
    return ntt_copybuf_be32(b, 0);
}

/* Starts a tuple of nfields fields (int16); the trailer is int16 -1. */
static inline int ntt_copybuf_tuple(ntt_copybuf *b, int nfields) { return ntt_copybuf_be16(b, (int16_t)nfields); }
static inline int ntt_copybuf_trailer(ntt_copybuf *b) { return ntt_copybuf_be16(b, -1); }
/* A NULL field (length -1). */
static inline int ntt_copybuf_null(ntt_copybuf *b) { return ntt_copybuf_be32(b, -1); }

/* One field: int32 length then the bytes (binary form of text/bytea). */
static inline int ntt_copybuf_field(ntt_copybuf *b, const void *p, size_t n)
{
    if (n > 0x7fffffff) { b->failed = 1; return -1; }
    ntt_copybuf_be32(b, (int32_t)n);
    return ntt_copybuf_put(b, p, n);
}

/* Typed fields in network byte order: bigint, integer, smallint, float8, bool. */
static inline int ntt_copybuf_int64(ntt_copybuf *b, int64_t v)
{ ntt_copybuf_be32(b, 8); return ntt_copybuf_be64(b, (uint64_t)v); }
static inline int ntt_copybuf_int32(ntt_copybuf *b, int32_t v)
{ ntt_copybuf_be32(b, 4); return ntt_copybuf_be32(b, v); }
static inline int ntt_copybuf_int16(ntt_copybuf *b, int16_t v)
{ ntt_copybuf_be32(b, 2); return ntt_copybuf_be16(b, v); }
static inline int ntt_copybuf_float8(ntt_copybuf *b, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    ntt_copybuf_be32(b, 8);
    return ntt_copybuf_be64(b, u);
}
static inline int ntt_copybuf_bool(ntt_copybuf *b, int v)
{
    char c = v ? 1 : 0;
    ntt_copybuf_be32(b, 1);
    return ntt_copybuf_put(b, &c, 1);
}

/* Runs a COPY ... FROM STDIN statement; the connection is then in COPY IN. */
int ntt_pg_copy_begin(PGconn *c, const char *sql, char *errbuf, size_t errlen,
                      char sqlstate[6]);
/* Sends bytes of COPY data (blocking until libpq accepted them). */
int ntt_pg_copy_send(PGconn *c, const char *data, size_t len, char *errbuf, size_t errlen);
/*
 * Ends the COPY (errmsg NULL: commit the data; else abort with that
 * message) and collects the result; *rows gets the rows copied.
 */
int ntt_pg_copy_end(PGconn *c, const char *errmsg, long long *rows,
                    char *errbuf, size_t errlen, char sqlstate[6]);

/*
 * A database failure in ntt's vocabulary (docs/errors.md): pushes nil, msg,
 * "EDB" and, when sqlstate is non-empty, the SQLSTATE as a fourth value.
 * Returns the number of values pushed.
 */
int ntt_pg_fail(lua_State *L, const char *msg, const char *sqlstate);

#endif
