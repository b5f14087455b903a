/*
 * main.c - the ntt host: a Lua 5.4 interpreter with ntt's runtime built in.
 *
 *   ntt SUBCOMMAND [args]      run, repl, db, status, hash, ... (lua/ntt/cli.lua)
 *   ntt [options] [script [args]]
 *
 * The second form follows lua.c so that tools written for `lua` run inside
 * ntt against the real primitives (busted: `ntt /usr/bin/busted spec/`):
 * -e stat, -l mod, -i, -v, -W, --, and "-" for stdin; the script sees a
 * global `arg` with the script name at 0 and interpreter words below it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "ntt.h"
#include "lualib.h"

static const char *progname = "ntt";

static void usage(void)
{
    fprintf(stderr,
            "usage: %s SUBCOMMAND [args]   (see '%s --help')\n"
            "       %s [options] [script [args]]\n"
            "  -e stat   execute string 'stat'\n"
            "  -i        enter the interactive loop after running the script\n"
            "  -l mod    require library 'mod' into global 'mod'\n"
            "  -v        show version information\n"
            "  -W        turn warnings on\n"
            "  --        stop handling options\n"
            "  -         execute stdin and stop handling options\n",
            progname, progname, progname);
}

/* A first word that names a subcommand rather than a script file. */
static int is_subcommand(const char *w)
{
    struct stat st;
    if (!*w || *w == '-' || strchr(w, '/') || strchr(w, '.'))
        return 0;
    for (const char *p = w; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
            return 0;
    return stat(w, &st) != 0;
}

/* arg table as lua.c builds it: script at index 0. */
static void create_arg(lua_State *L, char **argv, int argc, int script)
{
    lua_createtable(L, argc - script - 1, script + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

static int run_chunk(lua_State *L, int status)
{
    if (status == LUA_OK)
        status = ntt_call(L, 0, 0);
    ntt_report(L, status);
    return status;
}

static int run_library(lua_State *L, const char *spec)
{
    const char *eq = strchr(spec, '=');
    lua_getglobal(L, "require");
    if (eq) {
        lua_pushstring(L, eq + 1);
    } else {
        lua_pushstring(L, spec);
    }
    int status = ntt_call(L, 1, 1);
    if (status == LUA_OK) {
        if (eq)
            lua_pushlstring(L, spec, (size_t)(eq - spec));
        else
            lua_pushstring(L, spec);
        lua_insert(L, -2);
        lua_setglobal(L, lua_tostring(L, -2));
        lua_pop(L, 1);
    }
    ntt_report(L, status);
    return status;
}

static int run_script(lua_State *L, char **argv, int argc, int script)
{
    const char *fname = argv[script];
    if (strcmp(fname, "-") == 0 && strcmp(argv[script - 1], "--") != 0)
        fname = NULL;
    int status = luaL_loadfile(L, fname);
    if (status != LUA_OK) {
        ntt_report(L, status);
        return status;
    }
    int n = argc - script - 1;
    luaL_checkstack(L, n + 3, "too many arguments to script");
    for (int i = script + 1; i < argc; i++)
        lua_pushstring(L, argv[i]);
    status = ntt_call(L, n, 0);
    ntt_report(L, status);
    return status;
}

/* `ntt SUBCOMMAND ...`: hand everything to lua/ntt/cli.lua. */
static int run_subcommand(lua_State *L, char **argv, int argc)
{
    create_arg(L, argv, argc, 0);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "ntt.cli");
    int status = ntt_call(L, 1, 1);
    if (status == LUA_OK) {
        lua_getfield(L, -1, "main");
        lua_createtable(L, argc - 1, 0);
        for (int i = 1; i < argc; i++) {
            lua_pushstring(L, argv[i]);
            lua_rawseti(L, -2, i);
        }
        status = ntt_call(L, 1, 1);
    }
    /* ^C is 130, SIGTERM 143 (128 + the signal, docs/operations.md),
     * whether the command returned or raised. */
    if (status != LUA_OK) {
        ntt_report(L, status);
        return ntt_interrupted ? 128 + ntt_interrupted : 2;
    }
    int code = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : 0;
    return ntt_interrupted && code != 0 ? 128 + ntt_interrupted : code;
}

int main(int argc, char **argv)
{
    if (argv[0] && argv[0][0])
        progname = argv[0];
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "%s: cannot create Lua state: not enough memory\n", progname);
        return 2;
    }
    ntt_openlibs(L);
    ntt_signals_init(L);

    int code = 0;
    if (argc >= 2 && (is_subcommand(argv[1]) || strcmp(argv[1], "--help") == 0
                      || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--version") == 0)) {
        code = run_subcommand(L, argv, argc);
        lua_close(L);
        return code;
    }

    int interactive = 0, show_version = 0, script = 0, i;
    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        const char *o = argv[i];
        if (strcmp(o, "--") == 0) { i++; break; }
        if (strcmp(o, "-") == 0) break;
        if (strcmp(o, "-i") == 0) { interactive = show_version = 1; continue; }
        if (strcmp(o, "-v") == 0) { show_version = 1; continue; }
        if (strcmp(o, "-W") == 0) { lua_warning(L, "@on", 0); continue; }
        if ((strcmp(o, "-e") == 0 || strcmp(o, "-l") == 0) && i + 1 < argc) { i++; continue; }
        if ((strncmp(o, "-e", 2) == 0 || strncmp(o, "-l", 2) == 0) && o[2]) continue;
        fprintf(stderr, "%s: unrecognized option '%s'\n", progname, o);
        usage();
        lua_close(L);
        return 1;
    }
    if (i < argc)
        script = i;
    create_arg(L, argv, argc, script);
    if (show_version)
        printf("ntt %s (%s)\n", NTT_VERSION, LUA_RELEASE);

    /* Options that run code, in order. */
    for (int j = 1; j < (script ? script : argc); j++) {
        const char *o = argv[j];
        int st = LUA_OK;
        if (o[0] != '-' || strcmp(o, "--") == 0 || strcmp(o, "-") == 0)
            break;
        if (o[1] == 'e' || o[1] == 'l') {
            const char *v = o[2] ? o + 2 : argv[++j];
            if (o[1] == 'e')
                st = run_chunk(L, luaL_loadbuffer(L, v, strlen(v), "=(command line)"));
            else
                st = run_library(L, v);
            if (st != LUA_OK) {
                lua_close(L);
                return 1;
            }
        }
    }

    if (script) {
        if (run_script(L, argv, argc, script) != LUA_OK)
            code = 1;
    } else if (!interactive && argc > 1) {
        /* Only -e/-l/-v given: done. */
    } else if (!interactive && isatty(0)) {
        printf("ntt %s (%s)\n", NTT_VERSION, LUA_RELEASE);
        interactive = 1;
    } else if (!interactive) {
        if (run_script(L, (char *[]){ argv[0], "-" }, 2, 1) != LUA_OK)
            code = 1;
    }
    if (interactive && code == 0)
        code = ntt_repl(L);
    if (ntt_interrupted && code == 0)
        code = 128 + ntt_interrupted;
    lua_close(L);
    return code;
}
