//! The hub's standing-order clock, driven by a test: a file holding the time in
//! ms, written atomically (the hub never reads half a number). Standing-order
//! tests move time with it instead of sleeping through minutes.

use std::path::{Path, PathBuf};

/// A clock file in its own temporary directory.
pub struct HubClock {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl HubClock {
    /// A clock that says `at` (ms since the epoch).
    pub fn new(at: i64) -> HubClock {
        let dir = tempfile::tempdir().expect("clock dir");
        let clock = HubClock {
            path: dir.path().join("now"),
            _dir: dir,
        };
        clock.set(at);
        clock
    }

    /// From now on the clock says `at`.
    pub fn set(&self, at: i64) {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, at.to_string()).expect("write clock");
        std::fs::rename(&tmp, &self.path).expect("move clock into place");
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hub config lines: standing orders read this clock, every 50 ms.
    pub fn config(&self) -> String {
        format!(
            "calendar_clock_file = {:?}\nstanding_order_tick_ms = 50\n",
            self.path.display().to_string()
        )
    }
}
