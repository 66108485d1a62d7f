//! What `wasmta check` (like `kumod --validate`) and the start-up log say about a policy
//! beyond running it: every `kumo.*` name its texts use is looked up in the `kumo` table
//! (an unknown name is an error with file and line, found even in handlers that have not
//! run), names wasmta accepts without acting on them yet are listed once, and so are
//! events it accepts but does not call yet.

use mlua::{Lua, Table, Value as LuaValue};
use std::collections::HashSet;
use std::path::Path;

/// Events KumoMTA calls that wasmta accepts but does not call yet, with what to expect.
pub const NOT_DISPATCHED: &[(&str, &str)] = &[
    ("smtp_server_rewrite_response", "replies are sent as wasmta writes them"),
    ("throttle_insert_ready_queue", "use the queue's max_message_rate"),
    ("xfer_message_received", "node-to-node transfer is not implemented"),
    ("rebind_message", "rebind never triggers the event yet"),
    ("get_acl_definition", "HTTP access is decided by trusted_hosts and the auth events"),
    ("shutdown_logging", "not called at shutdown yet"),
    ("main", "script mode is not implemented"),
    ("message_requeued", "KumoMTA's old, never-called name; use requeue_message"),
];

/// The dotted names under the `kumo` table (tables and functions, three levels deep).
fn known_names(kumo: &Table) -> mlua::Result<HashSet<String>> {
    fn walk(t: &Table, prefix: &str, depth: usize, out: &mut HashSet<String>) -> mlua::Result<()> {
        for pair in t.clone().pairs::<LuaValue, LuaValue>() {
            let (k, v) = pair?;
            let LuaValue::String(k) = k else { continue };
            let name = format!("{prefix}.{}", k.to_str()?);
            if let LuaValue::Table(sub) = &v
                && depth < 3
            {
                walk(sub, &name, depth + 1, out)?;
            }
            out.insert(name);
        }
        Ok(())
    }
    let mut out = HashSet::new();
    walk(kumo, "kumo", 1, &mut out)?;
    Ok(out)
}

/// `text` with Lua comments and the contents of quoted strings blanked (line numbers kept).
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                if c == '\\' {
                    out.push(' ');
                    if let Some(n) = chars.next() {
                        out.push(if n == '\n' { n } else { ' ' });
                    }
                } else if c == q || c == '\n' {
                    out.push(c);
                    quote = None;
                } else {
                    out.push(' ');
                }
            }
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '-' && chars.peek() == Some(&'-') => {
                chars.next();
                let long = chars.clone().take(2).collect::<String>() == "[[";
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        if !long {
                            break;
                        }
                    }
                    if long && prev == ']' && n == ']' {
                        break;
                    }
                    prev = n;
                }
            }
            None => out.push(c),
        }
    }
    out
}

/// Unknown `kumo.*` names in one text, as `file:line: ...` problems; names that are
/// accepted without effect go to `stubs`.
pub fn scan(
    path: &Path,
    text: &str,
    known: &HashSet<String>,
    stubbed: &HashSet<String>,
    stubs: &mut Vec<String>,
) -> Vec<String> {
    let re = regex::Regex::new(r"(?:^|[^\w.:])(kumo(?:\s*\.\s*[A-Za-z_]\w*)+)").expect("valid");
    let mut problems = vec![];
    for (n, line) in without_comments(text).lines().enumerate() {
        for cap in re.captures_iter(line) {
            let chain: Vec<String> = cap[1].split('.').map(|p| p.trim().to_string()).collect();
            let mut name = chain[0].clone();
            for part in &chain[1..] {
                name = format!("{name}.{part}");
                if stubbed.contains(&name) {
                    let note =
                        format!("{}:{}: {name} is accepted but has no effect in wasmta yet", path.display(), n + 1);
                    if !stubs.contains(&note) {
                        stubs.push(note);
                    }
                    break;
                }
                if !known.contains(&name) {
                    problems.push(format!(
                        "{}:{}: {name} is not a KumoMTA function wasmta knows",
                        path.display(),
                        n + 1
                    ));
                    break;
                }
            }
        }
    }
    problems
}

