//! The HTTP edge: the routes, the dashboard's server side, and the server.

pub mod dashboard;
pub mod http;
pub mod server;
