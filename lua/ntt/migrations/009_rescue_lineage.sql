-- 009_rescue_lineage.sql: a new rescue of the same physical medium.
--
-- An image sharing its sampled hash with a known medium but not its content
-- is a new rescue of it when its ddrescue map shows the medium rescued
-- further, or when the operator says so (`ntt run --rescue-of OLD IMAGE`);
-- docs/media.md.  rescue_of links the newer medium to the older one,
-- rescue_basis says why ('map' or 'operator').
ALTER TABLE medium ADD COLUMN rescue_of text REFERENCES medium (medium_hash) ON DELETE SET NULL,
                   ADD COLUMN rescue_basis text CHECK (rescue_basis IN ('map', 'operator')),
                   ADD CONSTRAINT medium_rescue_not_self CHECK (rescue_of <> medium_hash);
CREATE INDEX medium_rescue_of_idx ON medium (rescue_of) WHERE rescue_of IS NOT NULL;

-- The ddrescue map an image medium was inspected with.  ddrescue updates
-- an image and its map in place, so after a further pass the file at
-- map_path describes the new content; the older medium's map is kept here.
CREATE TABLE medium_map (
    medium_hash    text PRIMARY KEY REFERENCES medium (medium_hash) ON DELETE CASCADE,
    path           text NOT NULL,
    map_text       text NOT NULL,
    rescued_bytes  bigint NOT NULL CHECK (rescued_bytes >= 0),
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
