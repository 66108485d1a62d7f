//! Shaping files (KumoMTA's format): `["default"]`, `["<domain>"]` and
//! `[provider."<name>"]` sections whose values are `make_egress_path` options plus the
//! shaping keys (`mx_rollup`, `replace_base`, `automation`, `sources`, `match`,
//! `provider_*`). TOML when the path ends in `.toml`, JSON otherwise.

use serde_json::{Map, Value};

/// One section of a shaping file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Section {
    /// `make_egress_path` options.
    pub params: Map<String, Value>,
    /// Key by MX site (true, the default) or by exact domain.
    pub mx_rollup: bool,
    /// Discard earlier files' values for this section.
    pub replace_base: bool,
    /// Per-source overrides.
    pub sources: Map<String, Value>,
    /// Automation rules (kept, applied by the automation engine).
    pub automation: Vec<Value>,
}

/// A provider match rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchRule {
    /// Every MX host ends with this suffix (or matches a HostName rule).
    MxSuffix(String),
    /// The domain ends with this suffix.
    DomainSuffix(String),
    /// An MX host is exactly this name.
    HostName(String),
}

/// A `[provider."name"]` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Provider {
    /// The section proper.
    pub section: Section,
    /// Match rules (any may match).
    pub matches: Vec<MatchRule>,
    /// Connection limit shared by every site the provider matches.
    pub connection_limit: Option<Value>,
    /// Message rate shared by every site the provider matches.
    pub max_message_rate: Option<Value>,
}

/// A parsed shaping file.
#[derive(Debug, Clone, Default)]
pub struct ShapingFile {
    /// `["default"]`.
    pub default: Option<Section>,
    /// Domain sections, in file order.
    pub domains: Vec<(String, Section)>,
    /// Provider sections, in file order.
    pub providers: Vec<(String, Provider)>,
}

/// Where in which file a problem is.
fn locate(text: &str, section: &str, key: Option<&str>) -> String {
    let header = text.lines().position(|l| {
        let t = l.trim();
        t.starts_with('[') && (t.contains(&format!("\"{section}\"")) || t.contains(&format!("'{section}'")))
    });
    let Some(h) = header else { return String::new() };
    let Some(key) = key else { return format!(":{}", h + 1) };
    for (i, l) in text.lines().enumerate().skip(h + 1) {
        let t = l.trim_start();
        if t.starts_with('[') {
            break;
        }
        if t.starts_with(key) && t[key.len()..].trim_start().starts_with('=') {
            return format!(":{}", i + 1);
        }
    }
    format!(":{}", h + 1)
}

/// The option keys `make_egress_path` accepts.
fn egress_keys() -> Vec<String> {
    match serde_json::to_value(crate::config::egress::EgressPathConfig::default()) {
        Ok(Value::Object(m)) => m.keys().cloned().collect(),
        _ => vec![],
    }
}

/// Checks `params` as `make_egress_path` options; errors name the key.
pub fn validate_params(params: &Map<String, Value>) -> Result<(), String> {
    crate::config::decode::<crate::config::egress::EgressPathConfig>(Value::Object(params.clone())).map(drop)
}

/// Every bad option of `params`, each on its own (a decode stops at the first).
fn param_errors(params: &Map<String, Value>) -> Vec<String> {
    if validate_params(params).is_ok() {
        return vec![];
    }
    params.iter().filter_map(|(k, v)| validate_params(&Map::from_iter([(k.clone(), v.clone())])).err()).collect()
}

