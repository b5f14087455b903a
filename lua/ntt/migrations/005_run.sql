-- 005_run.sql: one row per `ntt run`, with what its diagnose rules decided.
--
-- rule_hits: rule label (ntt.rules.label: its name, or "N: predicate ->
-- action") -> how many files it decided, summed over the run's media and
-- workers.
CREATE TABLE run (
    run_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    policy      text,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    exit_code   int,
    rule_hits   jsonb NOT NULL DEFAULT '{}'::jsonb
);
