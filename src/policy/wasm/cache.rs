//! Compiled components cached on disk, keyed by the component's SHA-256 and the engine's
//! compatibility hash (wasmtime version, target and settings), so a restart or a reload of
//! an unchanged component skips Cranelift (0.1–5 s) and maps the artefact in well under a
//! millisecond. The directory is `$WASMTA_CACHE_DIR`, else `$XDG_CACHE_HOME/wasmta`, else
//! `~/.cache/wasmta`; `WASMTA_CACHE_DIR=off` disables the cache. Artefacts are written to
//! a temporary name, synced and renamed, so a reader never sees half a file.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::PathBuf;
use wasmtime::component::Component;

fn dir() -> Option<PathBuf> {
    match std::env::var_os("WASMTA_CACHE_DIR") {
        Some(v) if v == "off" || v.is_empty() => None,
        Some(v) => Some(PathBuf::from(v)),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(|x| PathBuf::from(x).join("wasmta"))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/wasmta"))),
    }
    .map(|d| d.join("components"))
}

fn key(engine: &wasmtime::Engine, bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}-{:016x}", h.finish())
}

/// How a component was obtained.
pub enum Source {
    Cache,
    Compiled,
}

/// The component for `bytes`: from the cache, or compiled (and then cached). Blocking:
/// call it off the async workers.
pub fn component(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<(Component, Source)> {
    let Some(dir) = dir() else { return Ok((Component::new(engine, bytes)?, Source::Compiled)) };
    let path = dir.join(format!("{}.cwasm", key(engine, bytes)));
    if path.exists() {
        // SAFETY: the file is one this cache wrote (atomically) for this engine's
        // compatibility hash; wasmtime checks its header and compatibility again.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => return Ok((c, Source::Cache)),
            Err(e) => {
                tracing::warn!("component cache: {} unusable ({e}); recompiling", path.display());
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    let artefact = engine.precompile_component(bytes)?;
    // SAFETY: the bytes were produced just now by this engine.
    let component = unsafe { Component::deserialize(engine, &artefact)? };
    if let Err(e) = store(&dir, &path, &artefact) {
        tracing::warn!("component cache: cannot write {}: {e}", path.display());
    }
    Ok((component, Source::Compiled))
}

fn store(dir: &std::path::Path, path: &std::path::Path, artefact: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), rand::random::<u64>()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(artefact)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
