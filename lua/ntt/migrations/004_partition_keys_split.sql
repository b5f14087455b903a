-- 004_partition_keys_split.sql: a medium's keys in three parts.
--
-- The inode keys and the path keys of a freshly loaded medium touch
-- different tables, so enumerate builds them at once on two connections
-- (each is a sort of a million rows for a big disk); the foreign key between
-- them comes last.  ntt_partition_keys keeps its meaning: all three parts.
CREATE FUNCTION ntt_inode_keys(ipart regclass)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (fs_index, ino)', ipart);
    EXECUTE format('CREATE INDEX ON %s (fs_index, dir_key, ino) '
                   'WHERE state IN (''pending'', ''failed_retryable'')', ipart);
END $$;

CREATE FUNCTION ntt_path_keys(ppart regclass)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (fs_index, path)', ppart);
    EXECUTE format('CREATE INDEX ON %s (fs_index, ino)', ppart);
END $$;

CREATE FUNCTION ntt_path_inode_fk(ipart regclass, ppart regclass, validate_fk boolean DEFAULT true)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ADD CONSTRAINT path_inode_fk FOREIGN KEY (fs_index, ino) '
                   'REFERENCES %s (fs_index, ino) ON DELETE CASCADE '
                   'DEFERRABLE INITIALLY DEFERRED%s', ppart, ipart,
                   CASE WHEN validate_fk THEN '' ELSE ' NOT VALID' END);
END $$;

CREATE OR REPLACE FUNCTION ntt_partition_keys(ipart regclass, ppart regclass, validate_fk boolean DEFAULT true)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ntt_inode_keys(ipart);
    PERFORM ntt_path_keys(ppart);
    PERFORM ntt_path_inode_fk(ipart, ppart, validate_fk);
END $$;
