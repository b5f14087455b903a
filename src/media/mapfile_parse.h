/*
 * mapfile_parse.h - the one parser of GNU ddrescue mapfiles, shared by
 * ntt.core.mapfile (mapfile.c) and the mount helper
 * (src/mount-helper/mapfile.c), so the two accept and reject exactly the
 * same maps.  No Lua here: the helper links this file too.
 *
 * The format (ddrescue manual, "Mapfile structure"; docs/media.md):
 *   - '#' at the start of a line or after blanks starts a comment; blank
 *     lines are ignored; a line ends at '\n' (a '\r' before it is a blank);
 *   - the first other line is the status line:
 *       current_pos current_status [current_pass]
 *     (two fields up to ddrescue 1.21); status one of ? * / - F G +,
 *     pass a positive decimal integer;
 *   - every following line is a block: pos size status, status one of
 *     + - / * ?; at least one block line;
 *   - numbers are read as ddrescue reads them: 0x-hex, octal with a
 *     leading 0, else decimal; below 2^63 (pos + size too);
 *   - blocks are contiguous and do not overlap: each starts where the one
 *     before ends.  The first may start past 0 (ddrescue reads the area
 *     before it as non-tried; it is listed as a '?' block with gap set);
 *     everything past the last block is non-tried too;
 *   - size 0 only for a first block at 0 (ddrescue's empty map "0 0 ?").
 * Adjacent blocks of one status are merged into one.
 */
#ifndef NTT_MAPFILE_PARSE_H
#define NTT_MAPFILE_PARSE_H

#include <stddef.h>
#include <stdint.h>

struct ntt_mapblock {
    uint64_t pos, size;
    char status;                    /* + - / * ? */
    char gap;                       /* 1: the area before the first block (not a line) */
};

struct ntt_map {
    uint64_t current_pos;
    char current_status;            /* ? * / - F G + */
    int pass;                       /* current_pass, 0 when the line has two fields */
    struct ntt_mapblock *blocks;    /* contiguous from 0 to size */
    size_t n, cap;
    uint64_t size;                  /* end of the last block */
    uint64_t rescued;               /* bytes marked '+' */
};

/*
 * Parses len bytes of text into m.  0, or -1 with err = "line N: what is
 * wrong" (line numbers from 1) and *line = N; on -1 m holds nothing to
 * free.  ENOMEM reads "out of memory" with line 0.
 */
int ntt_map_parse(const char *text, size_t len, struct ntt_map *m, size_t *line,
                  char *err, size_t errlen);
void ntt_map_free(struct ntt_map *m);

#endif
