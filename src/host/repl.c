/*
 * repl.c - ntt.core.repl: the interactive loop (lua.c's doREPL, with GNU
 * readline for line editing and history).
 *
 * A line is first tried as an expression ("return <line>", and "=expr" is
 * accepted as the old shorthand), then as a statement; an incomplete chunk
 * continues on the next line.  Results go through ntt.repl.show (a table
 * pretty-printer) when that module loads.  Ctrl-C at the prompt drops the
 * line; Ctrl-C while a statement runs interrupts it and returns to the
 * prompt.  History lives in $NTT_HISTORY or ~/.ntt_history.
 *
 * Lua API (ntt.core.repl):
 *   run([prompt [, eval]])  runs the loop until end of input; returns true.
 *     With eval (`ntt attach`), a complete chunk is not run here: its text
 *     goes to eval(text), which returns the string to print; Ctrl-C while
 *     eval waits interrupts eval only.
 */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <readline/history.h>
#include <readline/readline.h>
#include "ntt.h"

#define MAXINPUT 4096

static sigjmp_buf prompt_jmp;
static volatile sig_atomic_t at_prompt;
static int use_readline;
static char history_file[4096];
static const char *prompt1 = "ntt> ";
static int eval_ref = LUA_NOREF;     /* run()'s eval function, or none */

static void prompt_signal(int sig)
{
    if (sig == SIGINT && at_prompt) {
        at_prompt = 0;
        siglongjmp(prompt_jmp, 1);
    }
}

/* Reads one line without its newline; NULL at end of input. */
static char *read_line(const char *prompt)
{
    if (use_readline) {
        char *l = readline(prompt);
        if (l && *l)
            add_history(l);
        return l;
    }
    fputs(prompt, stdout);
    fflush(stdout);
    char buf[MAXINPUT];
    if (!fgets(buf, sizeof buf, stdin))
        return NULL;
    size_t n = strlen(buf);
    if (n && buf[n - 1] == '\n')
        buf[n - 1] = 0;
    return strdup(buf);
}

static int incomplete(lua_State *L, int status)
{
    if (status == LUA_ERRSYNTAX) {
        size_t lmsg;
        const char *msg = lua_tolstring(L, -1, &lmsg);
        if (lmsg >= 5 && strcmp(msg + lmsg - 5, "<eof>") == 0) {
            lua_pop(L, 1);
            return 1;
        }
    }
    return 0;
}

/* Compiles the input (string at top) as "return ..." or a statement. */
static int load_input(lua_State *L)
{
    size_t len;
    const char *line = lua_tolstring(L, -1, &len);
    const char *expr = line[0] == '=' ? line + 1 : line;
    const char *ret = lua_pushfstring(L, "return %s;", expr);
    int status = luaL_loadbuffer(L, ret, strlen(ret), "=stdin");
    if (status == LUA_OK) {
        lua_remove(L, -2);      /* the "return ..." text */
        lua_remove(L, -2);      /* the line */
        return status;
    }
    lua_pop(L, 2);
    for (;;) {
        line = lua_tolstring(L, -1, &len);
        status = luaL_loadbuffer(L, line, len, "=stdin");
        if (!incomplete(L, status))
            break;
        char *more;
        at_prompt = 1;
        if (sigsetjmp(prompt_jmp, 1)) {
            if (use_readline) {
                rl_free_line_state();
                rl_cleanup_after_signal();
            }
            fputc('\n', stdout);
            ntt_interrupted = 0;
            lua_sethook(L, NULL, 0, 0);
            lua_pushliteral(L, "(input cancelled)");
            return LUA_ERRSYNTAX;
        }
        more = read_line(">> ");
        at_prompt = 0;
        if (!more) {
            status = luaL_loadbuffer(L, line, len, "=stdin");
            break;
        }
        lua_pushliteral(L, "\n");
        lua_pushstring(L, more);
        free(more);
        lua_concat(L, 3);
    }
    lua_remove(L, -2);
    return status;
}

/*
 * The chunk at the top (more lines read while it is incomplete, checked by
 * compiling it here) goes to eval; what it returns is printed.
 */
