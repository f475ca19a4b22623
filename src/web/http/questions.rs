//! Questions of agents (ext, PROTOCOL.md 6.26): `GET /api/questions` (the
//! tasks waiting for an answer) and `POST /api/tasks/:id/answer` (an operator
//! answers; the holder gets `task_answer`).

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::tasks::queue_error;
use super::{object_body, Caller, Steer};
use crate::domain::task::TaskError;
use crate::error::ApiError;
use crate::hub::HubState;
use crate::protocol::{check_answer, req, text, Field, FieldError, MAX_ANSWER};
use crate::queue::{AnswerTask, Questions, QueueError};

/// Body of `POST /api/tasks/{id}/answer`.
pub(crate) const ANSWER_FIELDS: &[Field] = &[req("answer", text(MAX_ANSWER))];

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/questions", web::get().to(list))
        .route("/api/tasks/{id}/answer", web::post().to(answer));
}

async fn list(_caller: Caller, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    let waiting = state.queue.send(Questions).await?;
    Ok(HttpResponse::Ok().json(json!({"count": waiting.len(), "questions": waiting})))
}

async fn answer(
    caller: Caller,
    _steer: Steer,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let task_id = path.into_inner();
    let obj = object_body(&body, ANSWER_FIELDS)?;
    let answer = check_answer(obj.get("answer").and_then(Value::as_str))
        .map_err(|e| ApiError::Validation(vec![e]))?;
    let task = state
        .queue
        .send(AnswerTask {
            task_id: task_id.clone(),
            answer,
            by: caller.id(),
        })
        .await?
        .map_err(|e| match e {
            QueueError::Task(TaskError::InvalidAnswer) => {
                ApiError::Validation(vec![FieldError::new(
                    "answer",
                    "invalid_value",
                    "must be one of the question's options",
                )])
            }
            other => queue_error(&task_id, other),
        })?;
    Ok(HttpResponse::Ok().json(json!({"status": "answered", "task": task})))
}
