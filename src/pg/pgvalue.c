/*
 * pgvalue.c - values of ntt.core.pg: result rows as Lua tables, the
 * bytea wrapper (pg.bytea(s)) that exec and copy_rows send as raw bytes,
 * and conn:encrypt_password(password, role): the SCRAM verifier of a
 * password, made here so that ALTER ROLE never carries the password.
 *
 * Result values: int2/4/8, oid -> integer; float4/8, numeric -> number
 * (NaN and +-Infinity too); bool -> boolean; bytea -> raw string;
 * anything else -> the server's text.
 *
 * Text that is not UTF-8: the server refuses it, yet a path (an image's
 * name, a folder given as a medium) may be any bytes -- a Latin-1 name from
 * an old disk.  A string parameter that is not valid UTF-8 (or that begins
 * with the mark below) is sent as the mark U+FFFF followed by the string,
 * each byte outside a valid sequence written \xHH and each backslash \\;
 * a text result that begins with the mark is turned back into those bytes.
 * So any bytes go in and come out exactly; valid UTF-8, all other text, is
 * sent and read as it is.  (U+FFFF is a noncharacter: no name holds it.)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ntt.h"
#include "pg_int.h"

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

static void pg_push_bytea(lua_State *L, const char *v, size_t len)
{
    if (len >= 2 && v[0] == '\\' && v[1] == 'x') {
        luaL_Buffer b;
        size_t n = (len - 2) / 2;
        char *p = luaL_buffinitsize(L, &b, n);
        for (size_t i = 0; i < n; i++) {
            int hi = hexval((unsigned char)v[2 + 2 * i]), lo = hexval((unsigned char)v[3 + 2 * i]);
            p[i] = (char)((hi < 0 ? 0 : hi) << 4 | (lo < 0 ? 0 : lo));
        }
        luaL_pushresultsize(&b, n);
        return;
    }
    size_t n = 0;   /* the old "escape" output format */
    unsigned char *raw = PQunescapeBytea((const unsigned char *)v, &n);
    if (!raw) { lua_pushlstring(L, v, len); return; }
    lua_pushlstring(L, (const char *)raw, n);
    PQfreemem(raw);
}

#define MARK "\xef\xbf\xbf"

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlong form, no
 * surrogate, nothing above U+10FFFF, as the server checks), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
    if (!len || len > 4 || c > 0xf4 || n < len) return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if (c == 0xe0 && s[1] < 0xa0) return 0;        /* overlong */
    if (c == 0xed && s[1] > 0x9f) return 0;        /* surrogate */
    if (c == 0xf0 && s[1] < 0x90) return 0;        /* overlong */
    if (c == 0xf4 && s[1] > 0x8f) return 0;        /* above U+10FFFF */
    return len;
}

const char *pg_text_param(lua_State *L, int idx, size_t *len)
{
    const char *v = lua_tolstring(L, idx, len);
    const unsigned char *u = (const unsigned char *)v;
    size_t n = *len, i = 0, k;
    int plain = !(n >= 3 && memcmp(v, MARK, 3) == 0);
    while (plain && i < n) {
        if (!(k = utf8_seq(u + i, n - i))) plain = 0;
        i += k;
    }
    if (plain) return v;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, MARK, 3);
    for (i = 0; i < n;) {
        if (u[i] == '\\') { luaL_addlstring(&b, "\\\\", 2); i++; continue; }
        if ((k = utf8_seq(u + i, n - i))) { luaL_addlstring(&b, v + i, k); i += k; continue; }
        char hx[5];
        snprintf(hx, sizeof hx, "\\x%02x", u[i++]);
        luaL_addlstring(&b, hx, 4);
    }
    luaL_pushresult(&b);
    lua_replace(L, idx);                /* anchored where the string was */
    return lua_tolstring(L, idx, len);
}

