-- 016_archive.sql: a medium's image set packed into <data root>/archive/<hash>.tar.zst
-- (the archive stage, lua/ntt/archive.lua), recorded only once it was read
-- back and every member compared with its source.
CREATE TABLE archive (
    medium_hash        text PRIMARY KEY REFERENCES medium (medium_hash) ON DELETE CASCADE,
    path               text NOT NULL,
    size               bigint NOT NULL CHECK (size >= 0),
    blake3             text NOT NULL CHECK (blake3 ~ '^[0-9a-f]{64}$'),
    zstd_level         integer,
    created_at         timestamptz NOT NULL DEFAULT now(),
    verified_at        timestamptz NOT NULL,
    sources_removed_at timestamptz
);

-- One member of an archive, in archive order: its name inside the tar, the
-- source it was made from, and its BLAKE3-256 (ntt verify re-checks them).
CREATE TABLE archive_member (
    medium_hash  text NOT NULL REFERENCES archive (medium_hash) ON DELETE CASCADE,
    seq          integer NOT NULL CHECK (seq >= 1),
    name         text NOT NULL,
    source_path  text NOT NULL,
    size         bigint NOT NULL CHECK (size >= 0),
    blake3       text NOT NULL CHECK (blake3 ~ '^[0-9a-f]{64}$'),
    PRIMARY KEY (medium_hash, seq),
    UNIQUE (medium_hash, name)
);
