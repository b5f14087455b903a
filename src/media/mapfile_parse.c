/*
 * mapfile_parse.c - the one GNU ddrescue mapfile parser (mapfile_parse.h
 * has the rules), used by ntt.core.mapfile and by the mount helper.
 * Strict: anything ddrescue would not write, or that two readers could
 * understand differently, is an error naming its line.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mapfile_parse.h"

#define MAXF 4                      /* one more than a line may hold */
#define POS_MAX ((uint64_t)INT64_MAX)

struct tok { const char *s; size_t n; };

static int blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

/* Splits one line into at most MAXF fields; a field that starts with '#'
 * starts the comment.  Returns the number of fields. */
static int fields(const char *p, const char *end, struct tok *t)
{
    int n = 0;
    while (p < end) {
        while (p < end && blank(*p)) p++;
        if (p == end || *p == '#') break;
        const char *s = p;
        while (p < end && !blank(*p)) p++;
        if (n == MAXF) return MAXF + 1;
        t[n].s = s;
        t[n].n = (size_t)(p - s);
        n++;
    }
    return n;
}

/* A number as ddrescue reads it (C's base-0 rule: 0x-hex, a leading 0
 * octal, else decimal), below 2^63; 0 or -1. */
static int number(const struct tok *t, uint64_t *v)
{
    const char *s = t->s;
    size_t n = t->n, i = 0;
    uint64_t x = 0;
    if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        for (i = 2; i < n; i++) {
            char c = s[i];
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (d < 0 || x > (POS_MAX - (uint64_t)d) / 16) return -1;
            x = x * 16 + (uint64_t)d;
        }
    } else {
        if (n == 0) return -1;
        unsigned base = s[0] == '0' && n > 1 ? 8 : 10;
        for (i = 0; i < n; i++) {
            if (s[i] < '0' || s[i] >= (char)('0' + base)) return -1;
            uint64_t d = (uint64_t)(s[i] - '0');
            if (x > (POS_MAX - d) / base) return -1;
            x = x * base + d;
        }
    }
    *v = x;
    return 0;
}

/* The field as 'text' for a message: at most 32 bytes, others as \xNN. */
static const char *shown(const struct tok *t, char *buf, size_t len)
{
    size_t o = 0;
    buf[o++] = '\'';
    for (size_t i = 0; i < t->n && i < 32 && o + 6 < len; i++) {
        unsigned char c = (unsigned char)t->s[i];
        if (c >= 0x20 && c < 0x7f && c != '\'') buf[o++] = (char)c;
        else o += (size_t)snprintf(buf + o, len - o, "\\x%02x", c);
    }
    if (t->n > 32 && o + 4 < len) { memcpy(buf + o, "...", 3); o += 3; }
    buf[o++] = '\'';
    buf[o] = 0;
    return buf;
}

static int fail(size_t *line, size_t at, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int fail(size_t *line, size_t at, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    int o = snprintf(err, errlen, "line %zu: ", at);
    va_start(ap, fmt);
    if (o >= 0 && (size_t)o < errlen) vsnprintf(err + o, errlen - (size_t)o, fmt, ap);
    va_end(ap);
    if (line) *line = at;
    return -1;
}

static int push(struct ntt_map *m, uint64_t pos, uint64_t size, char status, char gap)
{
    if (m->n && !gap) {
        struct ntt_mapblock *b = &m->blocks[m->n - 1];
        if (b->status == status && !b->gap) { b->size += size; return 0; }
    }
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        void *nb = realloc(m->blocks, cap * sizeof *m->blocks);
        if (!nb) return -1;
        m->blocks = nb;
        m->cap = cap;
    }
    m->blocks[m->n++] = (struct ntt_mapblock){ .pos = pos, .size = size, .status = status, .gap = gap };
    return 0;
}

