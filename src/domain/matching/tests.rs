use super::*;

fn caps(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|c| c.to_string()).collect();
    v.sort();
    v
}

fn pair(m: Option<Match<()>>) -> Option<(String, String)> {
    m.map(|m| (m.task_id, m.agent_id))
}

#[test]
fn a_waiting_task_goes_to_the_first_agent_that_covers_it() {
    let mut index = MatchIndex::default();
    assert_eq!(index.task_ready("t1".into(), 1, 2, caps(&["rust"])), None);
    assert_eq!(
        index.agent_idle("py".into(), 10, caps(&["python"]), ()),
        None
    );
    assert_eq!(
        pair(index.agent_idle("rs".into(), 20, caps(&["rust", "git"]), ())),
        Some(("t1".into(), "rs".into()))
    );
    assert_eq!((index.ready_len(), index.idle_len()), (0, 1));
}

#[test]
fn a_new_task_goes_to_the_longest_idle_capable_agent() {
    let mut index = MatchIndex::default();
    for (id, since) in [("late", 30), ("early", 10), ("middle", 20)] {
        assert_eq!(
            index.agent_idle(id.into(), since, caps(&["code"]), ()),
            None
        );
    }
    assert_eq!(
        pair(index.task_ready("t".into(), 1, 2, caps(&["code"]))),
        Some(("t".into(), "early".into()))
    );
    assert_eq!(
        pair(index.task_ready("u".into(), 2, 2, caps(&["code"]))),
        Some(("u".into(), "middle".into()))
    );
}

#[test]
fn an_agent_takes_the_most_urgent_then_oldest_task_over_every_signature_it_covers() {
    let mut index = MatchIndex::default();
    index.task_ready("normal-old".into(), 1, 2, caps(&[]));
    index.task_ready("urgent-new".into(), 9, 0, caps(&["a", "b"]));
    index.task_ready("urgent-old".into(), 5, 0, caps(&["a"]));
    index.task_ready("not-covered".into(), 0, 0, caps(&["c"]));
    let order: Vec<String> = (0..3)
        .filter_map(|i| {
            pair(index.agent_idle(format!("agent{i}"), i, caps(&["a", "b"]), ())).map(|(t, _)| t)
        })
        .collect();
    assert_eq!(order, vec!["urgent-old", "urgent-new", "normal-old"]);
    assert_eq!(index.ready_len(), 1, "the task nobody covers still waits");
}

#[test]
fn an_agent_must_cover_every_needed_capability() {
    let mut index = MatchIndex::default();
    assert_eq!(index.agent_idle("half".into(), 1, caps(&["a"]), ()), None);
    assert_eq!(index.task_ready("ab".into(), 1, 0, caps(&["a", "b"])), None);
    assert_eq!(
        index.agent_idle("other".into(), 2, caps(&["b", "c"]), ()),
        None
    );
    assert_eq!(
        pair(index.agent_idle("full".into(), 3, caps(&["a", "b", "c"]), ())),
        Some(("ab".into(), "full".into()))
    );
    // No capability needed: any agent will do.
    assert_eq!(
        pair(index.task_ready("any".into(), 2, 2, caps(&[]))),
        Some(("any".into(), "half".into()))
    );
}

#[test]
fn the_agent_whose_attempt_failed_is_served_last() {
    let mut index = MatchIndex::default();
    index.agent_idle("failed".into(), 10, caps(&["x"]), ());
    index.agent_idle("other".into(), 20, caps(&["x"]), ());
    let none = Placement::default;
    let m = index.task_ready_placed("t".into(), (1, 2), &caps(&["x"]), none(), Some("failed"));
    assert_eq!(pair(m), Some(("t".into(), "other".into())));
    // Alone, it still takes the task.
    let m = index.task_ready_placed("u".into(), (2, 2), &caps(&["x"]), none(), Some("failed"));
    assert_eq!(pair(m), Some(("u".into(), "failed".into())));
}

