//! The HTTP edge: the routes, the dashboard's server side, and the server.

pub(crate) mod dashboard;
pub(crate) mod http;
pub(crate) mod server;
pub(crate) mod standby;