fn section(
    name: &str,
    table: &Map<String, Value>,
    provider: bool,
    errors: &mut Vec<(String, Option<String>)>,
) -> (Section, Map<String, Value>) {
    let mut s = Section { mx_rollup: true, ..Default::default() };
    let mut extra = Map::new();
    let known = egress_keys();
    for (k, v) in table {
        match k.as_str() {
            "mx_rollup" | "replace_base" => match v.as_bool() {
                Some(b) if k == "mx_rollup" => s.mx_rollup = b,
                Some(b) => s.replace_base = b,
                None => errors.push((format!("{name}: {k}: expected true or false, got {v}"), Some(k.clone()))),
            },
            "automation" => {
                s.automation = v.as_array().cloned().unwrap_or_else(|| vec![v.clone()]);
                for (i, rule) in s.automation.iter().enumerate() {
                    if let Err(e) = super::automation::parse_rule(rule, name) {
                        errors.push((format!("{name}: automation[{i}]: {e}"), Some(k.clone())));
                    }
                }
            }
            "sources" => match v.as_object() {
                Some(m) => s.sources = m.clone(),
                None => errors.push((format!("{name}: sources must be a table of source sections"), Some(k.clone()))),
            },
            "match" | "provider_connection_limit" | "provider_max_message_rate" | "provider_source_selection_rate"
                if provider =>
            {
                let checked = match k.as_str() {
                    "provider_connection_limit" => {
                        crate::config::decode::<crate::config::egress::Limit>(v.clone()).map(drop)
                    }
                    "provider_max_message_rate" | "provider_source_selection_rate" => {
                        crate::config::decode::<crate::config::throttle::ThrottleSpec>(v.clone()).map(drop)
                    }
                    _ => Ok(()),
                };
                if let Err(e) = checked {
                    errors.push((format!("{name}: {k}: {e}"), Some(k.clone())));
                }
                extra.insert(k.clone(), v.clone());
            }
            _ if known.contains(k) => {
                s.params.insert(k.clone(), v.clone());
            }
            _ => errors.push((
                format!("{name}: unknown key {k:?} (not a make_egress_path option or shaping key)"),
                Some(k.clone()),
            )),
        }
    }
    for e in param_errors(&s.params) {
        let key = e.split(':').next().map(str::to_string);
        errors.push((format!("{name}: {e}"), key));
    }
    for (src, v) in &s.sources {
        match v.as_object() {
            Some(m) => {
                for e in param_errors(m) {
                    errors.push((format!("{name}.sources.{src}: {e}"), e.split(':').next().map(str::to_string)));
                }
            }
            None => errors.push((format!("{name}.sources.{src}: expected a table"), None)),
        }
    }
    (s, extra)
}

fn match_rules(name: &str, v: Option<&Value>, errors: &mut Vec<(String, Option<String>)>) -> Vec<MatchRule> {
    let mut out = vec![];
    let rules = match v {
        None => vec![],
        Some(Value::Array(list)) => list.clone(),
        Some(other) => {
            errors
                .push((format!("provider {name}: match: expected a list of rules, got {other}"), Some("match".into())));
            vec![]
        }
    };
    for rule in rules {
        let entry = rule.as_object().filter(|m| m.len() == 1).and_then(|m| m.iter().next());
        let Some((kind, Value::String(value))) = entry else {
            errors.push((
                format!("provider {name}: match entries are tables like {{MXSuffix=\".example\"}}, got {rule}"),
                Some("match".into()),
            ));
            continue;
        };
        if value.is_empty() {
            errors.push((format!("provider {name}: match: {kind} needs a non-empty value"), Some("match".into())));
            continue;
        }
        let value = value.to_ascii_lowercase();
        match kind.as_str() {
            "MXSuffix" => out.push(MatchRule::MxSuffix(value)),
            "DomainSuffix" => out.push(MatchRule::DomainSuffix(value)),
            "HostName" => out.push(MatchRule::HostName(value.trim_end_matches('.').to_string())),
            other => errors.push((format!("provider {name}: unknown match kind {other:?}"), Some("match".into()))),
        }
    }
    out
}