#[test]
fn unready_tasks_and_busy_agents_leave_the_index() {
    let mut index = MatchIndex::default();
    index.task_ready("t".into(), 1, 2, caps(&["x"]));
    assert!(index.task_unready("t"));
    assert!(!index.task_unready("t"));
    assert_eq!(index.agent_idle("a".into(), 1, caps(&["x"]), 7), None);
    assert_eq!(index.agent_busy("a"), Some(7));
    assert_eq!(index.task_ready("u".into(), 2, 2, caps(&["x"])), None);
}

#[test]
fn a_task_already_waiting_is_not_indexed_twice() {
    let mut index: MatchIndex<()> = MatchIndex::default();
    index.task_ready("t".into(), 1, 2, caps(&["x"]));
    index.task_ready("t".into(), 1, 2, caps(&["x"]));
    assert_eq!(index.ready_len(), 1);
    assert!(index.agent_idle("a".into(), 1, caps(&["x"]), ()).is_some());
    assert!(index.agent_idle("b".into(), 2, caps(&["x"]), ()).is_none());
}

#[test]
fn an_agent_idle_again_replaces_its_old_entry() {
    let mut index = MatchIndex::default();
    index.agent_idle("a".into(), 1, caps(&["x"]), "old");
    index.agent_idle("a".into(), 5, caps(&["y"]), "new");
    assert_eq!(index.idle_len(), 1);
    assert_eq!(index.task_ready("t".into(), 1, 2, caps(&["x"])), None);
    let m = index.task_ready("u".into(), 2, 2, caps(&["y"]));
    assert_eq!(m.map(|m| m.agent), Some("new"));
}

fn placed(fair: Option<&str>, holds: &[&str]) -> Placement {
    Placement {
        fair: fair.map(Into::into),
        holds: holds.iter().map(|h| (*h).into()).collect(),
        standing: false,
    }
}

fn standing_run() -> Placement {
    Placement {
        standing: true,
        ..Placement::default()
    }
}

#[test]
fn a_slot_kept_for_standing_orders_takes_only_their_runs() {
    let mut index: MatchIndex<()> = MatchIndex::default();
    // Only its kept slot is free: a reactive task waits for another agent.
    assert!(index
        .agent_free("a".into(), 1, caps(&["x"]), true, ())
        .is_none());
    assert_eq!(index.task_ready("work".into(), 1, 0, caps(&["x"])), None);
    // A standing run goes to the kept slot even before an idle agent.
    assert!(index
        .agent_free("b".into(), 0, caps(&["x"]), false, ())
        .is_some_and(|m| m.task_id == "work" && !m.standing));
    assert!(index
        .agent_free("b".into(), 0, caps(&["x"]), false, ())
        .is_none());
    let m = index
        .task_ready_placed("run".into(), (2, 2), &caps(&["x"]), standing_run(), None)
        .expect("a match");
    assert_eq!((m.agent_id.as_str(), m.standing), ("a", true));
    // Waiting runs are served to a kept slot that frees later.
    index.task_ready_placed(
        "run2".into(),
        (3, 2),
        &caps(&["x"]),
        standing_run(),
        Some("b"),
    );
    assert!(index.ready_len() == 0, "b took run2 (only b was idle)");
    index.task_ready("work2".into(), 4, 0, caps(&["x"]));
    index.task_ready_placed("run3".into(), (5, 2), &caps(&["x"]), standing_run(), None);
    let m = index
        .agent_free("c".into(), 5, caps(&["x"]), true, ())
        .expect("c takes the waiting run");
    assert_eq!((m.task_id.as_str(), m.standing), ("run3", true));
    assert_eq!(index.ready_len(), 1, "work2 still waits");
}

