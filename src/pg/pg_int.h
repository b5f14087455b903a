/*
 * pg_int.h - what pg.c (connections, exec) and pgcopy.c (COPY) share
 * inside ntt.core.pg; not for other modules (they use pg.h, pgcopy.h).
 */
#ifndef NTT_PG_INT_H
#define NTT_PG_INT_H

#include <stddef.h>
#include <libpq-fe.h>
#include "lua.h"

#define CONN_MT  "ntt.PgConn"
#define BYTEA_MT "ntt.PgBytea"

typedef struct notice { struct notice *next; char *sev, *msg, *state; } notice;

typedef struct {
    PGconn *conn;          /* NULL once closed */
    char *url;
    notice *head, *tail;   /* queued by the receiver, drained in Lua */
    int nqueued, dropped;
    int has_callback;
    int sent;              /* a send() awaits its wait() */
} PgConn;

/* pg.c */
PgConn *pg_check(lua_State *L, int idx);
void pg_deliver(lua_State *L, int idx, PgConn *pc);
void pg_drain_copy(PGconn *c, ExecStatusType st);
void pg_copy_str(char *dst, size_t n, const char *src);
void pg_describe(PGconn *c, const PGresult *res, char *buf, size_t n, char state[6]);
int pg_fail_msg(lua_State *L, const char *msg, const char *state);

/* pgvalue.c: results to Lua, the bytea wrapper, password verifiers. */
int pg_push_result(lua_State *L, const PGresult *res);
int pg_bytea(lua_State *L);
int bytea_tostring(lua_State *L);
/* The bytes of a bytea wrapper at idx, or NULL when idx is not one. */
const char *pg_tobytea(lua_State *L, int idx, size_t *len);
int conn_encrypt_password(lua_State *L);
/* The text of the string parameter at idx as the server will take it:
 * itself, or (not UTF-8, or beginning with the mark) its escaped form,
 * which replaces it at idx.  Text results in that form come back as the
 * bytes they were. */
const char *pg_text_param(lua_State *L, int idx, size_t *len);

/* pgcopy.c: the Conn methods copy_in and copy_rows, and the Copy class. */
int conn_copy_in(lua_State *L);
int conn_copy_rows(lua_State *L);
void ntt_pgcopy_open(lua_State *L);

#endif
