/*
 * states.h - the inode states and the reasons the loader writes, defined
 * once.  load.c writes them into the rows it loads and ntt.core.load
 * exports them (STATES, REASONS) to lua/ntt/states.lua, which every Lua
 * module uses instead of literals.  NTT_STATES lists the labels of the
 * enum inode_state (lua/ntt/migrations/001_schema.sql) in their order; a
 * spec compares the two.
 */
#ifndef NTT_STATES_H
#define NTT_STATES_H

#include <lua.h>

#define NTT_STATE_PENDING  "pending"
#define NTT_STATE_EXCLUDED "excluded"
#define NTT_STATE_NON_FILE "non_file"

static const char *const NTT_STATES[] = {
    NTT_STATE_PENDING, "copied", "skipped", "failed_retryable", "failed_permanent",
    NTT_STATE_EXCLUDED, NTT_STATE_NON_FILE, "damaged", NULL
};

/* The reason of a file whose every path an ignore pattern excludes. */
#define NTT_REASON_EXCLUDED "every path excluded by policy"

/* The reason of a non_file row: its kind, by the walker's type letter
 * (a regular file 'f' has none). */
static const struct { char type; const char *key, *reason; } NTT_KIND_REASONS[] = {
    { 'd', "directory", "directory" },
    { 'l', "symlink", "symlink" },
    { 'b', "block_device", "block device" },
    { 'c', "character_device", "character device" },
    { 'p', "fifo", "fifo" },
    { 's', "socket", "socket" },
    { 0, "unknown", "unknown type" },   /* any other type; ends the list */
};

/* Sets STATES (the labels in order) and REASONS (key -> the loader's
 * text) in the table on top of the stack. */
static inline void ntt_push_states(lua_State *L)
{
    lua_newtable(L);
    for (int i = 0; NTT_STATES[i]; i++) {
        lua_pushstring(L, NTT_STATES[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "STATES");
    lua_newtable(L);
    lua_pushstring(L, NTT_REASON_EXCLUDED);
    lua_setfield(L, -2, "excluded");
    for (size_t i = 0;; i++) {
        lua_pushstring(L, NTT_KIND_REASONS[i].reason);
        lua_setfield(L, -2, NTT_KIND_REASONS[i].key);
        if (!NTT_KIND_REASONS[i].type) break;
    }
    lua_setfield(L, -2, "REASONS");
}

#endif