/// `constructor = 'make.x'` literals (a `custom_lua` queue's constructor) whose event has
/// no handler, as `file:line: ...` problems: such a queue could never deliver.
pub fn unhandled_constructors(path: &Path, text: &str, handled: &HashSet<String>) -> Vec<String> {
    // found in the text without comments (strings blanked), read from the original line
    let re = regex::Regex::new(r#"\bconstructor\s*=\s*(['"])"#).expect("valid");
    let mut problems = vec![];
    for (n, (blanked, line)) in without_comments(text).lines().zip(text.lines()).enumerate() {
        for cap in re.captures_iter(blanked) {
            let quote = &cap[1];
            let at = blanked[..cap.get(1).expect("group").end()].chars().count();
            let name: String = line.chars().skip(at).take_while(|c| quote != c.to_string()).collect();
            if !handled.contains(&name) {
                problems.push(format!(
                    "{}:{}: custom_lua constructor '{name}' has no handler: add kumo.on('{name}', function(domain, tenant, campaign) ... end)",
                    path.display(),
                    n + 1,
                ));
            }
        }
    }
    problems
}

/// Checks every text against the `kumo` table of `lua`.
pub fn audit(
    lua: &Lua,
    texts: &[(std::path::PathBuf, std::sync::Arc<[u8]>)],
    stubbed: &HashSet<String>,
) -> mlua::Result<(Vec<String>, Vec<String>)> {
    let kumo: Table = lua.globals().get("kumo")?;
    let known = known_names(&kumo)?;
    let handlers: Table = lua.named_registry_value(super::HANDLERS_KEY)?;
    let handled =
        handlers.pairs::<String, LuaValue>().map(|p| p.map(|(k, _)| k)).collect::<mlua::Result<HashSet<String>>>()?;
    let (mut problems, mut notes) = (vec![], vec![]);
    for (path, text) in texts {
        let text = String::from_utf8_lossy(text);
        problems.extend(scan(path, &text, &known, stubbed, &mut notes));
        problems.extend(unhandled_constructors(path, &text, &handled));
    }
    Ok((problems, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_constructor_without_a_handler() {
        let text = "x = { custom_lua = { constructor = 'make.bus' } }\n-- constructor = 'make.old'\ny = { constructor = \"make.ok\" }\n";
        let handled: HashSet<String> = ["make.ok".to_string()].into();
        let problems = unhandled_constructors(Path::new("p.lua"), text, &handled);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("p.lua:1: custom_lua constructor 'make.bus' has no handler"), "{problems:?}");
    }

    #[test]
    fn finds_unknown_names_outside_comments() {
        let known: HashSet<String> =
            ["kumo.on", "kumo.dns", "kumo.dns.lookup_mx", "kumo.reject"].map(String::from).into();
        let stubbed: HashSet<String> = ["kumo.configure_accounting_db_path"].map(String::from).into();
        let text = "local kumo = require 'kumo'\n-- kumo.commented_out()\nkumo.on('init', function()\n  kumo.configure_accounting_db_path('/x')\n  kumo.dns.lookup_mx('a')\n  kumo.dns.lookup_nonsense('b') --[[ kumo.also_ignored ]]\n  local s = 'kumo.in_a_string'\nend)\nkumo.frobnicate()\n";
        let mut stubs = vec![];
        let problems = scan(Path::new("p.lua"), text, &known, &stubbed, &mut stubs);
        assert_eq!(
            problems,
            vec![
                "p.lua:6: kumo.dns.lookup_nonsense is not a KumoMTA function wasmta knows".to_string(),
                "p.lua:9: kumo.frobnicate is not a KumoMTA function wasmta knows".to_string(),
            ]
        );
        assert_eq!(
            stubs,
            vec!["p.lua:4: kumo.configure_accounting_db_path is accepted but has no effect in wasmta yet"]
        );
    }
}
