//! `wasmta logs`: reads the server's log segments (zstd JSON lines) straight from the log
//! directory, including the segment being written (which `zstdcat` refuses: its last
//! frame is not finished; every batch is a complete zstd block, so it reads up to the
//! last record written). Filters by id, type and time; `--follow` keeps printing new
//! records as they are written, across segment changes.

use clap::Args;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct LogsArgs {
    /// The log directory (`configure_local_logs { log_dir }`).
    #[arg(long, env = "WASMTA_LOGS", default_value = "data/logs")]
    dir: PathBuf,
    /// Keep printing records as they are written.
    #[arg(long, short)]
    follow: bool,
    /// Only this message's records, in order (repeatable).
    #[arg(long)]
    id: Vec<String>,
    /// Only records of this type: Reception, Delivery, Bounce, TransientFailure, ... (repeatable).
    #[arg(long = "type", value_parser = parse_type)]
    kinds: Vec<String>,
    /// Only records from this long ago on ("1h", "30m"), or since this RFC 3339 time.
    #[arg(long, value_parser = parse_since)]
    since: Option<i64>,
    /// Print the records as JSON lines, as they are stored.
    #[arg(long)]
    json: bool,
}

/// A record type's name, in any case; an unknown one is an error listing them.
fn parse_type(text: &str) -> Result<String, String> {
    crate::logs::record::RECORD_TYPES
        .iter()
        .find(|t| t.eq_ignore_ascii_case(text))
        .map(|t| t.to_string())
        .ok_or_else(|| format!("no record type {text:?}: one of {}", crate::logs::record::RECORD_TYPES.join(", ")))
}

/// A unix time from "1h" (that long ago) or an RFC 3339 time.
fn parse_since(text: &str) -> Result<i64, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp());
    }
    let d = crate::config::units::parse_duration(text)
        .map_err(|e| format!("{e} (expected a duration such as 1h, or an RFC 3339 time)"))?;
    Ok(chrono::Utc::now().timestamp() - d.as_secs() as i64)
}

/// The segment files, oldest first (the writer names them by UTC time).
fn segments(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit())))
        .collect();
    files.sort();
    Ok(files)
}

/// Every complete record line of a segment, finished or being written.
fn read_lines(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut decoder = zstd::Decoder::new(file).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
            // nothing readable at all in a non-empty file: not one of our segments
            Err(e) if text.is_empty() && path.metadata().is_ok_and(|m| m.len() > 0) => {
                return Err(format!("{}: not a log segment ({e})", path.display()));
            }
            // the live segment ends in an unfinished frame: what came before is whole
            Err(_) => break,
        }
    }
    let mut lines: Vec<Vec<u8>> = text.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    // the part after the last newline is a record still being written (or nothing)
    lines.pop();
    Ok(lines)
}

struct Filter {
    ids: Vec<String>,
    kinds: Vec<String>,
    since: Option<i64>,
}

impl Filter {
    fn keeps(&self, r: &Value) -> bool {
        (self.ids.is_empty() || self.ids.iter().any(|id| r["id"] == id.as_str()))
            && (self.kinds.is_empty()
                || self.kinds.iter().any(|k| r["type"].as_str().is_some_and(|t| t.eq_ignore_ascii_case(k))))
            && self.since.is_none_or(|s| r["timestamp"].as_i64().is_some_and(|t| t >= s))
    }
}

/// One record as a line: time, type, id, envelope, queue, response.
fn human(r: &Value) -> String {
    let recipient = match &r["recipient"] {
        Value::Array(list) => list.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(","),
        v => v.as_str().unwrap_or_default().to_string(),
    };
    let response = &r["response"];
    let enhanced = match &response["enhanced_code"] {
        Value::Object(e) => format!(" {}.{}.{}", e["class"], e["subject"], e["detail"]),
        _ => String::new(),
    };
    let time = r["event_time"].as_str().map(|t| t.replace("+00:00", "Z")).unwrap_or_default();
    format!(
        "{time} {:<16} {} <{}> -> <{recipient}> queue={} {}{enhanced} {}",
        r["type"].as_str().unwrap_or("?"),
        r["id"].as_str().unwrap_or("?"),
        r["sender"].as_str().unwrap_or_default(),
        r["queue"].as_str().unwrap_or_default(),
        response["code"],
        response["content"].as_str().unwrap_or_default().replace(['\r', '\n'], " "),
    )
}

fn print(r: &Value, raw: &[u8], json: bool) {
    if json {
        println!("{}", String::from_utf8_lossy(raw));
    } else {
        println!("{}", human(r));
    }
}

/// Reads (and with `--follow`, keeps reading) the log directory.
pub async fn run(args: LogsArgs) -> ExitCode {
    let filter = Filter { ids: args.id.clone(), kinds: args.kinds.clone(), since: args.since };
    // records already printed per segment
    let mut seen: HashMap<PathBuf, usize> = HashMap::new();
    let mut warned: std::collections::HashSet<PathBuf> = Default::default();
    let mut printed = 0usize;
    let mut said_empty = false;
    loop {
        let files = match segments(&args.dir) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut batch: Vec<(Value, Vec<u8>)> = vec![];
        for (i, path) in files.iter().enumerate() {
            let done = seen.get(path).copied().unwrap_or(0);
            // a finished segment (a newer one exists) read to its end is not read again
            if done == usize::MAX {
                continue;
            }
            let lines = match read_lines(path) {
                Ok(l) => l,
                Err(e) => {
                    if warned.insert(path.clone()) {
                        eprintln!("warning: skipping {e}");
                    }
                    continue;
                }
            };
            for raw in lines.iter().skip(done) {
                match serde_json::from_slice::<Value>(raw) {
                    Ok(r) if filter.keeps(&r) => batch.push((r, raw.clone())),
                    Ok(_) => {}
                    Err(e) => eprintln!("warning: {}: a line that is not a record: {e}", path.display()),
                }
            }
            let finished = i + 1 < files.len();
            seen.insert(path.clone(), if finished { usize::MAX } else { lines.len() });
        }
        // one message's history in the order it happened
        if !filter.ids.is_empty() {
            batch.sort_by_key(|(r, _)| r["timestamp"].as_i64().unwrap_or_default());
        }
        for (r, raw) in &batch {
            print(r, raw, args.json);
        }
        printed += batch.len();
        if files.is_empty() && !said_empty {
            said_empty = true;
            eprintln!("warning: no log segments in {} (is it configure_local_logs' log_dir?)", args.dir.display());
        }
        if !args.follow {
            if printed == 0 && !filter.ids.is_empty() {
                eprintln!("warning: no records for {}", filter.ids.join(", "));
            }
            return ExitCode::SUCCESS;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