#[test]
fn a_held_task_waits_and_its_release_serves_it() {
    let mut index = MatchIndex::default();
    index.hold("scope:1".into());
    let m = index.task_ready_placed(
        "t".into(),
        (1, 2),
        &caps(&[]),
        placed(None, &["scope:1"]),
        None,
    );
    assert_eq!(m, None);
    // An idle agent passes over it and takes what nothing holds.
    index.task_ready("free".into(), 2, 2, caps(&[]));
    assert_eq!(
        pair(index.agent_idle("a".into(), 1, caps(&[]), ())),
        Some(("free".into(), "a".into()))
    );
    assert_eq!(index.agent_idle("b".into(), 2, caps(&[]), ()), None);
    assert!(index.is_held("scope:1"));
    let served: Vec<_> = index
        .release("scope:1")
        .into_iter()
        .map(|m| (m.task_id, m.agent_id))
        .collect();
    assert_eq!(served, vec![("t".to_string(), "b".to_string())]);
    assert!(index.release("scope:1").is_empty(), "released once");
    // Two holds: both must be free.
    index.hold("scope:2".into());
    index.hold("key:k".into());
    index.task_ready_placed(
        "u".into(),
        (3, 2),
        &caps(&[]),
        placed(Some("k"), &["scope:2", "key:k"]),
        None,
    );
    assert_eq!(index.agent_idle("c".into(), 3, caps(&[]), ()), None);
    assert!(index.release("scope:2").is_empty(), "still held by its key");
    assert_eq!(index.release("key:k").len(), 1);
    assert_eq!(index.ready_len(), 0);
}

#[test]
fn fairness_groups_are_served_round_robin_within_a_priority() {
    let mut index = MatchIndex::default();
    for i in 0..1000 {
        index.task_ready_placed(
            format!("a{i}").into(),
            (i, 2),
            &caps(&[]),
            placed(Some("A"), &[]),
            None,
        );
    }
    for i in 0..10 {
        index.task_ready_placed(
            format!("b{i}").into(),
            (1000 + i, 2),
            &caps(&[]),
            placed(Some("B"), &[]),
            None,
        );
    }
    // An urgent task of either group still goes first.
    index.task_ready_placed(
        "urgent".into(),
        (5000, 0),
        &caps(&[]),
        placed(Some("A"), &[]),
        None,
    );
    let order: Vec<String> = (0..22)
        .filter_map(|i| index.agent_idle(format!("w{i}"), i, caps(&[]), ()))
        .map(|m| m.task_id)
        .collect();
    assert_eq!(order[0], "urgent");
    let b_done = order.iter().filter(|t| t.starts_with('b')).count();
    assert_eq!(b_done, 10, "every B task within the first 21: {order:?}");
    assert!(order
        .iter()
        .position(|t| t == "b9")
        .is_some_and(|p| p <= 20));
}

#[test]
fn an_idle_agent_visits_buckets_not_tasks() {
    // 100,000 ready tasks across 1,000 scope groups and 1,000 keys: what an
    // idle agent or a release visits grows with the buckets, not the tasks.
    let mut index: MatchIndex<()> = MatchIndex::default();
    let groups = 1000u64;
    for g in 0..groups {
        index.hold(format!("scope:{g}").into());
    }
    for i in 0..100_000u64 {
        let g = i % groups;
        let p = placed(Some(&format!("k{}", i % 1000)), &[&format!("scope:{g}")]);
        index.task_ready_placed(format!("t{i}").into(), (i, 2), &caps(&[]), p, None);
    }
    let before = index.ops();
    assert_eq!(
        index.agent_idle("a".into(), 1, caps(&[]), ()),
        None,
        "everything is held"
    );
    let idle_cost = index.ops() - before;
    assert!(
        idle_cost <= 2 * groups + 10,
        "{idle_cost} visits for an idle agent"
    );
    let before = index.ops();
    let served = index.release("scope:7");
    assert_eq!(served.len(), 1);
    let release_cost = index.ops() - before;
    assert!(release_cost <= 20, "{release_cost} visits for a release");
    let before = index.ops();
    index.task_ready_placed(
        "new".into(),
        (200_000, 2),
        &caps(&[]),
        placed(None, &["scope:9"]),
        None,
    );
    assert!(index.ops() - before <= 2);
}

#[test]
fn repair_finds_nothing_while_the_invariant_holds() {
    let mut index = MatchIndex::default();
    index.task_ready("t".into(), 1, 2, caps(&["x"]));
    index.agent_idle("a".into(), 1, caps(&["y"]), ());
    assert!(index.repair().is_empty());
    assert_eq!((index.ready_len(), index.idle_len()), (1, 1));
}
