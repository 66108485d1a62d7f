//! KumoMTA's configuration monitor: the files matching a set of globs (by default
//! `/opt/kumomta/etc/**/*.{lua,json,toml,yaml}`, replaced with
//! `kumo.set_config_monitor_globs`) are fingerprinted every 10 seconds; when the
//! fingerprint changes (a file added, removed or edited) the configuration epoch moves and
//! a new policy generation is built, so data files such as `queues.toml` take effect
//! without a restart. The `glob` crate has no `{a,b}` alternatives, so they are expanded
//! here first.

use super::Runtime;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// KumoMTA's default set.
pub const DEFAULT_GLOBS: &[&str] = &["/opt/kumomta/etc/**/*.{lua,json,toml,yaml}"];

/// How often the files are looked at.
pub const POLL_INTERVAL: Duration = Duration::from_secs(10);

/// Replaces the monitored globs; each must be a valid pattern.
pub fn set_globs(runtime: &Runtime, globs: Vec<String>) -> Result<(), String> {
    for g in &globs {
        for p in expand_braces(g)? {
            glob::Pattern::new(&p).map_err(|e| format!("{g:?}: {e}"))?;
        }
    }
    *runtime.monitor_globs.lock() = Some(globs);
    Ok(())
}

/// The monitored globs.
pub fn globs(runtime: &Runtime) -> Vec<String> {
    runtime.monitor_globs.lock().clone().unwrap_or_else(|| DEFAULT_GLOBS.iter().map(|s| s.to_string()).collect())
}

/// `{a,b}` alternatives expanded, nested ones included.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>, String> {
    let Some(open) = pattern.find('{') else {
        if pattern.contains('}') {
            return Err(format!("{pattern:?}: unbalanced '}}'"));
        }
        return Ok(vec![pattern.to_string()]);
    };
    let (mut depth, mut close, mut splits) = (0, None, vec![]);
    for (i, c) in pattern[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            ',' if depth == 1 => splits.push(open + i),
            _ => {}
        }
    }
    let close = close.ok_or_else(|| format!("{pattern:?}: unbalanced '{{'"))?;
    let mut bounds = vec![open];
    bounds.extend(splits);
    bounds.push(close);
    let (head, tail) = (&pattern[..open], &pattern[close + 1..]);
    let mut out = vec![];
    for w in bounds.windows(2) {
        out.extend(expand_braces(&format!("{head}{}{tail}", &pattern[w[0] + 1..w[1]]))?);
    }
    Ok(out)
}

/// The de-duplicated, sorted files the globs match now (`kumo.eval_config_monitor_globs`).
pub fn matched(globs: &[String]) -> Result<Vec<PathBuf>, String> {
    let mut out = std::collections::BTreeSet::new();
    for g in globs {
        for p in expand_braces(g)? {
            for entry in glob::glob(&p).map_err(|e| format!("{g:?}: {e}"))? {
                // an unreadable directory matches nothing, as a missing one does
                if let Ok(path) = entry
                    && path.is_file()
                {
                    out.insert(path);
                }
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// A fingerprint of the names and contents of `files` (a file that cannot be read counts
/// as its error, so it changes when it becomes readable).
fn fingerprint(files: &[PathBuf]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        match std::fs::read(f) {
            Ok(bytes) => bytes.hash(&mut h),
            Err(e) => e.kind().hash(&mut h),
        }
    }
    h.finish()
}

/// The fingerprint of what `globs` match now.
fn current(globs: &[String]) -> Option<u64> {
    match matched(globs) {
        Ok(files) => Some(fingerprint(&files)),
        Err(e) => {
            tracing::warn!("config monitor: {e}");
            None
        }
    }
}

/// Starts polling (every `interval`) in the background, until the server stops.
pub fn start(runtime: &Arc<Runtime>, interval: Duration) {
    let mut last = current(&globs(runtime));
    let runtime = Arc::downgrade(runtime);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let Some(rt) = runtime.upgrade() else { return };
            if rt.shutdown.is_set() {
                return;
            }
            let watched = globs(&rt);
            let w = watched.clone();
            let now = tokio::task::spawn_blocking(move || current(&w)).await.ok().flatten();
            if now.is_some() && now != last {
                if last.is_some() {
                    tracing::info!("config monitor: files matching {watched:?} changed");
                    rt.request_reload("config monitor: a monitored file changed");
                    rt.epoch.bump();
                }
                last = now;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_expand_like_kumomtas_default() {
        assert_eq!(
            expand_braces("/etc/**/*.{lua,json}").unwrap(),
            vec!["/etc/**/*.lua".to_string(), "/etc/**/*.json".to_string()]
        );
        assert_eq!(expand_braces("a{b,c{d,e}}f").unwrap(), vec!["abf", "acdf", "acef"]);
        assert!(expand_braces("a{b,c").is_err());
        assert!(expand_braces("a}b").is_err());
    }

    #[test]
    fn fingerprint_moves_when_a_file_changes_or_appears() {
        let d = tempfile::tempdir().unwrap();
        let globs = vec![format!("{}/**/*.{{toml,json}}", d.path().display())];
        std::fs::write(d.path().join("a.toml"), "x = 1").unwrap();
        let first = fingerprint(&matched(&globs).unwrap());
        std::fs::write(d.path().join("a.toml"), "x = 2").unwrap();
        let second = fingerprint(&matched(&globs).unwrap());
        assert_ne!(first, second);
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/b.json"), "{}").unwrap();
        std::fs::write(d.path().join("sub/c.txt"), "not matched").unwrap();
        let files = matched(&globs).unwrap();
        assert_eq!(files.len(), 2, "{files:?}");
        assert_ne!(fingerprint(&files), second);
    }
}