impl ShapingFile {
    /// Parses a file's text. `path` names it in errors (`file:line: section: key ...`).
    pub fn parse(path: &str, text: &str) -> Result<ShapingFile, Vec<String>> {
        let root: Value = if path.ends_with(".toml") {
            toml::from_str(text).map_err(|e| vec![format!("{path}: {e}")])?
        } else {
            serde_json::from_str(text).map_err(|e| vec![format!("{path}: {e}")])?
        };
        let Value::Object(root) = root else { return Err(vec![format!("{path}: expected a table at the top level")]) };
        let mut errors: Vec<(String, String, Option<String>)> = vec![];
        let mut file = ShapingFile::default();
        for (name, v) in &root {
            let mut errs = vec![];
            if name == "provider" {
                let Some(providers) = v.as_object().cloned() else {
                    errors.push(("provider: expected tables like [provider.\"name\"]".into(), name.clone(), None));
                    continue;
                };
                for (pname, pv) in providers {
                    let mut perrs = vec![];
                    let Some(table) = pv.as_object() else {
                        errors.push((format!("provider {pname}: expected a table"), pname.clone(), None));
                        continue;
                    };
                    let (section, extra) = section(&format!("provider.{pname}"), table, true, &mut perrs);
                    let matches = match_rules(&pname, extra.get("match"), &mut perrs);
                    let p = Provider {
                        section,
                        matches,
                        connection_limit: extra.get("provider_connection_limit").cloned(),
                        max_message_rate: extra.get("provider_max_message_rate").cloned(),
                    };
                    errors.extend(perrs.into_iter().map(|(m, k)| (m, pname.clone(), k)));
                    file.providers.push((pname, p));
                }
                continue;
            }
            let Some(table) = v.as_object() else {
                errors.push((format!("{name}: expected a table"), name.clone(), None));
                continue;
            };
            let (section, _) = section(name, table, false, &mut errs);
            errors.extend(errs.into_iter().map(|(m, k)| (m, name.clone(), k)));
            if name == "default" {
                file.default = Some(section);
            } else {
                file.domains.push((name.to_ascii_lowercase(), section));
            }
        }
        if errors.is_empty() {
            Ok(file)
        } else {
            Err(errors
                .into_iter()
                .map(|(m, sect, key)| format!("{path}{}: {m}", locate(text, &sect, key.as_deref())))
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_providers_and_sources() {
        let text = r#"
["default"]
connection_limit = 10

["example.com"]
mx_rollup = false
connection_limit = 3

["example.com".sources."ip-1"]
connection_limit = 5

[provider."google"]
match = [{MXSuffix = ".google.com"}, {DomainSuffix = ".gmail.com"}]
provider_connection_limit = 5
enable_tls = "Required"

[[provider."google".automation]]
regex = "x"
action = "Suspend"
duration = "1h"
"#;
        let f = ShapingFile::parse("s.toml", text).unwrap();
        assert_eq!(f.default.unwrap().params["connection_limit"], 10);
        let (name, ex) = &f.domains[0];
        assert_eq!(name, "example.com");
        assert!(!ex.mx_rollup);
        assert_eq!(ex.sources["ip-1"]["connection_limit"], 5);
        let (pname, g) = &f.providers[0];
        assert_eq!(pname, "google");
        assert_eq!(
            g.matches,
            vec![MatchRule::MxSuffix(".google.com".into()), MatchRule::DomainSuffix(".gmail.com".into())]
        );
        assert_eq!(g.connection_limit, Some(Value::from(5)));
        assert_eq!(g.section.automation.len(), 1);
    }

    #[test]
    fn bad_values_are_errors_naming_the_key() {
        let text = r#"
["default"]
max_message_rate = "banana"
["a.example"]
max_connection_rate = "100/fortnight"
mx_rollup = "yes"
[provider."p"]
match = [{MXSuffix = 5}]
provider_max_message_rate = "lots"
provider_connection_limit = "many"
["b.example".sources."s1"]
additional_message_rate_throttles = { x = "1/century" }
prohibited_hosts = ["not-a-net"]
[[provider."p".automation]]
regex = "x"
action = {SetConfig = {name = "max_message_rate", value = "banana"}}
duration = "1h"
"#;
        let errs = ShapingFile::parse("s.toml", text).unwrap_err().join("\n");
        for needle in [
            "s.toml:3: default: max_message_rate: invalid throttle \"banana\"",
            "s.toml:5: a.example: max_connection_rate: invalid throttle \"100/fortnight\"",
            "s.toml:6: a.example: mx_rollup: expected true or false",
            "provider p: match entries are tables",
            "provider.p: provider_max_message_rate",
            "provider.p: provider_connection_limit",
            "b.example.sources.s1: additional_message_rate_throttles.x",
            "b.example.sources.s1: prohibited_hosts",
            "automation[0]: action: SetConfig: max_message_rate",
        ] {
            assert!(errs.contains(needle), "missing {needle:?} in:\n{errs}");
        }
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let text =
            "[\"default\"]\nconnection_limit = 10\n\n[\"example.com\"]\nconection_limit = 3\nmax_ready = \"many\"\n";
        let errs = ShapingFile::parse("s.toml", text).unwrap_err();
        assert!(
            errs.iter().any(|e| e.starts_with("s.toml:5: example.com: unknown key \"conection_limit\"")),
            "{errs:?}"
        );
        assert!(errs.iter().any(|e| e.starts_with("s.toml:6: example.com: max_ready")), "{errs:?}");
        assert!(ShapingFile::parse("s.toml", "[broken").unwrap_err()[0].starts_with("s.toml: "));
    }

    #[test]
    fn kumomtas_default_shaping_file_loads_unchanged() {
        let text = include_str!("../../tests/data/kumomta-shaping.toml");
        let f = ShapingFile::parse("shaping.toml", text).unwrap_or_else(|e| panic!("{e:#?}"));
        assert!(f.default.is_some());
        assert!(f.providers.iter().any(|(n, _)| n == "google"));
        assert!(f.domains.iter().any(|(n, s)| n == "deferred_smtp_inject.kumomta.internal" && !s.mx_rollup));
    }
}
