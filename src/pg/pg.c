/*
 * pg.c - ntt.core.pg: PostgreSQL through libpq.
 *
 * PostgreSQL is ntt's coordinator: every stage records its state there,
 * every worker claims its batches there.  SQL is always parameterised
 * ($1, $2, ...); identifiers are built only by callers from validated
 * hashes (escape_identifier is there for that).
 *
 * Failures follow docs/errors.md: a database error is nil, message, "EDB",
 * SQLSTATE (the fourth value is absent when the server gave none; a lost
 * connection gives "08006"); below, "nil, msg, EDB" stands for that.
 *
 * Lua API (ntt.core.pg):
 *   connect(conninfo_or_url) -> Conn | nil, "connect: <libpq message>", code
 *       code is an errno-like name guessed from libpq's text: "ECONNREFUSED",
 *       "ENOENT" (no socket / no such database), "EACCES" (authentication),
 *       "ETIMEDOUT", "EHOSTUNREACH", or "EDB" for anything else.
 *   bytea(s) -> a wrapper that exec sends as a binary bytea parameter.
 *   Conn:exec(sql, ...) -> result | nil, msg, EDB
 *       parameters: nil -> NULL, boolean, integer, float, string (no NUL
 *       byte; raises otherwise), bytea(s) (any bytes).  result is an array
 *       of rows (tables keyed by column name; NULL columns absent) with
 *       result.n = rows affected/returned and result.columns = names.
 *       Values: int2/4/8, oid -> integer; float4/8, numeric -> number;
 *       bool -> boolean; bytea -> raw string; anything else -> string.
 *       message is the primary message plus " (DETAIL: ...)" when present.  On
 *       SIGINT/SIGTERM a running statement gets 2 s, then is cancelled: nil, "interrupted", "EINTR".
 *   Conn:exec_script(sql) -> result of the last statement | nil, msg, EDB
 *   Conn:send(sql) -> true | nil, msg, EDB   starts a script (no
 *       parameters) and returns at once, so that the server works on it
 *       while the caller does something else (another connection's work);
 *       Conn:wait() -> what exec_script would have returned.  Until then
 *       the connection takes nothing else (raises).
 *   Conn:begin() / :commit() / :rollback() -> true | nil, msg, EDB
 *   Conn:copy_in(sql), Conn:copy_rows(sql, rows [, types]): COPY, in pgcopy.c
 *   Conn:notices() -> array of { severity=, message=, sqlstate= } (drains)
 *   Conn:on_notice(fn|nil): fn(message, severity, sqlstate) is called
 *       after the libpq call that received the notice returns.
 *   Conn:escape_identifier(s) / :escape_literal(s) -> string | nil, msg, "EINVAL"
 *   Conn:server_version() -> integer (e.g. 150010)
 *   Conn:status() -> "ok"|"bad"|"closed", "idle"|"active"|"intrans"|"inerror"|"unknown"
 *   Conn:url() -> the conninfo given to connect
 *   Conn:close() -> idempotent; any other method on a closed Conn raises.
 */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ntt.h"
#include "pg.h"
#include "pg_int.h"

#define NOTICE_MAX 1000

/* ---------- notices: queued from inside libpq, delivered afterwards ---------- */

static void pg_notice_rx(void *arg, const PGresult *res)
{
    PgConn *pc = arg;
    if (pc->nqueued >= NOTICE_MAX) { pc->dropped++; return; }
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    sev = sev ? sev : "NOTICE";
    msg = msg ? msg : PQresultErrorMessage(res);
    st = st ? st : "";
    size_t a = strlen(sev) + 1, b = strlen(msg) + 1, c = strlen(st) + 1;
    notice *n = malloc(sizeof *n + a + b + c);
    if (!n) { pc->dropped++; return; }
    n->next = NULL;
    n->sev = (char *)(n + 1);
    n->msg = n->sev + a;
    n->state = n->msg + b;
    memcpy(n->sev, sev, a);
    memcpy(n->msg, msg, b);
    memcpy(n->state, st, c);
    if (pc->tail) pc->tail->next = n; else pc->head = n;
    pc->tail = n;
    pc->nqueued++;
}

static notice *pg_notice_pop(PgConn *pc)
{
    notice *n = pc->head;
    if (n) {
        pc->head = n->next;
        if (!pc->head) pc->tail = NULL;
        pc->nqueued--;
    }
    return n;
}

static void pg_notice_clear(PgConn *pc)
{
    notice *n;
    while ((n = pg_notice_pop(pc))) free(n);
    pc->dropped = 0;
}

