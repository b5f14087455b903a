/*
 * ignore.c - the loader's ignore patterns (part of ntt.core.load, no Lua
 * module of its own): gathered from load.walk's opts.ignore, matched per
 * record in the loader's thread without calling Lua.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ntt.h"
#include "ignore.h"

void ntt_ignore_free(struct ignore *ig)
{
    for (int i = 0; i < ig->nown; i++)
        regfree(&ig->own[i]);
    free(ig->own);
    free(ig->re);
    free(ig->src);
    memset(ig, 0, sizeof *ig);
}

/* Gather opts.ignore; on a bad pattern the message is in errbuf, -1. */
int ntt_ignore_compile(lua_State *L, int t, struct ignore *ig, char *errbuf, size_t errlen)
{
    memset(ig, 0, sizeof *ig);
    lua_getfield(L, t, "ignore");
    if (lua_isnil(L, -1)) { lua_pop(L, 1); return 0; }
    luaL_checktype(L, -1, LUA_TTABLE);
    int n = (int)lua_rawlen(L, -1);
    ig->re = calloc((size_t)n + 1, sizeof *ig->re);
    ig->src = calloc((size_t)n + 1, sizeof *ig->src);
    ig->own = calloc((size_t)n + 1, sizeof *ig->own);
    if (!ig->re || !ig->src || !ig->own) {
        ntt_ignore_free(ig); snprintf(errbuf, errlen, "out of memory"); lua_pop(L, 1); return -1;
    }
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        const struct ntt_regex *rx = ntt_toregex(L, -1);
        if (rx) {
            ig->re[ig->n] = &rx->re;
            ig->src[ig->n++] = rx->src;
            lua_pop(L, 1);
            continue;
        }
        const char *pat = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        if (!pat) {
            lua_pop(L, 2); ntt_ignore_free(ig);
            snprintf(errbuf, errlen, "ignore[%d] is neither a pattern nor a Regex", i);
            return -1;
        }
        int rc = regcomp(&ig->own[ig->nown], pat, NTT_IGNORE_REGFLAGS);
        if (rc != 0) {
            char m[256];
            regerror(rc, &ig->own[ig->nown], m, sizeof m);
            snprintf(errbuf, errlen, "ignore pattern '%s': %s", pat, m);
            lua_pop(L, 2);
            ntt_ignore_free(ig);
            return -1;
        }
        ig->re[ig->n] = &ig->own[ig->nown++];
        ig->src[ig->n++] = pat;     /* a string of opts, alive for the call */
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return 0;
}

/* Index of the first pattern matching path, or -1. */
int ntt_ignore_match(const struct ignore *ig, const char *path, size_t len, char **tmp, size_t *tmpcap)
{
    if (ig->n == 0)
        return -1;
    if (len + 1 > *tmpcap) {
        size_t cap = (len + 1) * 2;
        char *p = realloc(*tmp, cap);
        if (!p) return -1;
        *tmp = p; *tmpcap = cap;
    }
    memcpy(*tmp, path, len);
    (*tmp)[len] = 0;
    for (int i = 0; i < ig->n; i++)
        if (regexec(ig->re[i], *tmp, 0, NULL, 0) == 0)
            return i;
    return -1;
}
