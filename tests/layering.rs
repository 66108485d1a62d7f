//! The rooms of `src/` import one way only, as `docs/design.md` §2 draws them: this test
//! reads that table and every `crate::` path in the sources (tests and comments aside)
//! and fails on an import the table does not allow, naming file and line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// room -> rooms it may use, from the design document's table.
fn allowed() -> BTreeMap<String, Option<BTreeSet<String>>> {
    let design = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/design.md")).unwrap();
    let section = design.split("## 2. Rooms").nth(1).expect("section 2").split("\n## ").next().unwrap();
    let mut out = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let room = cells[1].trim_matches('`').to_string();
        let may = cells[3];
        let set = match may {
            "everything" => None,
            "nothing of ours" => Some(BTreeSet::new()),
            list => Some(list.split(',').map(|s| s.trim().trim_matches('`').to_string()).collect()),
        };
        out.insert(room, set);
    }
    out
}

fn strip(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    code.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_import_follows_the_documented_order() {
    let allowed = allowed();
    let rooms: BTreeSet<String> = allowed.keys().cloned().collect();
    assert!(rooms.len() >= 15, "the table was not found: {rooms:?}");
    let src = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
    let mut files = vec![];
    walk(src, &mut files);
    let mut wrong = vec![];
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let room = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if matches!(room.as_str(), "lib" | "main") {
            continue;
        }
        let Some(may) = allowed.get(&room) else {
            wrong.push(format!("src/{}: room {room} is not in docs/design.md §2", rel.display()));
            continue;
        };
        let Some(may) = may else { continue };
        let text = strip(&std::fs::read_to_string(&file).unwrap());
        for (n, line) in text.lines().enumerate() {
            let mut used = vec![];
            for part in line.split("crate::").skip(1) {
                if let Some(group) = part.strip_prefix('{') {
                    // use crate::{a::x, b};
                    let inner = group.split('}').next().unwrap_or("");
                    used.extend(inner.split(',').map(|s| s.trim().split("::").next().unwrap_or("").to_string()));
                } else {
                    let name: String = part.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    used.push(name);
                }
            }
            for u in used {
                if u != room && rooms.contains(&u) && !may.contains(&u) {
                    wrong.push(format!("src/{}:{}: {room} uses {u}", rel.display(), n + 1));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "imports against docs/design.md §2:\n{}", wrong.join("\n"));
}

#[test]
fn the_table_itself_points_one_way() {
    // no two rooms may use each other, directly or around a loop
    let allowed = allowed();
    fn reaches(
        from: &str,
        to: &str,
        a: &BTreeMap<String, Option<BTreeSet<String>>>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        let Some(Some(next)) = a.get(from) else { return false };
        next.iter().any(|n| n == to || (seen.insert(n.clone()) && reaches(n, to, a, seen)))
    }
    for room in allowed.keys() {
        assert!(!reaches(room, room, &allowed, &mut BTreeSet::new()), "{room} reaches itself");
    }
}