/* Calls the on_notice callback (user value of the Conn at idx) per notice. */
void pg_deliver(lua_State *L, int idx, PgConn *pc)
{
    if (!pc->has_callback || !pc->head)
        return;
    idx = lua_absindex(L, idx);
    notice *n;
    while ((n = pg_notice_pop(pc))) {
        lua_getiuservalue(L, idx, 1);
        lua_pushstring(L, n->msg);
        lua_pushstring(L, n->sev);
        lua_pushstring(L, n->state);
        free(n);
        if (ntt_call(L, 3, 0) != LUA_OK)
            lua_error(L);   /* the callback's error is the caller's, as if called directly */
    }
}

/* ---------- helpers ---------- */

/* Leaves a COPY state a statement entered by mistake; the connection stays usable. */
void pg_drain_copy(PGconn *c, ExecStatusType st)
{
    PGresult *res;
    if (st == PGRES_COPY_IN)
        PQputCopyEnd(c, "not a COPY FROM STDIN context");
    else if (st == PGRES_COPY_OUT) {
        char *buf;
        while (PQgetCopyData(c, &buf, 0) > 0) PQfreemem(buf);
    }
    while ((res = PQgetResult(c))) {
        ExecStatusType s2 = PQresultStatus(res);
        PQclear(res);
        if (s2 == PGRES_COPY_IN || s2 == PGRES_COPY_OUT || s2 == PGRES_COPY_BOTH) break;
    }
}

PgConn *pg_check(lua_State *L, int idx)
{
    PgConn *pc = luaL_checkudata(L, idx, CONN_MT);
    if (!pc->conn)
        luaL_error(L, "pg: connection is closed");
    if (pc->sent)
        luaL_error(L, "pg: the statement sent before has not been waited for");
    return pc;
}

PGconn *ntt_pg_checkconn(lua_State *L, int idx)
{
    return pg_check(L, idx)->conn;
}

void pg_copy_str(char *dst, size_t n, const char *src)
{
    if (!dst || !n) return;
    snprintf(dst, n, "%s", src ? src : "");
    size_t l = strlen(dst);
    while (l > 0 && (dst[l - 1] == '\n' || dst[l - 1] == ' '))
        dst[--l] = '\0';
}

/* Message and SQLSTATE of a failed result (res may be NULL). */
void pg_describe(PGconn *c, const PGresult *res, char *buf, size_t n, char state[6])
{
    const char *prim = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *det = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (prim && det)
        snprintf(buf, n, "%s (DETAIL: %s)", prim, det);
    else if (prim)
        snprintf(buf, n, "%s", prim);
    else
        pg_copy_str(buf, n, res && *PQresultErrorMessage(res) ? PQresultErrorMessage(res)
                                                              : PQerrorMessage(c));
    if (state) {
        if (!st && PQstatus(c) == CONNECTION_BAD) st = "08006";
        snprintf(state, 6, "%s", st ? st : "");
    }
}

static int pg_fail_res(lua_State *L, PGconn *c, const PGresult *res)
{
    char buf[2048], st[6];
    pg_describe(c, res, buf, sizeof buf, st);
    return ntt_pg_fail(L, buf, st);
}

int ntt_pg_fail(lua_State *L, const char *msg, const char *state)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    lua_pushliteral(L, "EDB");
    if (!state || !*state)
        return 3;
    lua_pushstring(L, state);
    return 4;
}

int pg_fail_msg(lua_State *L, const char *msg, const char *state)
{
    return ntt_pg_fail(L, msg, state);
}

static double pg_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * Waits for the results of the query just sent: the first error, else the
 * last result (NULL when sending failed).  An interrupt (SIGINT/SIGTERM)
 * gives a running statement PG_GRACE seconds to finish, then cancels it
 * (*cancelled = 1), so a stuck lock wait never makes ntt deaf to ^C.
 */
#define PG_GRACE 2.0
static PGresult *pg_collect(PGconn *c, int sent, int *cancelled)
{
    PGresult *keep = NULL, *res;
    double since = 0;
    *cancelled = 0;
    if (!sent) return NULL;
    for (;;) {
        while (PQisBusy(c)) {
            struct pollfd p = { .fd = PQsocket(c), .events = POLLIN };
            if (p.fd < 0) break;
            int r = poll(&p, 1, 100);
            if (r < 0 && errno != EINTR) break;
            if (ntt_interrupted && !*cancelled) {
                if (since == 0) since = pg_mono();
                else if (pg_mono() - since >= PG_GRACE) {
                    char e[256];
                    PGcancel *k = PQgetCancel(c);
                    if (k) { PQcancel(k, e, sizeof e); PQfreeCancel(k); }
                    *cancelled = 1;
                }
            }
            if (r > 0 && !PQconsumeInput(c)) break;
        }
        if (!(res = PQgetResult(c))) break;
        ExecStatusType st = PQresultStatus(res);
        if (keep && PQresultStatus(keep) == PGRES_FATAL_ERROR) PQclear(res);
        else { PQclear(keep); keep = res; }
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) break;
    }
    return keep;
}

