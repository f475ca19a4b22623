use super::*;

const NO_BACKOFF: Backoff = Backoff {
    base_ms: 0,
    max_ms: 0,
};

fn plain(error: &str) -> FailReport {
    FailReport {
        error: error.into(),
        reason: None,
        retry_after_s: None,
        terminal: false,
    }
}

#[test]
fn backoff_doubles_to_its_cap_with_full_jitter_and_retry_after_wins() {
    let b = Backoff {
        base_ms: 5_000,
        max_ms: 600_000,
    };
    assert_eq!(b.cap_ms(1), 5_000);
    assert_eq!(b.cap_ms(2), 10_000);
    assert_eq!(b.cap_ms(3), 20_000);
    assert_eq!(b.cap_ms(8), 600_000);
    assert_eq!(b.cap_ms(200), 600_000);
    assert_eq!(b.delay_ms(3, None, 0.5), 10_000);
    assert_eq!(b.delay_ms(3, None, 0.0), 0);
    assert_eq!(b.delay_ms(3, Some(7), 0.5), 7_000);
    assert_eq!(b.delay_ms(1, Some(u64::MAX), 0.5), MAX_RETRY_AFTER_S * 1000);
}

#[test]
fn a_failure_waits_out_its_backoff_and_a_terminal_one_dead_letters() {
    let b = Backoff {
        base_ms: 1_000,
        max_ms: 60_000,
    };
    let mut t = task(5);
    t.assign("a", 10).unwrap();
    assert_eq!(t.fail("a", 1, plain("x"), b, 0.5, 100).unwrap(), "retried");
    assert_eq!(t.run_after, Some(600));
    t.assign("a", 700).unwrap();
    let mut report = plain("gone");
    report.retry_after_s = Some(30);
    report.reason = Some("agent_exited".into());
    assert_eq!(t.fail("a", 3, report, b, 0.5, 800).unwrap(), "retried");
    assert_eq!(t.run_after, Some(30_800));
    assert_eq!(t.attempts[1].cause.as_deref(), Some("agent_exited"));
    t.assign("a", 40_000).unwrap();
    let mut report = plain("no such repo");
    report.terminal = true;
    assert_eq!(
        t.fail("a", 5, report, b, 0.5, 40_001).unwrap(),
        "dead_letter"
    );
    assert_eq!(t.status, TaskStatus::DeadLetter);
    assert_eq!(t.retry_count, 3);
}

pub(crate) fn task(max_retries: u32) -> Task {
    let spec = TaskSpec {
        description: "d".into(),
        priority: 2,
        metadata: Map::new(),
        max_retries: Some(max_retries),
        complete_by: None,
        needed_capabilities: vec![],
        lease_ms: None,
        max_reclaims: Some(1),
        dedupe_key: None,
        depends_on: vec![],
        batch_ref: None,
        run_after: None,
        correlation_id: None,
        blocked_policy: None,
        blocked_requeue_ms: None,
        stall_ms: None,
        max_runtime_ms: None,
        repo: None,
        write_paths: vec![],
        read_paths: vec![],
        concurrency_key: None,
        approval: None,
        merge_on_approval: false,
        budget_tokens: None,
        budget_usd: None,
        parent_task_id: None,
        inputs_from: Vec::new(),
        notify: None,
        depends_on_correlation: None,
        context_keys: Vec::new(),
    };
    let defaults = TaskDefaults {
        max_retries: 3,
        max_reclaims: 5,
        lease_ms: 1000,
    };
    Task::new("task-1".into(), 1, spec, "admin", defaults, 0)
}

#[test]
fn generations_fence_reports() {
    let mut t = task(2);
    assert_eq!(t.assign("a", 1).unwrap().generation, 1);
    assert_eq!(
        t.complete("a", 0, None, None, 2),
        Err(TaskError::StaleGeneration)
    );
    assert_eq!(t.complete("b", 1, None, None, 2), Err(TaskError::NotOwner));
    assert_eq!(
        t.fail("a", 1, plain("x"), NO_BACKOFF, 0.5, 3).unwrap(),
        "retried"
    );
    assert_eq!(t.generation, 2);
    // A repeat of the accepted failure is acknowledged again and changes nothing.
    let before = t.clone();
    assert_eq!(
        t.fail("a", 1, plain("x"), NO_BACKOFF, 0.5, 4).unwrap(),
        "retried"
    );
    assert_eq!(t, before);
    assert_eq!(t.assign("a", 5).unwrap().generation, 3);
    assert_eq!(
        t.fail("a", 3, plain("y"), NO_BACKOFF, 0.5, 6).unwrap(),
        "dead_letter"
    );
    assert_eq!(t.status, TaskStatus::DeadLetter);
    t.force_retry("admin", 7).unwrap();
    assert_eq!(
        (t.status, t.generation, t.retry_count),
        (TaskStatus::Queued, 4, 0)
    );
}

