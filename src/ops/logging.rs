//! Logging: JSON lines on stderr and, optionally, in a rotating log file, with a
//! level that can be changed while the hub runs (`PUT /api/admin/log-level`).
//!
//! Architecture invariant: the only process-wide state of the hub lives here (the
//! subscriber is global by nature); nothing else reads or writes it, and nothing
//! here knows about tasks or agents.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};

/// Where and how to keep a log file besides stderr.
#[derive(Debug, Clone)]
pub struct LogFile {
    pub path: PathBuf,
    /// `never`, `hourly` or `daily`.
    pub rotation: String,
    /// How many rotated files to keep.
    pub keep: usize,
}

struct Control {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Mutex<String>,
}

static CONTROL: OnceLock<Control> = OnceLock::new();

/// Why a level or a log file was refused.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Not a level or filter directive (`error`, `warn`, `info`, `debug`, `trace`,
    /// or e.g. `agentcom_hub=debug,actix_web=warn`).
    #[error("invalid log level {0:?}: {1}")]
    InvalidLevel(String, String),
    /// The log file's directory cannot be used.
    #[error("cannot open log file {0}: {1}")]
    File(PathBuf, String),
    /// Logging was not set up through [`init`] in this process.
    #[error("log level control is not available in this process")]
    Unavailable,
}

fn filter(spec: &str) -> Result<EnvFilter, LogError> {
    if spec.trim().is_empty() || spec.len() > 1024 {
        return Err(LogError::InvalidLevel(
            spec.into(),
            "must be 1 to 1024 characters".into(),
        ));
    }
    // EnvFilter reads a bare word as a target name; insist on levels, so a typo
    // ("shout") is refused rather than silencing everything else.
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    for part in spec.split(',').map(str::trim) {
        let level = part.rsplit_once('=').map_or(part, |(_, l)| l);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(LogError::InvalidLevel(
                spec.into(),
                format!("{part:?}: expected a level (off, error, warn, info, debug, trace) or target=level"),
            ));
        }
    }
    EnvFilter::try_new(spec).map_err(|e| LogError::InvalidLevel(spec.into(), e.to_string()))
}

/// Installs the global subscriber: `RUST_LOG` if set, else `level`; JSON lines to
/// stderr, and to `file` when given (written synchronously, so nothing logged
/// before a crash is lost). Panics are logged as structured errors.
pub fn init(level: &str, file: Option<&LogFile>) -> Result<(), LogError> {
    let spec = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| filter(s).is_ok())
        .unwrap_or_else(|| level.to_string());
    let (filter_layer, handle) = reload::Layer::new(filter(&spec)?);
    let stderr = fmt::layer()
        .json()
        .with_current_span(false)
        .with_writer(std::io::stderr);
    let file_layer = match file {
        Some(f) => Some(
            fmt::layer()
                .json()
                .with_current_span(false)
                .with_ansi(false)
                .with_writer(rolling_file(f)?)
                .boxed(),
        ),
        None => None,
    };
    tracing_subscriber::registry()
        .with(filter_layer)
        .with(stderr)
        .with(file_layer)
        .try_init()
        .map_err(|_| LogError::Unavailable)?;
    let _ = CONTROL.set(Control {
        handle,
        current: Mutex::new(spec),
    });
    // Panics are contained by the actors (see `TaskQueue::contained`); make sure each
    // one is still logged as a structured error with its location.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "panic");
    }));
    Ok(())
}

fn rolling_file(f: &LogFile) -> Result<tracing_appender::rolling::RollingFileAppender, LogError> {
    use tracing_appender::rolling::{Builder, Rotation};
    let fail = |reason: String| LogError::File(f.path.clone(), reason);
    let rotation = match f.rotation.as_str() {
        "never" => Rotation::NEVER,
        "hourly" => Rotation::HOURLY,
        "daily" => Rotation::DAILY,
        other => {
            return Err(fail(format!(
                "unknown rotation {other:?} (never, hourly, daily)"
            )))
        }
    };
    let dir = f
        .path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    let name = f
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| fail("needs a file name".into()))?;
    std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
    Builder::new()
        .rotation(rotation)
        .filename_prefix(name)
        .max_log_files(f.keep.max(1))
        .build(&dir)
        .map_err(|e| fail(e.to_string()))
}

/// The filter in force.
pub(crate) fn level() -> Result<String, LogError> {
    let control = CONTROL.get().ok_or(LogError::Unavailable)?;
    Ok(control
        .current
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone())
}

/// Replaces the filter at once, for every thread.
pub(crate) fn set_level(spec: &str) -> Result<(), LogError> {
    let control = CONTROL.get().ok_or(LogError::Unavailable)?;
    let new = filter(spec)?;
    control
        .handle
        .reload(new)
        .map_err(|_| LogError::Unavailable)?;
    *control.current.lock().unwrap_or_else(|p| p.into_inner()) = spec.to_string();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_directives_are_checked() {
        for good in ["info", "debug", "agentcom_hub=debug,actix_web=warn", "warn"] {
            assert!(filter(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "   ",
            "loud=",
            "agentcom_hub=shout",
            "shout",
            "info,,debug",
        ] {
            assert!(
                matches!(filter(bad), Err(LogError::InvalidLevel(..))),
                "{bad}"
            );
        }
    }

    #[test]
    fn unknown_rotation_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let f = LogFile {
            path: dir.path().join("hub.log"),
            rotation: "weekly".into(),
            keep: 3,
        };
        assert!(matches!(rolling_file(&f), Err(LogError::File(..))));
    }
}