static void remote_input(lua_State *L, int base)
{
    for (;;) {
        size_t len;
        const char *text = lua_tolstring(L, -1, &len);
        const char *expr = text[0] == '=' ? text + 1 : text;
        const char *ret = lua_pushfstring(L, "return %s;", expr);
        int status = luaL_loadbuffer(L, ret, strlen(ret), "=stdin");
        lua_pop(L, 2);
        if (status == LUA_OK)
            break;
        status = luaL_loadbuffer(L, text, len, "=stdin");
        if (!incomplete(L, status)) {
            lua_pop(L, 1);      /* a complete chunk, or a syntax error the far side reports */
            break;
        }
        at_prompt = 1;
        if (sigsetjmp(prompt_jmp, 1)) {
            if (use_readline) {
                rl_free_line_state();
                rl_cleanup_after_signal();
            }
            fputs("\n(input cancelled)\n", stdout);
            ntt_interrupted = 0;
            lua_settop(L, base);
            return;
        }
        char *more = read_line(">> ");
        at_prompt = 0;
        if (!more)
            break;
        lua_pushliteral(L, "\n");
        lua_pushstring(L, more);
        free(more);
        lua_concat(L, 3);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, eval_ref);
    lua_insert(L, -2);
    ntt_signals_raise(1);
    int st = ntt_call(L, 1, 1);
    ntt_signals_raise(0);
    ntt_interrupted = 0;
    lua_sethook(L, NULL, 0, 0);
    if (st == LUA_OK) {
        const char *out = lua_tostring(L, -1);
        if (out && *out) {
            fputs(out, stdout);
            if (out[strlen(out) - 1] != '\n')
                fputc('\n', stdout);
            fflush(stdout);
        }
    } else {
        ntt_report(L, st);
    }
    lua_settop(L, base);
}

static void show_results(lua_State *L, int base)
{
    int n = lua_gettop(L) - base;
    if (n <= 0)
        return;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "ntt.repl");
    if (ntt_call(L, 1, 1) == LUA_OK && lua_istable(L, -1)) {
        lua_getfield(L, -1, "show");
        lua_remove(L, -2);
    } else {
        lua_pop(L, 1);
        lua_getglobal(L, "print");
    }
    lua_insert(L, base + 1);
    int st = ntt_call(L, n, 0);
    ntt_report(L, st);
}

int ntt_repl(lua_State *L)
{
    use_readline = isatty(0);
    if (use_readline) {
        const char *h = getenv("NTT_HISTORY");
        const char *home = getenv("HOME");
        if (h)
            snprintf(history_file, sizeof history_file, "%s", h);
        else if (home)
            snprintf(history_file, sizeof history_file, "%s/.ntt_history", home);
        rl_catch_signals = 0;
        rl_readline_name = "ntt";
        using_history();
        stifle_history(1000);
        if (history_file[0])
            read_history(history_file);
    }
    ntt_signal_hook = prompt_signal;
    for (;;) {
        int base = lua_gettop(L);
        if (sigsetjmp(prompt_jmp, 1)) {
            if (use_readline) {
                rl_free_line_state();
                rl_cleanup_after_signal();
            }
            fputs("\n", stdout);
            ntt_interrupted = 0;
            lua_sethook(L, NULL, 0, 0);
            lua_settop(L, base);
            continue;
        }
        at_prompt = 1;
        char *line = read_line(prompt1);
        at_prompt = 0;
        /* A signal that arrived outside the jump window must not leak. */
        ntt_interrupted = 0;
        lua_sethook(L, NULL, 0, 0);
        if (!line)
            break;
        lua_pushstring(L, line);
        free(line);
        if (eval_ref != LUA_NOREF) {
            remote_input(L, base);
            continue;
        }
        int status = load_input(L);
        if (status == LUA_OK) {
            ntt_signals_raise(1);
            status = ntt_call(L, 0, LUA_MULTRET);
            ntt_interrupted = 0;
            lua_sethook(L, NULL, 0, 0);
        }
        if (status == LUA_OK)
            show_results(L, base);
        else
            ntt_report(L, status);
        lua_settop(L, base);
    }
    ntt_signal_hook = NULL;
    fputc('\n', stdout);
    if (use_readline && history_file[0])
        write_history(history_file);
    return 0;
}

static int repl_run(lua_State *L)
{
    if (lua_isstring(L, 1)) {
        static char prompt[64];
        snprintf(prompt, sizeof prompt, "%s", lua_tostring(L, 1));
        prompt1 = prompt;
    }
    if (lua_isfunction(L, 2)) {
        lua_pushvalue(L, 2);
        eval_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    ntt_repl(L);
    luaL_unref(L, LUA_REGISTRYINDEX, eval_ref);
    eval_ref = LUA_NOREF;
    lua_pushboolean(L, 1);
    return 1;
}

static const luaL_Reg repl_funcs[] = {
    { "run", repl_run },
    { NULL, NULL }
};

int luaopen_ntt_core_repl(lua_State *L)
{
    luaL_newlib(L, repl_funcs);
    return 1;
}
