//! `msg:check_fix_conformance(CHECKS, FIXES)`: KumoMTA's message conformance issues (flag
//! names joined by `|`), found in one pass over the header section and the body; the
//! header-level ones can be fixed. Issues that need the message re-encoded
//! (`LINE_TOO_LONG`, `NEEDS_TRANSFER_ENCODING`) are reported, and asking to fix them is a
//! clear error, never a silent no-op.

use super::headers;

/// KumoMTA's issue names, in its order.
pub const ISSUES: [&str; 8] = [
    "MISSING_COLON_VALUE",
    "NON_CANONICAL_LINE_ENDINGS",
    "NAME_ENDS_WITH_SPACE",
    "LINE_TOO_LONG",
    "NEEDS_TRANSFER_ENCODING",
    "MISSING_DATE_HEADER",
    "MISSING_MESSAGE_ID_HEADER",
    "MISSING_MIME_VERSION",
];

/// Parses `"A|B"` into issue names; an unknown name is an error.
pub fn flags(text: &str) -> Result<Vec<&'static str>, String> {
    let mut out = vec![];
    for f in text.split('|').map(str::trim).filter(|f| !f.is_empty()) {
        match ISSUES.iter().find(|i| i.eq_ignore_ascii_case(f)) {
            Some(i) => out.push(*i),
            None => return Err(format!("unknown conformance flag {f:?} (known: {})", ISSUES.join(", "))),
        }
    }
    Ok(out)
}

/// The issues `data` has.
pub fn issues(data: &[u8]) -> Vec<&'static str> {
    let mut found = vec![];
    let end = headers::header_end(data);
    let add = |i: &'static str, found: &mut Vec<&'static str>| {
        if !found.contains(&i) {
            found.push(i);
        }
    };
    for (i, b) in data.iter().enumerate() {
        let bare = match b {
            b'\n' => i == 0 || data[i - 1] != b'\r',
            b'\r' => data.get(i + 1) != Some(&b'\n'),
            _ => false,
        };
        if bare {
            add("NON_CANONICAL_LINE_ENDINGS", &mut found);
            break;
        }
    }
    if data.split(|b| *b == b'\n').any(|l| l.strip_suffix(b"\r").unwrap_or(l).len() > 998) {
        add("LINE_TOO_LONG", &mut found);
    }
    for line in data[..end].split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line[0] == b' ' || line[0] == b'\t' {
            continue;
        }
        match line.iter().position(|b| *b == b':') {
            None => add("MISSING_COLON_VALUE", &mut found),
            Some(c) if c > 0 && line[c - 1] == b' ' => add("NAME_ENDS_WITH_SPACE", &mut found),
            _ => {}
        }
    }
    let fields = headers::fields(data);
    let has = |n: &str| fields.iter().any(|f| f.name.eq_ignore_ascii_case(n));
    let value = |n: &str| fields.iter().find(|f| f.name.eq_ignore_ascii_case(n)).map(|f| f.value());
    if !has("Date") {
        add("MISSING_DATE_HEADER", &mut found);
    }
    if !has("Message-ID") {
        add("MISSING_MESSAGE_ID_HEADER", &mut found);
    }
    if value("MIME-Version").is_none_or(|v| v.trim() != "1.0") {
        add("MISSING_MIME_VERSION", &mut found);
    }
    let eight_bit = data.iter().any(|b| *b >= 0x80);
    let declared = value("Content-Transfer-Encoding").is_some_and(|v| {
        let v = v.trim().to_ascii_lowercase();
        v == "8bit" || v == "binary"
    });
    if eight_bit && !declared {
        add("NEEDS_TRANSFER_ENCODING", &mut found);
    }
    found
}

/// Applies the fixes among `fixes` that `data` needs; `hostname` names the Message-ID's
/// domain.
pub fn fix(data: &[u8], fixes: &[&str], hostname: &str) -> Result<Vec<u8>, String> {
    let needed = issues(data);
    let mut out = data.to_vec();
    for f in fixes.iter().filter(|f| needed.contains(f)) {
        out = match *f {
            "NON_CANONICAL_LINE_ENDINGS" => canonical_line_endings(&out),
            "NAME_ENDS_WITH_SPACE" => trim_names(&out),
            "MISSING_DATE_HEADER" => headers::append(&out, "Date", &chrono::Utc::now().to_rfc2822()),
            "MISSING_MESSAGE_ID_HEADER" => {
                headers::append(&out, "Message-ID", &format!("<{}@{hostname}>", uuid::Uuid::new_v4().simple()))
            }
            "MISSING_MIME_VERSION" => {
                let without = headers::remove_where(&out, |n| n.eq_ignore_ascii_case("MIME-Version"));
                headers::append(&without, "MIME-Version", "1.0")
            }
            other => return Err(format!("fixing {other} needs the message re-encoded, which wasmta does not do yet")),
        };
    }
    Ok(out)
}

fn canonical_line_endings(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\r' if data.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn trim_names(data: &[u8]) -> Vec<u8> {
    let end = headers::header_end(data);
    let mut out = Vec::with_capacity(data.len());
    for line in data[..end].split_inclusive(|b| *b == b'\n') {
        match line.iter().position(|b| *b == b':') {
            Some(c) if !line.starts_with(b" ") && !line.starts_with(b"\t") => {
                let name = &line[..c];
                let trimmed = name.iter().rposition(|b| *b != b' ').map_or(&name[..0], |p| &name[..=p]);
                out.extend_from_slice(trimmed);
                out.extend_from_slice(&line[c..]);
            }
            _ => out.extend_from_slice(line),
        }
    }
    out.extend_from_slice(&data[end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_fixes_header_issues() {
        let bad = b"Subject : hi\r\nNoColonHere\r\nFrom: a@b.example\r\n\r\nbody\n";
        let found = issues(bad);
        for i in ["NAME_ENDS_WITH_SPACE", "MISSING_COLON_VALUE", "NON_CANONICAL_LINE_ENDINGS", "MISSING_DATE_HEADER"] {
            assert!(found.contains(&i), "{i}: {found:?}");
        }
        let fixed = fix(bad, &flags("MISSING_DATE_HEADER|MISSING_MESSAGE_ID_HEADER|MISSING_MIME_VERSION|NAME_ENDS_WITH_SPACE|NON_CANONICAL_LINE_ENDINGS").unwrap(), "mx.test").unwrap();
        let left = issues(&fixed);
        assert_eq!(left, vec!["MISSING_COLON_VALUE"], "{}", String::from_utf8_lossy(&fixed));
        assert!(String::from_utf8_lossy(&fixed).contains("@mx.test>"));
        assert!(fix(b"Subject: x\r\n\r\n\xff\r\n", &["NEEDS_TRANSFER_ENCODING"], "h").is_err());
        assert!(flags("MISSING_DATE_HEADER|BOGUS").is_err());
        let good = b"Date: x\r\nMessage-ID: <a@b>\r\nMIME-Version: 1.0\r\nSubject: s\r\n\r\nok\r\n";
        assert!(issues(good).is_empty());
    }
}
