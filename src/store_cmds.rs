//! The commands on a stopped hub's store (or, with --hub, a running one's):
//! backup, verify-backup, restore, compact, migrate, verify-archive.

use std::path::PathBuf;

use agentcom_hub::backup::{self, Progress};
use agentcom_hub::config::Config;
use agentcom_hub::error::StoreError;
use agentcom_hub::{Store, DEFAULT_CACHE_BYTES};

use crate::{accepted, hub_request, load_config, Common, Fatal, Target};

/// Offline: opens a stopped hub's existing store (never creates one).
pub(crate) fn open_existing_store(config: &Config) -> Result<Store, Fatal> {
    if !config.data_dir.join("db").is_file() {
        return Err(Fatal {
            code: 1,
            message: format!("no store in {}", config.data_dir.display()),
        });
    }
    match Store::open(&config.data_dir) {
        Ok(store) => Ok(store),
        Err(StoreError::Locked(dir)) => Err(Fatal {
            code: 1,
            message: format!(
                "data directory {} is in use by a running hub: stop it, or use --hub URL \
                 (admin token in AGENTCOM_ADMIN_TOKEN) to ask the hub itself",
                dir.display()
            ),
        }),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn print_summary(verb: &str, s: &backup::BackupSummary) {
    println!("{verb} {}", s.path.display());
    println!(
        "  created_at: {} ({})  hub version: {}  format: {}",
        s.created_at,
        backup::stamp_ms(s.created_at),
        s.hub_version,
        s.format_version
    );
    println!(
        "  size: {} bytes  trees: {}  records: {}",
        s.size_bytes,
        s.trees.len(),
        s.records
    );
    for (name, n) in &s.trees {
        println!("    {name}: {n}");
    }
    println!("  sha256: {}", s.sha256);
}

pub(crate) fn backup_cmd(target: Target, out_dir: Option<PathBuf>) -> Result<(), Fatal> {
    if let Some(hub) = &target.hub {
        if out_dir.is_some() {
            return Err(Fatal {
                code: 2,
                message: "--out-dir cannot be used with --hub (the hub writes into its backup_dir)"
                    .into(),
            });
        }
        let answer = accepted(hub_request(hub, "POST", "/api/admin/backup", None)?)?;
        println!(
            "backup written by the hub: {}",
            answer["path"].as_str().unwrap_or("?")
        );
        println!(
            "  created_at: {}  size: {} bytes  records: {}",
            answer["created_at"], answer["size_bytes"], answer["records"]
        );
        println!("  sha256: {}", answer["sha256"].as_str().unwrap_or("?"));
        return Ok(());
    }
    let config = load_config(&target.common, None)?;
    let store = open_existing_store(&config)?;
    let dir = out_dir.clone().unwrap_or_else(|| config.backup_dir());
    let summary = backup::take_backup(&store, &dir, &Progress::with_bar("backup", None))?;
    store.seal_and_close()?;
    if out_dir.is_none() {
        for pruned in backup::prune_backups(&dir, config.backup_keep as usize)? {
            println!("pruned {}", pruned.display());
        }
    }
    print_summary("backup written:", &summary);
    Ok(())
}

pub(crate) fn verify_backup_cmd(file: PathBuf) -> Result<(), Fatal> {
    let total = std::fs::metadata(&file).map(|m| m.len()).ok();
    let summary = backup::verify_backup(&file, &Progress::with_bar("verify", total))?;
    print_summary("OK", &summary);
    Ok(())
}

pub(crate) fn migrate_cmd(from: &str, to: &str, failover_ms: u64) -> Result<(), Fatal> {
    use agentcom_hub::migrate::{migrate, Endpoint};
    let bad = |message: String| Fatal { code: 2, message };
    let (from, to) = (
        Endpoint::parse(from).map_err(bad)?,
        Endpoint::parse(to).map_err(bad)?,
    );
    if !(1_000..=600_000).contains(&failover_ms) {
        return Err(bad("--failover-ms must be between 1000 and 600000".into()));
    }
    let work = std::env::temp_dir().join(format!("agentcom-migrate-{}", std::process::id()));
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos} records copied ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let report = migrate(
        &from,
        &to,
        &work,
        std::time::Duration::from_millis(failover_ms),
        &mut |n| {
            if n % 1_000 == 0 {
                bar.set_position(n);
            }
        },
    );
    bar.finish_and_clear();
    let _ = std::fs::remove_dir_all(&work);
    let report = report?;
    println!(
        "copied {} records; verified: source and target digests equal (sha256 {})",
        report.target.records, report.target.sha256
    );
    Ok(())
}

pub(crate) fn verify_archive_cmd(file: PathBuf, id: Option<String>) -> Result<(), Fatal> {
    let (head, found) =
        agentcom_hub::archive::verify_archive(&file, id.as_deref()).map_err(|e| Fatal {
            code: 1,
            message: format!("{} is not a good archive: {e}", file.display()),
        })?;
    println!(
        "OK {}: {} {} records, made {}",
        file.display(),
        head["records_read"],
        head["kind"].as_str().unwrap_or("?"),
        head["created_at"]
    );
    match (id, found) {
        (Some(_), Some(record)) => println!("{record}"),
        (Some(id), None) => {
            return Err(Fatal {
                code: 1,
                message: format!("no record {id} in {}", file.display()),
            })
        }
        (None, _) => {}
    }
    Ok(())
}

pub(crate) fn restore_cmd(file: PathBuf, common: Common) -> Result<(), Fatal> {
    let config = load_config(&common, None)?;
    let total = std::fs::metadata(&file).map(|m| m.len()).ok();
    let report = backup::restore_file(
        &file,
        &config.data_dir,
        DEFAULT_CACHE_BYTES,
        &Progress::with_bar("restore", total),
    )?;
    println!(
        "restored {} records from {} (backup made {}) into {}",
        report.backup.records,
        file.display(),
        backup::stamp_ms(report.backup.created_at),
        report.data_dir.display()
    );
    match &report.previous_moved_to {
        Some(previous) => println!("previous data directory kept at {}", previous.display()),
        None => println!("there was no previous data directory"),
    }
    Ok(())
}

pub(crate) fn compact_cmd(target: Target) -> Result<(), Fatal> {
    let report = match &target.hub {
        Some(hub) => {
            let answer = accepted(hub_request(hub, "POST", "/api/admin/compact", None)?)?;
            (
                answer["bytes_before"].as_u64().unwrap_or_default(),
                answer["bytes_after"].as_u64().unwrap_or_default(),
                answer["records"].as_u64().unwrap_or_default(),
            )
        }
        None => {
            let config = load_config(&target.common, None)?;
            let store = open_existing_store(&config)?;
            let total = store.size_on_disk();
            let report = backup::compact(&store, &Progress::with_bar("compact", Some(total)))?;
            store.seal_and_close()?;
            (report.bytes_before, report.bytes_after, report.records)
        }
    };
    println!(
        "compacted: {} bytes -> {} bytes, {} records",
        report.0, report.1, report.2
    );
    Ok(())
}
