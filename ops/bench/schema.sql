-- The job table of the Postgres "FOR UPDATE SKIP LOCKED" queue pattern, as used by
-- ops/bench/pg-baseline. One row per job; workers claim by taking a lease.
CREATE TABLE jobs (
    id          bigserial   PRIMARY KEY,
    priority    smallint    NOT NULL DEFAULT 0,          -- lower runs first
    run_after   timestamptz NOT NULL DEFAULT now(),      -- delayed / retried jobs
    status      text        NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'running', 'done', 'failed')),
    locked_by   text,                                    -- worker holding the lease
    lease_until timestamptz,                             -- lease expiry (a reaper requeues)
    attempts    integer     NOT NULL DEFAULT 0,          -- claims; > 1 means handed out twice
    completions integer     NOT NULL DEFAULT 0,          -- completes; > 1 means done twice
    payload     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    done_at     timestamptz
);

-- What the claim query walks: queued jobs in (priority, id) order. Partial, so it
-- stays as small as the backlog. (A reaper would also want an index on lease_until
-- of running jobs; it is left out, which only makes the baseline faster.)
CREATE INDEX jobs_claim ON jobs (priority, id) WHERE status = 'queued';
