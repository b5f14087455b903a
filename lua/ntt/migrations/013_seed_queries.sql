-- 013_seed_queries.sql: what the seed design's SQL reads, so that it runs
-- unchanged (docs/database.md, "The seed's queries").
--
-- The seed's copier kept one boolean per inode: `copied`, true once the
-- copier was done with the file -- copied, or given up on for good (a
-- permanent skip was "copied = true, claimed_by = 'DIAGNOSTIC_SKIP:...'").
-- ntt's truth stays the state enum; `copied` is derived from it: false
-- exactly while the file is still work to do (the rows the claim index
-- holds), true for every settled state.  It is never a claim that a blob
-- exists: that is state = 'copied'.
ALTER TABLE inode ADD COLUMN copied boolean
    GENERATED ALWAYS AS (state NOT IN ('pending', 'failed_retryable')) STORED;

-- A skipped file names its skip in claimed_by, as in the seed; its lease
-- is long expired, so nothing ever waits on it as on a live claim.
UPDATE inode SET claimed_by = reason, lease_until = '-infinity'
 WHERE state = 'skipped' AND claimed_by IS NULL AND reason IS NOT NULL;
