/*
 * init.c - state set-up (the linit.c recipe) and ntt.core.embed.
 *
 * Opens the standard libraries, preloads every ntt.core.* opener listed in
 * the generated module table, and installs a searcher that finds ntt's own
 * Lua modules inside the binary, or under $NTT_LUA_PATH (a source tree:
 * $NTT_LUA_PATH/lua/ntt/x.lua) when that is set, so development needs no
 * rebuild.  Chunk names are repository paths ("@lua/ntt/policy.lua").
 *
 * Lua API (ntt.core.embed):
 *   get(name)  -> source, chunkname | nil, "name: not found", "ENOENT"
 *               name is a repository path such as "policies/default.lua"
 *   list()     -> array of embedded repository paths
 *   root       -> $NTT_LUA_PATH or nil
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ntt.h"
#include "lualib.h"

static const struct ntt_embedded *embed_find(const char *name)
{
    for (size_t i = 0; i < ntt_embedded_count; i++)
        if (strcmp(ntt_embedded[i].name, name) == 0)
            return &ntt_embedded[i];
    return NULL;
}

/* Pushes source and chunk name of a repository path; 0 when absent. */
static int embed_push(lua_State *L, const char *name)
{
    const char *root = getenv("NTT_LUA_PATH");
    if (root && *root) {
        luaL_Buffer b;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", root, name);
        FILE *f = fopen(path, "rb");
        if (!f)
            return 0;
        luaL_buffinit(L, &b);
        size_t n;
        char buf[8192];
        while ((n = fread(buf, 1, sizeof buf, f)) > 0)
            luaL_addlstring(&b, buf, n);
        fclose(f);
        luaL_pushresult(&b);
        lua_pushfstring(L, "@%s", path);
        return 1;
    }
    const struct ntt_embedded *e = embed_find(name);
    if (!e)
        return 0;
    lua_pushlstring(L, (const char *)e->data, e->len);
    lua_pushfstring(L, "@%s", e->name);
    return 1;
}

static int embed_get(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    if (!embed_push(L, name))
        return ntt_fail(L, ENOENT, name);
    return 2;
}

static int embed_list(lua_State *L)
{
    lua_createtable(L, (int)ntt_embedded_count, 0);
    for (size_t i = 0; i < ntt_embedded_count; i++) {
        lua_pushstring(L, ntt_embedded[i].name);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* package.searchers entry: "ntt.x.y" -> lua/ntt/x/y.lua or .../y/init.lua */
static int embed_searcher(lua_State *L)
{
    const char *mod = luaL_checkstring(L, 1);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "lua/");
    for (const char *p = mod; *p; p++)
        luaL_addchar(&b, *p == '.' ? '/' : *p);
    luaL_pushresult(&b);
    const char *base = lua_tostring(L, -1);
    static const char *suffixes[] = { ".lua", "/init.lua" };
    for (int i = 0; i < 2; i++) {
        lua_pushfstring(L, "%s%s", base, suffixes[i]);
        const char *name = lua_tostring(L, -1);
        if (embed_push(L, name)) {
            const char *src = lua_tostring(L, -2);
            size_t len = lua_rawlen(L, -2);
            const char *chunk = lua_tostring(L, -1);
            if (luaL_loadbufferx(L, src, len, chunk, "t") != LUA_OK)
                return lua_error(L);
            lua_pushstring(L, chunk + 1);
            return 2;
        }
        lua_pop(L, 1);
    }
    lua_pushfstring(L, "no ntt module '%s' (embedded or $NTT_LUA_PATH)", base);
    return 1;
}

static const luaL_Reg embed_funcs[] = {
    { "get", embed_get },
    { "list", embed_list },
    { NULL, NULL }
};

int luaopen_ntt_core_embed(lua_State *L)
{
    luaL_newlib(L, embed_funcs);
    const char *root = getenv("NTT_LUA_PATH");
    if (root && *root) {
        lua_pushstring(L, root);
        lua_setfield(L, -2, "root");
    }
    return 1;
}

void ntt_openlibs(lua_State *L)
{
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    for (const struct ntt_module *m = ntt_modules; m->name; m++) {
        lua_pushcfunction(L, m->open);
        lua_setfield(L, -2, m->name);
    }
    lua_pop(L, 1);
    /* Our searcher goes right after preload, before the path searchers. */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchers");
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = n; i >= 2; i--) {
        lua_rawgeti(L, -1, i);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushcfunction(L, embed_searcher);
    lua_rawseti(L, -2, 2);
    lua_pop(L, 2);
}
