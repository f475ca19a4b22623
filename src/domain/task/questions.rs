//! Questions (ext, PROTOCOL.md 6.26): the holder asks and keeps the task
//! (`input_required`, its lease stops counting); an answer sends it back to
//! work; a question that times out takes its default, else the task fails
//! without a retry (nobody was there to answer).

use serde_json::json;

use super::*;

/// What the holder asks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ask {
    pub question: String,
    pub options: Vec<String>,
    pub default: Option<String>,
    pub timeout_ms: Option<u64>,
}

/// What became of a question that timed out.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TimedOut {
    /// Its default answered it.
    Defaulted(Question),
    /// No default: the task is dead-lettered.
    Failed,
}

impl Task {
    /// The question the task waits on (`input_required`, unanswered).
    pub(crate) fn waiting_question(&self) -> Option<&Question> {
        if self.status != TaskStatus::InputRequired {
            return None;
        }
        self.question.as_ref().filter(|q| q.answer.is_none())
    }

    /// `task_input_required` from the holder at `generation`: the task waits
    /// for an answer. Asking the same question again is harmless. Answers the
    /// question.
    pub(crate) fn ask(
        &mut self,
        agent: &str,
        generation: u64,
        ask: Ask,
        now: i64,
    ) -> Result<Question, TaskError> {
        self.check_holder(agent, Some(generation))?;
        if self.status == TaskStatus::InputRequired {
            return match &self.question {
                Some(q) if q.question == ask.question && q.answer.is_none() => Ok(q.clone()),
                _ => Err(TaskError::InvalidState(self.status)),
            };
        }
        // The same question again at this generation, already answered: a
        // report re-sent after a reconnect (the answer goes out again with the
        // recovery), not a new question.
        if let Some(q) = self
            .question
            .as_ref()
            .filter(|q| q.generation == generation && q.question == ask.question)
        {
            return Ok(q.clone());
        }
        let id = self.question.as_ref().map_or(1, |q| q.id + 1);
        let q = Question {
            id,
            question: ask.question,
            options: ask.options,
            default: ask.default,
            asked_at: now,
            timeout_at: ask.timeout_ms.map(|t| now.saturating_add(t as i64)),
            generation,
            answer: None,
            answered_by: None,
            answered_at: None,
            approval: None,
            budget: None,
        };
        self.status = TaskStatus::InputRequired;
        self.record(
            "input_required",
            now,
            json!({"agent_id": agent, "generation": generation, "question_id": id,
                   "question": q.question, "options": q.options, "default": q.default,
                   "timeout_at": q.timeout_at}),
        );
        self.question = Some(q.clone());
        Ok(q)
    }

    /// An answer from `by`: the holder works on. With options, the answer must
    /// be one of them.
    pub(crate) fn answer(
        &mut self,
        answer: String,
        by: &str,
        now: i64,
    ) -> Result<Question, TaskError> {
        if self.status != TaskStatus::InputRequired {
            return Err(TaskError::InvalidState(self.status));
        }
        let Some(q) = self.question.as_mut() else {
            return Err(TaskError::InvalidState(self.status));
        };
        if !q.options.is_empty() && !q.options.contains(&answer) {
            return Err(TaskError::InvalidAnswer);
        }
        q.answer = Some(answer);
        q.answered_by = Some(by.to_string());
        q.answered_at = Some(now);
        let q = q.clone();
        self.status = TaskStatus::Assigned;
        self.record(
            "answered",
            now,
            json!({"by": by, "question_id": q.id, "answer": q.answer,
                   "agent_id": self.assigned_to, "generation": self.generation}),
        );
        Ok(q)
    }

