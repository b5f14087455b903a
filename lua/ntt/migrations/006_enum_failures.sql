-- 006_enum_failures.sql: what the walk of a medium could not read, so that
-- a later run walks those places again (and only those).
--
-- One row per place: a directory that could not be opened or listed, an
-- entry that could not be stat'ed (error), a name listed twice (duplicate).
-- retry: walked again by the next run of the medium (a cycle or a depth
-- note, ELOOP, and duplicates are not).  resolved_at: a later walk read it.
CREATE TABLE enum_failure (
    medium_hash  text NOT NULL REFERENCES medium (medium_hash) ON DELETE CASCADE,
    fs_index     integer NOT NULL CHECK (fs_index >= 0),
    path         bytea NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('error', 'duplicate')),
    err          text,
    msg          text,
    retry        boolean NOT NULL DEFAULT false,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now(),
    tries        integer NOT NULL DEFAULT 1 CHECK (tries >= 1),
    resolved_at  timestamptz,
    PRIMARY KEY (medium_hash, fs_index, path, kind)
);
CREATE INDEX enum_failure_open_idx ON enum_failure (medium_hash) WHERE resolved_at IS NULL;
