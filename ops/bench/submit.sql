-- pgbench script: one submit = one batch of :batch jobs in one transaction.
INSERT INTO jobs (priority, payload)
SELECT 0, jsonb_build_object('description', 'bench task ' || g || ' ' || repeat('x', :payload::int))
FROM generate_series(1, :batch::int) AS g;