    /// The question's time is up: its default answers it (actor `hub`), or
    /// the task is dead-lettered `input_timeout`.
    pub(crate) fn question_timed_out(&mut self, now: i64) -> Result<TimedOut, TaskError> {
        let due = self
            .question
            .as_ref()
            .filter(|q| q.answer.is_none())
            .and_then(|q| q.timeout_at)
            .is_some_and(|at| at <= now);
        if self.status != TaskStatus::InputRequired || !due {
            return Err(TaskError::InvalidState(self.status));
        }
        let default = self.question.as_ref().and_then(|q| q.default.clone());
        if let Some(answer) = default {
            return self.answer(answer, "hub", now).map(TimedOut::Defaulted);
        }
        let agent = self.assigned_to.clone();
        let generation = self.generation;
        self.close_attempt(generation, "failed", Some("input_timeout"), None, now);
        self.status = TaskStatus::DeadLetter;
        self.last_error = Some("input_timeout: the question was not answered in time".into());
        self.record(
            "dead_letter",
            now,
            json!({"agent_id": agent, "generation": generation, "error": "input_timeout"}),
        );
        Ok(TimedOut::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(options: &[&str], default: Option<&str>, timeout_ms: Option<u64>) -> Ask {
        Ask {
            question: "Deploy to production?".into(),
            options: options.iter().map(|o| o.to_string()).collect(),
            default: default.map(str::to_string),
            timeout_ms,
        }
    }

    fn held() -> Task {
        let mut t = crate::domain::task::tests::task(3);
        t.assign("a", 10).expect("assign");
        t.accept("a", Some(t.generation), 11).expect("accept");
        t
    }

    #[test]
    fn a_question_holds_the_task_until_answered() {
        let mut t = held();
        let g = t.generation;
        let q = t
            .ask("a", g, asked(&["yes", "no"], None, None), 20)
            .expect("ask");
        assert_eq!((q.id, t.status), (1, TaskStatus::InputRequired));
        assert_eq!(t.assigned_to.as_deref(), Some("a"), "it keeps its holder");
        assert_eq!(
            t.ask("a", g, asked(&[], None, None), 21).map(|q| q.id),
            Ok(1)
        );
        assert_eq!(
            t.answer("maybe".into(), "ops", 30),
            Err(TaskError::InvalidAnswer)
        );
        let a = t.answer("yes".into(), "ops", 30).expect("answer");
        assert_eq!(
            (a.answer.as_deref(), a.answered_by.as_deref()),
            (Some("yes"), Some("ops"))
        );
        assert_eq!(t.status, TaskStatus::Assigned);
        assert_eq!(
            t.answer("no".into(), "ops", 31),
            Err(TaskError::InvalidState(TaskStatus::Assigned))
        );
        let repeat = t
            .ask("a", g, asked(&["yes", "no"], None, None), 40)
            .expect("repeat");
        assert_eq!(
            (repeat.id, t.status),
            (1, TaskStatus::Assigned),
            "a re-sent question"
        );
        let mut other = asked(&[], None, None);
        other.question = "And staging?".into();
        let next = t.ask("a", g, other, 40).expect("ask again");
        assert_eq!(next.id, 2);
        assert!(
            t.ask("b", g, asked(&[], None, None), 41).is_err(),
            "only the holder asks"
        );
    }

    #[test]
    fn a_timeout_takes_the_default_or_fails_the_task() {
        let mut t = held();
        let g = t.generation;
        t.ask("a", g, asked(&[], Some("no"), Some(100)), 20)
            .expect("ask");
        assert!(t.question_timed_out(119).is_err(), "not yet");
        match t.question_timed_out(120).expect("due") {
            TimedOut::Defaulted(q) => assert_eq!(q.answered_by.as_deref(), Some("hub")),
            other => panic!("{other:?}"),
        }
        let mut t = held();
        t.ask("a", t.generation, asked(&[], None, Some(100)), 20)
            .expect("ask");
        assert_eq!(t.question_timed_out(200), Ok(TimedOut::Failed));
        assert_eq!(t.status, TaskStatus::DeadLetter);
        assert_eq!(t.retry_count, 0, "no retry is spent on it");
    }

    #[test]
    fn a_reclaim_while_asking_requeues_and_drops_the_question() {
        let mut t = held();
        let g = t.generation;
        t.ask("a", g, asked(&[], None, None), 20).expect("ask");
        t.reclaim("a", g, "disconnect", 30).expect("reclaim");
        assert_eq!(t.status, TaskStatus::Queued);
        assert!(t.question.is_none());
    }
}
