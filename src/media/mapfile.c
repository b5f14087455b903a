/*
 * mapfile.c - ntt.core.mapfile: GNU ddrescue mapfiles parsed by the one
 * parser the mount helper uses too (mapfile_parse.c), so ntt and the
 * helper accept and reject exactly the same maps.
 *
 * Lua API (ntt.core.mapfile):
 *   parse(text) -> { current_pos=, current_status=, pass= (nil with a
 *                    two-field status line), size=, rescued_bytes=,
 *                    blocks = { {pos=, size=, status=[, gap=true]}, ... } }
 *                | nil, "line N: what is wrong", "EINVAL"
 *   Blocks run contiguously from 0 to size; adjacent blocks of one status
 *   are merged; gap marks the non-tried area before a first block that
 *   does not start at 0.  A text that is not a string raises.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include "ntt.h"
#include "mapfile_parse.h"

#define PARSED_MT "ntt.core.mapfile.parsed"

/* The parse result lives in a userdata so that it is freed even when
 * building the Lua table raises (out of memory). */
static int parsed_gc(lua_State *L)
{
    ntt_map_free(luaL_checkudata(L, 1, PARSED_MT));
    return 0;
}

static int mapfile_parse(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING) return luaL_typeerror(L, 1, "string");
    size_t len;
    const char *text = lua_tolstring(L, 1, &len);
    struct ntt_map *m = lua_newuserdatauv(L, sizeof *m, 0);
    memset(m, 0, sizeof *m);
    luaL_setmetatable(L, PARSED_MT);
    char err[256];
    size_t line;
    if (ntt_map_parse(text, len, m, &line, err, sizeof err) < 0) {
        if (line == 0) return ntt_fail(L, ENOMEM, "mapfile.parse");
        lua_pushnil(L);
        lua_pushstring(L, err);
        lua_pushliteral(L, "EINVAL");
        return 3;
    }
    lua_createtable(L, 0, 6);
    ntt_setint(L, "current_pos", (lua_Integer)m->current_pos);
    lua_pushlstring(L, &m->current_status, 1);
    lua_setfield(L, -2, "current_status");
    if (m->pass) ntt_setint(L, "pass", m->pass);
    ntt_setint(L, "size", (lua_Integer)m->size);
    ntt_setint(L, "rescued_bytes", (lua_Integer)m->rescued);
    lua_createtable(L, m->n > (size_t)INT32_MAX ? 0 : (int)m->n, 0);
    for (size_t i = 0; i < m->n; i++) {
        const struct ntt_mapblock *b = &m->blocks[i];
        lua_createtable(L, 0, b->gap ? 4 : 3);
        ntt_setint(L, "pos", (lua_Integer)b->pos);
        ntt_setint(L, "size", (lua_Integer)b->size);
        lua_pushlstring(L, &b->status, 1);
        lua_setfield(L, -2, "status");
        if (b->gap) ntt_setbool(L, "gap", 1);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "blocks");
    ntt_map_free(m);
    return 1;
}

static const luaL_Reg mapfile_funcs[] = {
    { "parse", mapfile_parse },
    { NULL, NULL }
};

int luaopen_ntt_core_mapfile(lua_State *L)
{
    luaL_newmetatable(L, PARSED_MT);
    lua_pushcfunction(L, parsed_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newlib(L, mapfile_funcs);
    return 1;
}