/* Pushes the outcome of res (consumed) and delivers notices. */
static int pg_finish(lua_State *L, PgConn *pc, PGresult *res, int cancelled)
{
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    int n;
    if (cancelled && st == PGRES_FATAL_ERROR) {
        n = ntt_fail_interrupted(L);
    } else if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY) {
        n = pg_push_result(L, res);
    } else if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
        PQclear(res);
        res = NULL;
        n = pg_fail_msg(L, "exec: COPY must go through copy_in", "0A000");
        pg_drain_copy(pc->conn, st);
    } else {
        n = pg_fail_res(L, pc->conn, res);
    }
    PQclear(res);
    pg_deliver(L, 1, pc);
    return n;
}

/* ---------- module functions ---------- */

static const char *pg_guess_code(const char *msg)
{
    static const struct { const char *needle, *code; } map[] = {
        { "Connection refused", "ECONNREFUSED" },
        { "No such file or directory", "ENOENT" },
        { "does not exist", "ENOENT" },
        { "authentication failed", "EACCES" },
        { "password", "EACCES" },
        { "not permitted", "EACCES" },
        { "timeout", "ETIMEDOUT" },
        { "timed out", "ETIMEDOUT" },
        { "could not translate host name", "EHOSTUNREACH" },
        { "No route to host", "EHOSTUNREACH" },
        { "Permission denied", "EACCES" },
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strstr(msg, map[i].needle)) return map[i].code;
    return "EDB";
}

static int pg_connect(lua_State *L)
{
    const char *info = luaL_checkstring(L, 1);
    PgConn *pc = ntt_newudata(L, sizeof *pc, CONN_MT);
    pc->url = strdup(info);
    if (!pc->url)
        return luaL_error(L, "pg: out of memory");
    /* Over TCP a database host that vanishes is noticed in about a minute, not after
     * two hours of silence; the URL's own values come last and win. */
    static const char *const keys[] = { "keepalives_idle", "keepalives_interval", "keepalives_count",
                                        "tcp_user_timeout", "dbname", NULL };
    const char *vals[] = { "30", "10", "3", "30000", info, NULL };
    pc->conn = PQconnectdbParams(keys, vals, 1);
    if (!pc->conn)
        return luaL_error(L, "pg: out of memory");
    if (PQstatus(pc->conn) != CONNECTION_OK) {
        char buf[1024];
        pg_copy_str(buf, sizeof buf, PQerrorMessage(pc->conn));
        char *w = buf;                   /* one line: libpq puts hints on lines of their own */
        for (char *r = buf; *r; r++) {
            char ch = (*r == '\n' || *r == '\t') ? ' ' : *r;
            if (ch != ' ' || (w > buf && w[-1] != ' ')) *w++ = ch;
        }
        *w = '\0';
        PQfinish(pc->conn);
        pc->conn = NULL;
        lua_pushnil(L);
        lua_pushfstring(L, "connect: %s", buf);
        lua_pushstring(L, pg_guess_code(buf));
        return 3;
    }
    PQsetNoticeReceiver(pc->conn, pg_notice_rx, pc);
    return 1;
}

/* ---------- Conn methods ---------- */

