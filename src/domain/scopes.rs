//! Write scopes: the `agentcom-scopes` crate (shared with the sidecar's
//! pre-commit hook), as the domain uses it.

pub(crate) use agentcom_scopes::{Scope, ScopeError};