/* A text value: as it is, or the bytes its escaped form stands for. */
static void pg_push_text(lua_State *L, const char *v, size_t len)
{
    if (!(len >= 3 && memcmp(v, MARK, 3) == 0)) {
        lua_pushlstring(L, v, len);
        return;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 3; i < len; i++) {
        int hi, lo;
        if (v[i] == '\\' && i + 1 < len && v[i + 1] == '\\') {
            luaL_addchar(&b, '\\');
            i++;
        } else if (v[i] == '\\' && i + 3 < len && v[i + 1] == 'x' &&
                   (hi = hexval((unsigned char)v[i + 2])) >= 0 && (lo = hexval((unsigned char)v[i + 3])) >= 0) {
            luaL_addchar(&b, (char)(hi << 4 | lo));
            i += 3;
        } else {
            luaL_addchar(&b, v[i]);
        }
    }
    luaL_pushresult(&b);
}

static void pg_push_value(lua_State *L, const PGresult *res, int r, int f)
{
    const char *v = PQgetvalue(res, r, f);
    size_t len = (size_t)PQgetlength(res, r, f);
    switch (PQftype(res, f)) {
    case 16:                                        /* bool */
        lua_pushboolean(L, v[0] == 't');
        return;
    case 17:                                        /* bytea */
        pg_push_bytea(L, v, len);
        return;
    case 20: case 21: case 23: case 26:             /* int8 int2 int4 oid */
    case 700: case 701: case 1700:                  /* float4 float8 numeric */
        if (lua_stringtonumber(L, v) != 0)
            return;
        if (strcmp(v, "NaN") == 0) lua_pushnumber(L, NAN);
        else if (strcmp(v, "Infinity") == 0) lua_pushnumber(L, HUGE_VAL);
        else if (strcmp(v, "-Infinity") == 0) lua_pushnumber(L, -HUGE_VAL);
        else lua_pushlstring(L, v, len);
        return;
    default:
        pg_push_text(L, v, len);
    }
}

/* Pushes the Lua result table of a successful result. */
int pg_push_result(lua_State *L, const PGresult *res)
{
    int nr = PQntuples(res), nf = PQnfields(res);
    lua_createtable(L, nr, 2);
    lua_createtable(L, nf, 0);
    for (int f = 0; f < nf; f++) {
        lua_pushstring(L, PQfname(res, f));
        lua_rawseti(L, -2, f + 1);
    }
    lua_setfield(L, -2, "columns");
    for (int r = 0; r < nr; r++) {
        lua_createtable(L, 0, nf);
        for (int f = 0; f < nf; f++) {
            if (PQgetisnull(res, r, f)) continue;
            pg_push_value(L, res, r, f);
            lua_setfield(L, -2, PQfname(res, f));
        }
        lua_rawseti(L, -2, r + 1);
    }
    const char *ct = PQcmdTuples((PGresult *)res);
    lua_pushinteger(L, *ct ? strtoll(ct, NULL, 10) : nr);
    lua_setfield(L, -2, "n");
    return 1;
}

int pg_bytea(lua_State *L)
{
    luaL_checkstring(L, 1);
    lua_newuserdatauv(L, 0, 1);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, BYTEA_MT);
    return 1;
}

int bytea_tostring(lua_State *L)
{
    lua_getiuservalue(L, 1, 1);
    lua_pushfstring(L, "ntt.PgBytea (%d bytes)", (int)lua_rawlen(L, -1));
    return 1;
}

/* The bytes of a bytea wrapper at idx, or NULL when idx is not one. */
const char *pg_tobytea(lua_State *L, int idx, size_t *len)
{
    if (!luaL_testudata(L, idx, BYTEA_MT))
        return NULL;
    lua_getiuservalue(L, idx, 1);
    const char *s = lua_tolstring(L, -1, len);
    lua_pop(L, 1);   /* still anchored by the wrapper */
    return s;
}

int conn_encrypt_password(lua_State *L)
{
    PgConn *pc = pg_check(L, 1);
    const char *pw = luaL_checkstring(L, 2), *role = luaL_checkstring(L, 3);
    char *v = PQencryptPasswordConn(pc->conn, pw, role, "scram-sha-256");
    if (!v) return pg_fail_msg(L, PQerrorMessage(pc->conn), NULL);
    lua_pushstring(L, v);
    PQfreemem(v);
    return 1;
}