static int conn_exec(lua_State *L)
{
    PgConn *pc = pg_check(L, 1);
    const char *sql = luaL_checkstring(L, 2);
    int np = lua_gettop(L) - 2;
    if (np > 65535)
        return luaL_error(L, "pg: too many parameters");
    const char **vals = NULL;
    int *lens = NULL, *fmts = NULL;
    Oid *types = NULL;
    if (np > 0) {
        /* Lua-owned scratch memory: freed by the GC even if we raise. */
        char *blk = lua_newuserdatauv(L, (size_t)np * (sizeof *vals + 2 * sizeof(int) + sizeof(Oid)), 0);
        vals = (const char **)blk;
        lens = (int *)(blk + np * sizeof *vals);
        fmts = lens + np;
        types = (Oid *)(fmts + np);
    }
    for (int i = 0; i < np; i++) {
        int idx = 3 + i;
        size_t len = 0;
        const char *b;
        lens[i] = 0; fmts[i] = 0; types[i] = 0;
        switch (lua_type(L, idx)) {
        case LUA_TNIL:
            vals[i] = NULL;
            break;
        case LUA_TBOOLEAN:
            vals[i] = lua_toboolean(L, idx) ? "true" : "false";
            types[i] = 16;
            break;
        case LUA_TNUMBER:
            if (lua_isinteger(L, idx)) {
                vals[i] = lua_pushfstring(L, "%I", (LUAI_UACINT)lua_tointeger(L, idx));
            } else {
                double d = lua_tonumber(L, idx);
                char nb[64];
                if (isnan(d)) snprintf(nb, sizeof nb, "NaN");
                else if (isinf(d)) snprintf(nb, sizeof nb, d > 0 ? "Infinity" : "-Infinity");
                else snprintf(nb, sizeof nb, "%.17g", d);
                vals[i] = lua_pushstring(L, nb);
            }
            lua_replace(L, idx);   /* anchor the text where the number was */
            break;
        case LUA_TSTRING:
            vals[i] = pg_text_param(L, idx, &len);   /* any bytes: pgvalue.c */
            if (memchr(vals[i], '\0', len))
                return luaL_error(L, "pg: parameter $%d contains a NUL byte (use pg.bytea)", i + 1);
            break;
        default:
            if ((b = pg_tobytea(L, idx, &len))) {
                if (len > 0x7fffffff)
                    return luaL_error(L, "pg: parameter $%d is too large", i + 1);
                vals[i] = b; lens[i] = (int)len; fmts[i] = 1; types[i] = 17;
                break;
            }
            return luaL_error(L, "pg: parameter $%d: cannot send a %s", i + 1, luaL_typename(L, idx));
        }
    }
    int cancelled;
    PGresult *res = pg_collect(pc->conn, PQsendQueryParams(pc->conn, sql, np, types, vals, lens, fmts, 0),
                               &cancelled);
    return pg_finish(L, pc, res, cancelled);
}

static int conn_send(lua_State *L)
{
    PgConn *pc = pg_check(L, 1);
    const char *sql = luaL_checkstring(L, 2);
    if (!PQsendQuery(pc->conn, sql))
        return pg_fail_res(L, pc->conn, NULL);
    pc->sent = 1;
    lua_pushboolean(L, 1);
    return 1;
}

static int conn_wait(lua_State *L)
{
    PgConn *pc = luaL_checkudata(L, 1, CONN_MT);
    if (!pc->conn)
        return luaL_error(L, "pg: connection is closed");
    if (!pc->sent)
        return luaL_error(L, "pg: wait: nothing was sent");
    pc->sent = 0;
    int cancelled;
    PGresult *res = pg_collect(pc->conn, 1, &cancelled);
    return pg_finish(L, pc, res, cancelled);
}

static int conn_exec_script(lua_State *L)
{
    PgConn *pc = pg_check(L, 1);
    const char *sql = luaL_checkstring(L, 2);
    int cancelled;
    PGresult *res = pg_collect(pc->conn, PQsendQuery(pc->conn, sql), &cancelled);
    return pg_finish(L, pc, res, cancelled);
}

static int pg_simple(lua_State *L, const char *sql)
{
    PgConn *pc = pg_check(L, 1);
    PGresult *res = PQexec(pc->conn, sql);
    int ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
    int n = 1;
    if (ok && strcmp(sql, "COMMIT") == 0 && strcmp(PQcmdStatus(res), "ROLLBACK") == 0)
        /* COMMIT of a failed transaction "succeeds" as a ROLLBACK */
        n = pg_fail_msg(L, "commit: the transaction was rolled back (a statement in it failed)", "25P02");
    else if (ok) lua_pushboolean(L, 1);
    else n = pg_fail_res(L, pc->conn, res);
    PQclear(res);
    pg_deliver(L, 1, pc);
    return n;
}

static int conn_begin(lua_State *L) { return pg_simple(L, "BEGIN"); }
static int conn_commit(lua_State *L) { return pg_simple(L, "COMMIT"); }
static int conn_rollback(lua_State *L) { return pg_simple(L, "ROLLBACK"); }

static int conn_notices(lua_State *L)
{
    PgConn *pc = luaL_checkudata(L, 1, CONN_MT);
    lua_createtable(L, pc->nqueued, 1);
    int i = 0;
    notice *n;
    while ((n = pg_notice_pop(pc))) {
        lua_createtable(L, 0, 3);
        lua_pushstring(L, n->sev); lua_setfield(L, -2, "severity");
        lua_pushstring(L, n->msg); lua_setfield(L, -2, "message");
        lua_pushstring(L, n->state); lua_setfield(L, -2, "sqlstate");
        free(n);
        lua_rawseti(L, -2, ++i);
    }
    if (pc->dropped) {
        lua_pushinteger(L, pc->dropped);
        lua_setfield(L, -2, "dropped");
        pc->dropped = 0;
    }
    return 1;
}

