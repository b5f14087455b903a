/*
 * mapfile.c - the ddrescue mapfile as the helper needs it: the rescued
 * ranges.  The file is parsed by the parser ntt uses too
 * (src/media/mapfile_parse.c), so a map ntt rejects the helper rejects,
 * with the same line number; only '+' is readable, and everything no
 * block covers is not.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "helper.h"
#include "mapfile_parse.h"

#define MAP_MAX_BYTES (1ull << 30)      /* far above any real map: a bound, not a limit */

/* The whole file behind fd, NUL-terminated; NULL with errno set. */
static char *slurp(int fd, size_t *len)
{
    struct stat st;
    if (fstat(fd, &st) < 0) return NULL;
    if ((uint64_t)st.st_size > MAP_MAX_BYTES) { errno = EFBIG; return NULL; }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    for (;;) {
        if (n + 1 >= cap) {             /* the file grew while being read */
            if (cap > MAP_MAX_BYTES) { free(buf); errno = EFBIG; return NULL; }
            char *nb = realloc(buf, cap * 2);
            if (!nb) { free(buf); return NULL; }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = pread(fd, buf + n, cap - 1 - n, (off_t)n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { int e = errno; free(buf); errno = e; return NULL; }
        if (r == 0) break;
        n += (size_t)r;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* Loads the map behind fd (named path in messages) into m (rescued ranges
 * only).  0, or -1 with err = "mapfile PATH: line N: why". */
int map_load_fd(int fd, const char *path, struct map *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    size_t len = 0;
    char *text = slurp(fd, &len);
    if (!text) { snprintf(err, errlen, "mapfile %s: %s", path, strerror(errno)); return -1; }
    struct ntt_map pm;
    char why[256];
    size_t line;
    int rc = ntt_map_parse(text, len, &pm, &line, why, sizeof why);
    free(text);
    if (rc < 0) { snprintf(err, errlen, "mapfile %s: %s", path, why); return -1; }
    size_t nok = 0;
    for (size_t i = 0; i < pm.n; i++) nok += pm.blocks[i].status == '+';
    if (nok) {
        m->ok = malloc(nok * sizeof *m->ok);
        if (!m->ok) {
            ntt_map_free(&pm);
            snprintf(err, errlen, "mapfile %s: out of memory", path);
            return -1;
        }
    }
    for (size_t i = 0; i < pm.n; i++) {       /* the parser merged adjacent '+' blocks */
        const struct ntt_mapblock *b = &pm.blocks[i];
        if (b->status != '+') continue;
        m->ok[m->n][0] = b->pos;
        m->ok[m->n][1] = b->pos + b->size;
        m->n++;
    }
    m->total = pm.size;
    ntt_map_free(&pm);
    return 0;
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
