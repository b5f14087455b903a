/*
 * mapfile.c - the ddrescue mapfile, parsed without trusting it.
 *
 * Format: lines starting with '#' are comments; the first other line is the
 * current position and status (2 fields in ddrescue <= 1.21, 3 since); every
 * following line is "pos size status" with numbers in decimal, 0x-hex or
 * 0-octal and status one of + - / * ?.  Blocks are ascending and do not
 * overlap; areas no line covers are non-tried.  Only '+' is readable.
 * Anything else in the file is an error (never guessed around).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "helper.h"

static int map_number(char **p, uint64_t *v)
{
    while (**p == ' ' || **p == '\t') (*p)++;
    if (!isdigit((unsigned char)**p)) return -1;
    errno = 0;
    char *end;
    unsigned long long x = strtoull(*p, &end, 0);
    if (errno || end == *p || (*end && !isspace((unsigned char)*end))) return -1;
    *v = x;
    *p = end;
    return 0;
}

static int map_word(char **p, char *out, size_t len)
{
    while (**p == ' ' || **p == '\t') (*p)++;
    size_t i = 0;
    while (**p && !isspace((unsigned char)**p)) {
        if (i + 1 >= len) return -1;
        out[i++] = *(*p)++;
    }
    out[i] = 0;
    return i ? 0 : -1;
}

static int map_rest_empty(char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
    return *p == 0 || *p == '#';
}

/* Loads path into m (rescued ranges only).  0, or -1 with err set. */
int map_load(const char *path, struct map *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    FILE *f = fopen(path, "re");
    if (!f) { snprintf(err, errlen, "mapfile %s: %s", path, strerror(errno)); return -1; }
    char *line = NULL;
    size_t cap = 0, alloc = 0, lineno = 0;
    int seen_status = 0, blocks = 0;
    uint64_t prev_end = 0;
    ssize_t r;
    while ((r = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (memchr(line, 0, (size_t)r)) goto bad;
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (*p == '#' || map_rest_empty(p)) continue;
        uint64_t a, b;
        char st[8];
        if (!seen_status) {          /* current_pos current_status [current_pass] */
            if (map_number(&p, &a) || map_word(&p, st, sizeof st) || strlen(st) != 1 ||
                !strchr("?*/-FGR+", st[0]))
                goto bad;
            if (!map_rest_empty(p) && (map_number(&p, &b) || !map_rest_empty(p))) goto bad;
            seen_status = 1;
            continue;
        }
        if (map_number(&p, &a) || map_number(&p, &b) || map_word(&p, st, sizeof st) ||
            strlen(st) != 1 || !strchr("+-/*?", st[0]) || !map_rest_empty(p))
            goto bad;
        if (a < prev_end || b == 0 || a + b < a) goto bad;
        prev_end = a + b;
        blocks++;
        if (st[0] != '+') continue;
        if (m->n && m->ok[m->n - 1][1] == a) { m->ok[m->n - 1][1] = a + b; continue; }
        if (m->n == alloc) {
            alloc = alloc ? alloc * 2 : 64;
            void *nw = realloc(m->ok, alloc * sizeof *m->ok);
            if (!nw) { snprintf(err, errlen, "mapfile %s: out of memory", path); goto fail; }
            m->ok = nw;
        }
        m->ok[m->n][0] = a;
        m->ok[m->n][1] = a + b;
        m->n++;
    }
    if (ferror(f)) { snprintf(err, errlen, "mapfile %s: %s", path, strerror(errno)); goto fail; }
    if (!blocks) {
        snprintf(err, errlen, "mapfile %s: not a ddrescue mapfile (no block lines)", path);
        goto fail;
    }
    m->total = prev_end;
    free(line);
    fclose(f);
    return 0;
bad:
    snprintf(err, errlen, "mapfile %s: line %zu is not a ddrescue mapfile line", path, lineno);
fail:
    free(line);
    fclose(f);
    map_free(m);
    return -1;
}

void map_free(struct map *m)
{
    free(m->ok);
    memset(m, 0, sizeof *m);
}

/* 1 when every byte of [off, off+len) is inside one rescued range. */
int map_readable(const struct map *m, uint64_t off, uint64_t len)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {                 /* first range ending after off */
        size_t mid = (lo + hi) / 2;
        if (m->ok[mid][1] <= off) lo = mid + 1; else hi = mid;
    }
    return lo < m->n && m->ok[lo][0] <= off && off + len <= m->ok[lo][1];
}

uint64_t map_rescued(const struct map *m, uint64_t limit)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < m->n; i++) {
        uint64_t a = m->ok[i][0], b = m->ok[i][1] < limit ? m->ok[i][1] : limit;
        if (a < b) sum += b - a;
    }
    return sum;
}

/* Number of unreadable ranges inside [0, limit). */
int map_holes(const struct map *m, uint64_t limit)
{
    int holes = 0;
    uint64_t at = 0;
    for (size_t i = 0; i < m->n && at < limit; i++) {
        if (m->ok[i][0] > at) holes++;
        at = m->ok[i][1];
    }
    if (at < limit) holes++;
    return holes;
}

/* Drops everything at or past limit from the rescued ranges. */
void map_clip(struct map *m, uint64_t limit)
{
    size_t n = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (m->ok[i][0] >= limit) break;
        if (m->ok[i][1] > limit) m->ok[i][1] = limit;
        n++;
    }
    m->n = n;
}