static int status_line(struct ntt_map *m, const struct tok *t, int nf, size_t ln, size_t *line,
                       char *err, size_t errlen)
{
    char b[160];
    if (nf > 3) return fail(line, ln, err, errlen, "status line: too many fields");
    if (number(&t[0], &m->current_pos) < 0)
        return fail(line, ln, err, errlen, "status line: bad current position %s (decimal, 0x-hex or 0-octal)",
                    shown(&t[0], b, sizeof b));
    if (nf < 2 || t[1].n != 1 || !strchr("?*/-FG+", t[1].s[0]))
        return fail(line, ln, err, errlen, "status line: bad current status %s (expected one of ?*/-FG+)",
                    nf < 2 ? "(missing)" : shown(&t[1], b, sizeof b));
    m->current_status = t[1].s[0];
    if (nf == 3) {
        uint64_t pass;
        if (number(&t[2], &pass) < 0 || pass == 0 || pass > 999999999 || t[2].s[0] == '0')
            return fail(line, ln, err, errlen, "status line: bad pass %s (a positive decimal integer)",
                        shown(&t[2], b, sizeof b));
        m->pass = (int)pass;
    }
    return 0;
}

static int block_line(struct ntt_map *m, const struct tok *t, int nf, size_t ln, size_t nblocks,
                      size_t *line, char *err, size_t errlen)
{
    char b[160];
    uint64_t pos, size;
    if (nf > 3) return fail(line, ln, err, errlen, "too many fields (a block line is 'pos size status')");
    if (nf < 3) return fail(line, ln, err, errlen, "block line needs 'pos size status'");
    if (number(&t[0], &pos) < 0)
        return fail(line, ln, err, errlen, "bad block position %s (decimal, 0x-hex or 0-octal)",
                    shown(&t[0], b, sizeof b));
    if (number(&t[1], &size) < 0)
        return fail(line, ln, err, errlen, "bad block size %s (decimal, 0x-hex or 0-octal)",
                    shown(&t[1], b, sizeof b));
    if (t[2].n != 1 || !strchr("+-/*?", t[2].s[0]))
        return fail(line, ln, err, errlen, "bad block status %s (expected one of +-/*?)",
                    shown(&t[2], b, sizeof b));
    if (size > POS_MAX - pos)
        return fail(line, ln, err, errlen, "block at %llu is too large (ends past 2^63)", (unsigned long long)pos);
    if (size == 0 && !(pos == 0 && nblocks == 0))
        return fail(line, ln, err, errlen, "block at %llu has size 0", (unsigned long long)pos);
    if (nblocks == 0 && pos > 0) {              /* before the first block: non-tried */
        if (push(m, 0, pos, '?', 1) < 0) return fail(line, 0, err, errlen, "out of memory");
    } else if (pos < m->size) {
        return fail(line, ln, err, errlen, "block at %llu overlaps or precedes the previous block ending at %llu",
                    (unsigned long long)pos, (unsigned long long)m->size);
    } else if (pos > m->size) {
        return fail(line, ln, err, errlen, "block at %llu leaves a gap after the previous block ending at %llu"
                    " (blocks must be contiguous)", (unsigned long long)pos, (unsigned long long)m->size);
    }
    if (size > 0 && push(m, pos, size, t[2].s[0], 0) < 0) return fail(line, 0, err, errlen, "out of memory");
    if (t[2].s[0] == '+') m->rescued += size;
    m->size = pos + size;
    return 0;
}

int ntt_map_parse(const char *text, size_t len, struct ntt_map *m, size_t *line,
                  char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    if (line) *line = 0;
    const char *p = text, *end = text + len;
    size_t ln = 0, nblocks = 0;
    int have_status = 0, rc = 0;
    while (p < end && rc == 0) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        ln++;
        struct tok t[MAXF];
        if (memchr(p, 0, (size_t)(le - p))) {
            rc = fail(line, ln, err, errlen, "NUL byte (not a text file)");
            break;
        }
        int nf = fields(p, le, t);
        p = nl ? nl + 1 : end;
        if (nf == 0) continue;
        if (!have_status) {
            rc = status_line(m, t, nf, ln, line, err, errlen);
            have_status = 1;
        } else {
            rc = block_line(m, t, nf, ln, nblocks, line, err, errlen);
            nblocks++;
        }
    }
    if (rc == 0 && !have_status)
        rc = fail(line, ln ? ln : 1, err, errlen, "no status line (not a ddrescue mapfile?)");
    else if (rc == 0 && nblocks == 0)
        rc = fail(line, ln, err, errlen, "no block lines after the status line (not a ddrescue mapfile?)");
    if (rc < 0) ntt_map_free(m);
    return rc;
}

void ntt_map_free(struct ntt_map *m)
{
    free(m->blocks);
    memset(m, 0, sizeof *m);
}
