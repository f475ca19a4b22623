-- pgbench script: one worker step = claim one job (its own committed transaction,
-- taking a 30 s lease), then complete it (a second committed transaction).
-- Both statements run in autocommit mode, so each is durable on its own, like
-- the hub's assignment and completion.
\set id 0
UPDATE jobs
   SET status = 'running',
       locked_by = 'worker-' || CAST(:client_id AS text),
       lease_until = now() + interval '30 seconds',
       attempts = attempts + 1
 WHERE id = (SELECT id
               FROM jobs
              WHERE status = 'queued' AND run_after <= now()
              ORDER BY priority, id
                FOR UPDATE SKIP LOCKED
              LIMIT 1)
RETURNING id \aset
\if :id > 0
UPDATE jobs
   SET status = 'done',
       done_at = now(),
       lease_until = NULL,
       completions = completions + 1
 WHERE id = :id AND status = 'running' AND locked_by = 'worker-' || CAST(:client_id AS text);
\endif
