//! Criterion's results, read back for the report: every `new/estimates.json` under
//! `target/criterion` (median time per iteration) and the percentile lines the store bench
//! prints (`store_append/NAME: p50 X us, p99 Y us ...`) from the saved `cargo bench` output.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

/// Median nanoseconds per iteration, by benchmark path (`store_append/single/sqlite_normal`),
/// of the results written at or after `since` (so that a bench skipped this time is not
/// reported with an old figure).
pub fn estimates(root: &Path, since: Option<SystemTime>) -> BTreeMap<String, f64> {
    let mut found = BTreeMap::new();
    walk(root, root, since.unwrap_or(SystemTime::UNIX_EPOCH), &mut found);
    found
}

fn walk(root: &Path, dir: &Path, since: SystemTime, found: &mut BTreeMap<String, f64>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            let estimates = path.join("estimates.json");
            let fresh = std::fs::metadata(&estimates).and_then(|m| m.modified()).is_ok_and(|at| at >= since);
            if !fresh {
                continue;
            }
            let median = std::fs::read_to_string(&estimates)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|value| value["median"]["point_estimate"].as_f64());
            if let (Some(median), Some(parent)) = (median, path.parent())
                && let Ok(name) = parent.strip_prefix(root)
            {
                found.insert(name.display().to_string(), median);
            }
        } else if path.file_name().is_none_or(|n| n != "report") {
            walk(root, &path, since, found);
        }
    }
}

/// The p50 in microseconds the store bench printed for this target (`sqlite_normal`).
pub fn printed_append_p50(log: &str, target: &str) -> Option<f64> {
    let prefix = format!("store_append/{target}: p50 ");
    let line = log.lines().find(|l| l.starts_with(&prefix))?;
    line[prefix.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_percentiles_are_read() {
        let log = "store_floor/sqlite: `SELECT 1` p50 3.0 us\nstore_append/sqlite_normal: p50 35.2 us, p99 80.1 us over 2000 single appends\n";
        assert_eq!(printed_append_p50(log, "sqlite_normal"), Some(35.2));
        assert_eq!(printed_append_p50(log, "sqlite"), None);
    }
}