#[test]
fn cancel_takes_unfinished_and_dead_lettered_tasks_only() {
    let mut t = task(0);
    t.assign("a", 1).unwrap();
    assert_eq!(
        t.fail("a", 1, plain("x"), NO_BACKOFF, 0.5, 2).unwrap(),
        "dead_letter"
    );
    assert_eq!(t.cancel("admin", 3), Ok(TaskStatus::DeadLetter));
    assert_eq!(t.status, TaskStatus::Cancelled);
    assert_eq!(
        t.cancel("admin", 4),
        Err(TaskError::InvalidState(TaskStatus::Cancelled))
    );
    let mut done = task(0);
    done.assign("a", 1).unwrap();
    done.complete("a", 1, None, None, 2).unwrap();
    assert_eq!(
        done.cancel("admin", 3),
        Err(TaskError::InvalidState(TaskStatus::Completed))
    );
}

#[test]
fn complete_is_idempotent() {
    let mut t = task(3);
    t.assign("a", 1).unwrap();
    assert_eq!(t.complete("a", 1, None, Some(5), 2).unwrap(), "complete");
    let before = t.clone();
    assert_eq!(t.complete("a", 1, None, Some(9), 3).unwrap(), "complete");
    assert_eq!(t, before);
    assert_eq!(
        t.complete("b", 1, None, None, 3),
        Err(TaskError::InvalidState(TaskStatus::Completed))
    );
}

#[test]
fn reclaims_past_the_limit_dead_letter() {
    let mut t = task(3);
    t.assign("a", 1).unwrap();
    assert_eq!(
        t.reclaim("a", 1, "disconnect", 2),
        Ok(ReclaimOutcome::Requeued)
    );
    assert_eq!(
        t.reclaim("a", 1, "disconnect", 2),
        Err(TaskError::StaleGeneration)
    );
    t.assign("a", 3).unwrap();
    assert_eq!(
        t.reclaim("a", 3, "lease_expired", 4),
        Ok(ReclaimOutcome::DeadLettered)
    );
    assert_eq!(t.last_error.as_deref(), Some("too_many_reclaims"));
}

#[test]
fn recorded_since_finds_repeated_entries_and_survives_the_cap() {
    let mut t = task(3);
    t.assign("a", 1).unwrap();
    for _ in 0..60 {
        let before = t.recorded;
        t.progress("a", None, None, None, 2).unwrap();
        assert_eq!(t.recorded_since(before).len(), 1);
    }
    let before = t.recorded;
    t.fail("a", 1, plain("x"), NO_BACKOFF, 0.5, 3).unwrap();
    let added: Vec<&str> = t
        .recorded_since(before)
        .iter()
        .map(|e| e.event.as_str())
        .collect();
    assert_eq!(added, ["retry"]);
}

#[test]
fn disabling_the_holder_does_not_use_up_the_reclaim_budget() {
    let mut t = task(3);
    for i in 0..5 {
        let g = t.assign("a", i).unwrap().generation;
        assert_eq!(
            t.reclaim("a", g, RECLAIM_AGENT_DISABLED, i),
            Ok(ReclaimOutcome::Requeued)
        );
    }
    assert_eq!(t.reclaim_count, 0);
    let last = t.attempts.last().expect("attempt");
    assert_eq!(
        (last.outcome.as_deref(), last.cause.as_deref()),
        (Some("reclaimed"), Some("agent_disabled"))
    );
}

#[test]
fn history_is_capped() {
    let mut t = task(3);
    t.assign("a", 1).unwrap();
    for i in 0..100 {
        t.progress("a", None, Some(i), None, i as i64).unwrap();
    }
    assert_eq!(t.history.len(), HISTORY_KEPT);
}