static int conn_on_notice(lua_State *L)
{
    PgConn *pc = luaL_checkudata(L, 1, CONN_MT);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    pc->has_callback = !lua_isnil(L, 2);
    lua_setiuservalue(L, 1, 1);
    return 0;
}

static int conn_escape(lua_State *L, int ident)
{
    PgConn *pc = pg_check(L, 1);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    char *e = ident ? PQescapeIdentifier(pc->conn, s, len) : PQescapeLiteral(pc->conn, s, len);
    if (!e) {
        char buf[512];
        pg_copy_str(buf, sizeof buf, PQerrorMessage(pc->conn));
        lua_pushnil(L);
        lua_pushstring(L, buf);
        lua_pushliteral(L, "EINVAL");
        return 3;
    }
    lua_pushstring(L, e);
    PQfreemem(e);
    return 1;
}

static int conn_escape_identifier(lua_State *L) { return conn_escape(L, 1); }
static int conn_escape_literal(lua_State *L) { return conn_escape(L, 0); }

static int conn_server_version(lua_State *L)
{
    lua_pushinteger(L, PQserverVersion(pg_check(L, 1)->conn));
    return 1;
}

static int conn_status(lua_State *L)
{
    PgConn *pc = luaL_checkudata(L, 1, CONN_MT);
    if (!pc->conn) { lua_pushstring(L, "closed"); return 1; }
    lua_pushstring(L, PQstatus(pc->conn) == CONNECTION_OK ? "ok" : "bad");
    static const char *const tx[] = { "idle", "active", "intrans", "inerror", "unknown" };
    PGTransactionStatusType t = PQtransactionStatus(pc->conn);
    lua_pushstring(L, (unsigned)t < 5 ? tx[t] : "unknown");
    return 2;
}

static int conn_url(lua_State *L)
{
    PgConn *pc = luaL_checkudata(L, 1, CONN_MT);
    lua_pushstring(L, pc->url ? pc->url : "");
    return 1;
}

static int conn_close(lua_State *L)
{
    PgConn *pc = luaL_checkudata(L, 1, CONN_MT);
    if (pc->conn) { PQfinish(pc->conn); pc->conn = NULL; }
    pg_notice_clear(pc);
    free(pc->url);
    pc->url = NULL;
    return 0;
}

static int conn_tostring(lua_State *L)
{
    PgConn *pc = luaL_checkudata(L, 1, CONN_MT);
    if (!pc->conn) { lua_pushstring(L, "ntt.PgConn (closed)"); return 1; }
    const char *db = PQdb(pc->conn), *host = PQhost(pc->conn), *user = PQuser(pc->conn);
    lua_pushfstring(L, "ntt.PgConn (%s@%s/%s)", user ? user : "?", host ? host : "?", db ? db : "?");
    return 1;
}

/* ---------- registration ---------- */

static const luaL_Reg conn_methods[] = {
    { "begin", conn_begin },
    { "close", conn_close },
    { "commit", conn_commit },
    { "encrypt_password", conn_encrypt_password },
    { "copy_in", conn_copy_in },
    { "copy_rows", conn_copy_rows },
    { "escape_identifier", conn_escape_identifier },
    { "escape_literal", conn_escape_literal },
    { "exec", conn_exec },
    { "exec_script", conn_exec_script },
    { "notices", conn_notices },
    { "on_notice", conn_on_notice },
    { "rollback", conn_rollback },
    { "send", conn_send },
    { "server_version", conn_server_version },
    { "status", conn_status },
    { "url", conn_url },
    { "wait", conn_wait },
    { NULL, NULL }
};

static const luaL_Reg conn_meta[] = {
    { "__close", conn_close },
    { "__gc", conn_close },
    { "__tostring", conn_tostring },
    { NULL, NULL }
};

static const luaL_Reg bytea_meta[] = {
    { "__tostring", bytea_tostring },
    { NULL, NULL }
};

static const luaL_Reg pg_funcs[] = {
    { "bytea", pg_bytea },
    { "connect", pg_connect },
    { NULL, NULL }
};

int luaopen_ntt_core_pg(lua_State *L)
{
    ntt_newclass(L, CONN_MT, conn_methods, conn_meta);
    ntt_pgcopy_open(L);
    luaL_newmetatable(L, BYTEA_MT);
    luaL_setfuncs(L, bytea_meta, 0);
    lua_pop(L, 1);
    luaL_newlib(L, pg_funcs);
    return 1;
}
