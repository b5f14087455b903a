/*
 * ignore.h - the loader's ignore patterns (src/pg/ignore.c).
 */
#ifndef NTT_IGNORE_H
#define NTT_IGNORE_H

#include <regex.h>
#include <stddef.h>
#include "lua.h"

/* The ignore patterns: Regex userdata compiled when the policy loaded
 * (borrowed: opts keeps them alive for the call), or strings compiled here
 * for a caller that hands plain patterns. */
struct ignore {
    const regex_t **re;
    const char **src;
    regex_t *own;       /* the ones compiled here */
    int n, nown;
};

/* Gather the "ignore" field of the table at t; 0, or -1 with the reason in
 * errbuf (nothing left to free). */
int ntt_ignore_compile(lua_State *L, int t, struct ignore *ig, char *errbuf, size_t errlen);
/* Index of the first pattern matching path (len bytes), or -1; tmp/tmpcap
 * is the caller's scratch buffer for the NUL-terminated copy. */
int ntt_ignore_match(const struct ignore *ig, const char *path, size_t len, char **tmp, size_t *tmpcap);
void ntt_ignore_free(struct ignore *ig);

#endif
