//! Go spellings of WIT names.

/// `get-first-named-header-value` -> `GetFirstNamedHeaderValue`.
pub fn pascal(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// `insert-context` -> `insertContext`, never a Go keyword.
pub fn camel(name: &str) -> String {
    let p = pascal(name);
    let mut c = p.chars();
    let s = match c.next() {
        Some(f) => f.to_ascii_lowercase().to_string() + c.as_str(),
        None => String::new(),
    };
    const KEYWORDS: &[&str] = &[
        "break",
        "case",
        "chan",
        "const",
        "continue",
        "default",
        "defer",
        "else",
        "fallthrough",
        "for",
        "func",
        "go",
        "goto",
        "if",
        "import",
        "interface",
        "map",
        "package",
        "range",
        "return",
        "select",
        "struct",
        "switch",
        "type",
        "var",
        "string",
        "error",
        "len",
        "s",
        "v",
        "r",
    ];
    if KEYWORDS.contains(&s.as_str()) { format!("{s}_") } else { s }
}

/// A Go identifier fragment for helper names: `wasmta:policy/types` -> `types`.
pub fn ident(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        assert_eq!(pascal("get-first-named-header-value"), "GetFirstNamedHeaderValue");
        assert_eq!(pascal("follow-with421"), "FollowWith421");
        assert_eq!(camel("insert-context"), "insertContext");
        assert_eq!(camel("type"), "type_");
        assert_eq!(ident("wasmta:policy/host@0.1.0"), "wasmta_policy_host_0_1_0");
    }
}
