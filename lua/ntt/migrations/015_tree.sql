-- 015_tree.sql: the tree stage (docs/tree.md): tree/<medium>/p<N>/<path>,
-- hard links to the blobs.
--
-- medium.tree_fs, tree_path: how far the tree of the medium got, in
-- (fs_index, path) order -- every path up to and including this one is in
-- place; a rerun goes on after it.  tree_done: set only once every path is
-- in and the directories have their mtimes.
ALTER TABLE medium ADD COLUMN tree_fs integer,
                   ADD COLUMN tree_path bytea,
                   ADD COLUMN tree_done timestamptz;

-- A second (third, ...) copy of a blob, made when the blob had as many
-- links as its filesystem allows: <store>/copies/AA/BB/<blobid>.<copy_no>,
-- re-hashed before it got its name.  reflink: it shares the blob's extents.
CREATE TABLE blob_copy (
    blobid      text NOT NULL REFERENCES blob (blobid),
    copy_no     integer NOT NULL CHECK (copy_no >= 1),
    reflink     boolean NOT NULL,
    made_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (blobid, copy_no)
);

-- A path of a medium that is not in its tree: the destination could not
-- hold the name (ENAMETOOLONG, EILSEQ, ...), another file was in its
-- place, or its blob was missing.  Removed when a later run puts it in.
CREATE TABLE tree_problem (
    medium_hash  text NOT NULL REFERENCES medium (medium_hash) ON DELETE CASCADE,
    fs_index     integer NOT NULL,
    path         bytea NOT NULL,
    err          text NOT NULL,
    msg          text,
    seen_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (medium_hash, fs_index, path)
);
