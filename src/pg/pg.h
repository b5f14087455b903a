/*
 * pg.h - the C side of ntt.core.pg for other C files.
 *
 * A C binding that receives a Conn (ntt.PgConn) from Lua gets its PGconn
 * with ntt_pg_checkconn and may then stream a COPY itself with the
 * encoder and COPY functions of pgcopy.h (e.g. the loader, load.c,
 * feeding enumeration rows without building Lua tables).
 */
#ifndef NTT_PG_H
#define NTT_PG_H

#include <libpq-fe.h>
#include "lua.h"

/* The PGconn of the Conn at idx; raises on a non-Conn or a closed Conn. */
PGconn *ntt_pg_checkconn(lua_State *L, int idx);

/*
 * A database failure in ntt's vocabulary (docs/errors.md): pushes nil, msg,
 * "EDB" and, when sqlstate is non-empty, the SQLSTATE as a fourth value.
 * Returns the number of values pushed.
 */
int ntt_pg_fail(lua_State *L, const char *msg, const char *sqlstate);

#endif
