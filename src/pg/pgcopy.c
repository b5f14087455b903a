/*
 * pgcopy.c - COPY ... FROM STDIN for ntt.core.pg: the C streaming API of
 * pgcopy.h (used by the loader, load.c) and the Lua-facing COPY methods.
 *
 * The binary PGCOPY encoder itself (ntt_copybuf) is inline in pgcopy.h:
 * the loader encodes millions of fields per medium.
 *
 * Lua API (methods of ntt.core.pg's Conn, registered by pg.c):
 *   Conn:copy_in(sql) -> Copy | nil, msg, EDB   (sql: COPY ... FROM STDIN)
 *   Copy:put(data) -> true | nil, msg, EDB
 *   Copy:finish() -> rows (integer) | nil, msg, EDB
 *   Copy:abort([msg]) -> true ; Copy:close() aborts an unfinished COPY
 *   Conn:copy_rows(sql, rows [, ncols | types]) -> rows copied | nil, msg, EDB
 *       sql is a COPY ... FROM STDIN (FORMAT binary); every row is an array
 *       of ncols (default row.n or #row) values encoded in C: integer ->
 *       bigint, float -> float8, boolean -> bool, string/bytea(s) -> bytes,
 *       nil -> NULL.  types (array of "int8"|"int4"|"int2"|"float8"|"bool"|
 *       "raw"|"auto", one per column) fixes the column count and encoding.
 *       Bad values raise before the COPY starts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ntt.h"
#include "pgcopy.h"
#include "pg_int.h"

#define COPY_MT  "ntt.PgCopy"
#define COPY_FLUSH (256 * 1024)

typedef struct {
    PgConn *pc;            /* the Conn is anchored in the user value */
    int active;
} PgCopy;

/* ---------- COPY: C API ---------- */

int ntt_pg_copy_begin(PGconn *c, const char *sql, char *errbuf, size_t errlen, char sqlstate[6])
{
    PGresult *res = PQexec(c, sql);
    if (res && PQresultStatus(res) == PGRES_COPY_IN) { PQclear(res); return 0; }
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_FATAL_ERROR && st != PGRES_NONFATAL_ERROR) {
        pg_copy_str(errbuf, errlen, "copy: the statement is not a COPY ... FROM STDIN");
        if (sqlstate) snprintf(sqlstate, 6, "42601");
    } else {
        pg_describe(c, res, errbuf, errlen, sqlstate);
    }
    PQclear(res);
    pg_drain_copy(c, st);
    return -1;
}

int ntt_pg_copy_send(PGconn *c, const char *data, size_t len, char *errbuf, size_t errlen)
{
    while (len > 0) {
        int n = len > 0x40000000 ? 0x40000000 : (int)len;
        if (PQputCopyData(c, data, n) != 1) {
            pg_copy_str(errbuf, errlen, PQerrorMessage(c));
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

int ntt_pg_copy_end(PGconn *c, const char *errmsg, long long *rows,
                    char *errbuf, size_t errlen, char sqlstate[6])
{
    int rc = 0;
    if (sqlstate) sqlstate[0] = '\0';
    if (rows) *rows = 0;
    if (PQputCopyEnd(c, errmsg) != 1) {
        pg_copy_str(errbuf, errlen, PQerrorMessage(c));
        if (sqlstate && PQstatus(c) == CONNECTION_BAD) snprintf(sqlstate, 6, "08006");
        rc = -1;
    }
    PGresult *res;
    int first = 1;
    while ((res = PQgetResult(c))) {
        if (first && rc == 0) {
            if (PQresultStatus(res) == PGRES_COMMAND_OK) {
                if (rows) *rows = strtoll(PQcmdTuples(res), NULL, 10);
            } else {
                pg_describe(c, res, errbuf, errlen, sqlstate);
                rc = -1;
            }
        }
        first = 0;
        PQclear(res);
    }
    return rc;
}

/* ---------- COPY: Lua API ---------- */

int conn_copy_in(lua_State *L)
{
    PgConn *pc = pg_check(L, 1);
    const char *sql = luaL_checkstring(L, 2);
    char err[2048], st[6];
    int rc = ntt_pg_copy_begin(pc->conn, sql, err, sizeof err, st);
    pg_deliver(L, 1, pc);
    if (rc != 0)
        return pg_fail_msg(L, err, st);
    PgCopy *cp = ntt_newudata(L, sizeof *cp, COPY_MT);
    cp->pc = pc;
    cp->active = 1;
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    return 1;
}

static PgCopy *copy_check(lua_State *L)
{
    PgCopy *cp = luaL_checkudata(L, 1, COPY_MT);
    if (!cp->active)
        luaL_error(L, "pg: COPY is finished");
    if (!cp->pc->conn)
        luaL_error(L, "pg: connection is closed");
    return cp;
}

static int copy_put(lua_State *L)
{
    PgCopy *cp = copy_check(L);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    char err[1024];
    if (ntt_pg_copy_send(cp->pc->conn, s, len, err, sizeof err) != 0)
        return pg_fail_msg(L, err, PQstatus(cp->pc->conn) == CONNECTION_BAD ? "08006" : NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int copy_end(lua_State *L, const char *abort_msg)
{
    PgCopy *cp = copy_check(L);
    char err[2048], st[6];
    long long rows;
    cp->active = 0;
    int rc = ntt_pg_copy_end(cp->pc->conn, abort_msg, &rows, err, sizeof err, st);
    lua_getiuservalue(L, 1, 1);
    pg_deliver(L, -1, cp->pc);
    lua_pop(L, 1);
    if (abort_msg) { lua_pushboolean(L, 1); return 1; }
    if (rc != 0) return pg_fail_msg(L, err, st);
    lua_pushinteger(L, (lua_Integer)rows);
    return 1;
}

static int copy_finish(lua_State *L) { return copy_end(L, NULL); }
static int copy_abort(lua_State *L) { return copy_end(L, luaL_optstring(L, 2, "aborted by ntt")); }

static int copy_close(lua_State *L)
{
    PgCopy *cp = luaL_checkudata(L, 1, COPY_MT);
    if (cp->active && cp->pc->conn) {
        char err[256], st[6];
        ntt_pg_copy_end(cp->pc->conn, "COPY abandoned", NULL, err, sizeof err, st);
    }
    cp->active = 0;
    return 0;
}

static int copy_tostring(lua_State *L)
{
    PgCopy *cp = luaL_checkudata(L, 1, COPY_MT);
    lua_pushstring(L, cp->active ? "ntt.PgCopy (active)" : "ntt.PgCopy (closed)");
    return 1;
}

enum { T_AUTO, T_INT8, T_INT4, T_INT2, T_FLOAT8, T_BOOL, T_RAW };
#define MAXCOLS 1600

/* Column count of the row at idx: fixed, else row.n, else #row. */
static lua_Integer copy_ncols(lua_State *L, int row, lua_Integer fixed)
{
    if (fixed) return fixed;
    row = lua_absindex(L, row);
    lua_getfield(L, row, "n");
    lua_Integer nc = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : (lua_Integer)lua_rawlen(L, row);
    lua_pop(L, 1);
    return nc;
}

/* Raises unless the value at idx can be sent as type t. */
static void copy_check_value(lua_State *L, int idx, int t, int row, int col)
{
    static const lua_Integer lim[] = { [T_INT4] = INT32_MAX, [T_INT2] = INT16_MAX };
    int lt = lua_type(L, idx), isint;
    lua_Integer v = lua_tointegerx(L, idx, &isint);
    const char *why = NULL;
    if (lt == LUA_TNIL) return;
    switch (t) {
    case T_AUTO:
        if (lt != LUA_TBOOLEAN && lt != LUA_TNUMBER && lt != LUA_TSTRING && !luaL_testudata(L, idx, BYTEA_MT))
            why = "cannot send";
        break;
    case T_INT8: case T_INT4: case T_INT2:
        if (lt != LUA_TNUMBER || !isint) why = "wants an integer, not";
        else if (t != T_INT8 && (v > lim[t] || v < -lim[t] - 1)) why = "integer out of range:";
        break;
    case T_FLOAT8: if (lt != LUA_TNUMBER) why = "wants a number, not"; break;
    case T_BOOL: if (lt != LUA_TBOOLEAN) why = "wants a boolean, not"; break;
    default:
        if (lt != LUA_TSTRING && !luaL_testudata(L, idx, BYTEA_MT)) why = "wants a string or bytea, not";
    }
    if (why)
        luaL_error(L, "pg: copy_rows: row %d column %d %s a %s", row, col, why, luaL_typename(L, idx));
}

/* Encodes the (validated) value at idx as type t; 0 or -1 (out of memory). */
static int copy_encode(lua_State *L, ntt_copybuf *b, int idx, int t)
{
    size_t len;
    const char *s;
    int lt = lua_type(L, idx);
    if (lt == LUA_TNIL) return ntt_copybuf_null(b);
    switch (t) {
    case T_INT4: return ntt_copybuf_int32(b, (int32_t)lua_tointeger(L, idx));
    case T_INT2: return ntt_copybuf_int16(b, (int16_t)lua_tointeger(L, idx));
    case T_INT8: return ntt_copybuf_int64(b, (int64_t)lua_tointeger(L, idx));
    case T_FLOAT8: return ntt_copybuf_float8(b, lua_tonumber(L, idx));
    }
    if (lt == LUA_TBOOLEAN) return ntt_copybuf_bool(b, lua_toboolean(L, idx));
    if (lt == LUA_TNUMBER && lua_isinteger(L, idx)) return ntt_copybuf_int64(b, (int64_t)lua_tointeger(L, idx));
    if (lt == LUA_TNUMBER) return ntt_copybuf_float8(b, lua_tonumber(L, idx));
    if (lt == LUA_TSTRING) s = lua_tolstring(L, idx, &len);
    else s = pg_tobytea(L, idx, &len);
    return ntt_copybuf_field(b, s ? s : "", s ? len : 0);
}

/* The buffer lives in a userdata whose __gc frees it, so raising leaks nothing. */
static int copybuf_gc(lua_State *L)
{
    ntt_copybuf_free(lua_touserdata(L, 1));
    return 0;
}

int conn_copy_rows(lua_State *L)
{
    PgConn *pc = pg_check(L, 1);
    const char *sql = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    unsigned char types[MAXCOLS] = { 0 };
    lua_Integer fixed = 0;
    if (lua_istable(L, 4)) {      /* column types */
        static const char *const names[] = { "auto", "int8", "int4", "int2", "float8", "bool", "raw", NULL };
        fixed = (lua_Integer)lua_rawlen(L, 4);
        if (fixed < 1 || fixed > MAXCOLS)
            return luaL_error(L, "pg: copy_rows: bad column count");
        for (int c = 1; c <= fixed; c++) {
            lua_rawgeti(L, 4, c);
            types[c - 1] = (unsigned char)luaL_checkoption(L, -1, NULL, names);
            lua_pop(L, 1);
        }
    } else {
        fixed = luaL_optinteger(L, 4, 0);
        if (fixed < 0 || fixed > MAXCOLS)
            return luaL_error(L, "pg: copy_rows: bad column count");
    }
    ntt_copybuf *b = lua_newuserdatauv(L, sizeof *b, 0);
    ntt_copybuf_init(b);
    lua_newtable(L);
    lua_pushcfunction(L, copybuf_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    int bidx = lua_gettop(L);
    /* Validate every row first: a bad value raises while the connection is
     * still idle, never in the middle of a COPY. */
    lua_Integer nrows = (lua_Integer)lua_rawlen(L, 3);
    for (lua_Integer r = 1; r <= nrows; r++) {
        lua_rawgeti(L, 3, r);
        int row = lua_gettop(L);
        if (!lua_istable(L, row))
            return luaL_error(L, "pg: copy_rows: row %d is not a table", (int)r);
        lua_Integer nc = copy_ncols(L, row, fixed);
        if (nc < 1 || nc > MAXCOLS)
            return luaL_error(L, "pg: copy_rows: row %d has no columns", (int)r);
        for (lua_Integer c = 1; c <= nc; c++) {
            lua_rawgeti(L, row, c);
            copy_check_value(L, -1, types[c - 1], (int)r, (int)c);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    char err[2048], st[6] = "";
    long long rows = 0;
    int rc = ntt_pg_copy_begin(pc->conn, sql, err, sizeof err, st);
    if (rc == 0) {
        ntt_copybuf_header(b);
        for (lua_Integer r = 1; r <= nrows && rc == 0; r++) {
            lua_rawgeti(L, 3, r);
            lua_Integer nc = copy_ncols(L, -1, fixed);
            ntt_copybuf_tuple(b, (int)nc);
            for (lua_Integer c = 1; c <= nc; c++) {
                lua_rawgeti(L, -1, c);
                copy_encode(L, b, -1, types[c - 1]);
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
            if (b->len >= COPY_FLUSH && !b->failed) {
                rc = ntt_pg_copy_send(pc->conn, b->data, b->len, err, sizeof err);
                b->len = 0;
            }
        }
        ntt_copybuf_trailer(b);
        if (b->failed && rc == 0) { snprintf(err, sizeof err, "copy_rows: out of memory"); rc = -1; }
        if (rc == 0) rc = ntt_pg_copy_send(pc->conn, b->data, b->len, err, sizeof err);
        char err2[2048], st2[6];
        int e = ntt_pg_copy_end(pc->conn, rc ? "copy_rows failed" : NULL, &rows, err2, sizeof err2, st2);
        if (rc == 0 && e != 0) { rc = -1; memcpy(err, err2, sizeof err); memcpy(st, st2, sizeof st); }
    }
    ntt_copybuf_free(b);
    lua_settop(L, bidx);
    pg_deliver(L, 1, pc);
    if (rc != 0)
        return pg_fail_msg(L, err, *st ? st : (PQstatus(pc->conn) == CONNECTION_BAD ? "08006" : NULL));
    lua_pushinteger(L, (lua_Integer)rows);
    return 1;
}

static const luaL_Reg copy_methods[] = {
    { "abort", copy_abort },
    { "close", copy_close },
    { "finish", copy_finish },
    { "put", copy_put },
    { NULL, NULL }
};

static const luaL_Reg copy_meta[] = {
    { "__close", copy_close },
    { "__gc", copy_close },
    { "__tostring", copy_tostring },
    { NULL, NULL }
};

void ntt_pgcopy_open(lua_State *L)
{
    ntt_newclass(L, COPY_MT, copy_methods, copy_meta);
}
