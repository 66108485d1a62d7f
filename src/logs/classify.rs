//! Bounce classification (`kumo.configure_bounce_classifier{ files = {...} }`): rule files
//! in KumoMTA's format (`[rules]` mapping a label to a list of regular expressions, TOML
//! or JSON) classify the response of every Bounce, TransientFailure and Expiration record
//! into its `bounce_classification`; the first matching rule in file order wins, no match
//! is `Uncategorized`. KumoMTA's installed IANA rules file is served by wasmta's built-in
//! rules (`src/logs/bounce_rules.toml`) when that path does not exist here.

/// wasmta's built-in rules.
pub const BUILTIN: &str = include_str!("bounce_rules.toml");

/// The name that selects the built-in rules.
pub const BUILTIN_NAME: &str = "wasmta:bounce_rules.toml";

/// Compiled rules.
#[derive(Debug)]
pub struct Classifier {
    set: regex::RegexSet,
    labels: Vec<String>,
}

/// Whether `path` names KumoMTA's installed IANA rules (served by the built-in rules when
/// the file is not on this machine).
fn is_kumomta_default(path: &str) -> bool {
    path.ends_with("bounce_classifier/iana.toml") && !std::path::Path::new(path).exists()
}

/// One label's patterns: a list, or a single pattern.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Patterns {
    Many(Vec<String>),
    One(String),
}

/// A rules file; the map keeps file order (the first matching rule wins).
#[derive(serde::Deserialize)]
struct RulesFile {
    rules: indexmap::IndexMap<String, Patterns>,
}

/// (label, pattern) pairs of one rule file's text, in file order.
fn rules_of(path: &str, text: &str) -> Result<Vec<(String, String)>, String> {
    let file: RulesFile = if path.ends_with(".toml") {
        toml::from_str(text).map_err(|e| format!("{path}: {e}"))?
    } else if path.ends_with(".json") {
        serde_json::from_str(text).map_err(|e| format!("{path}: {e}"))?
    } else {
        return Err(format!("{path}: bounce rules files end in .toml or .json"));
    };
    let mut out = vec![];
    for (label, patterns) in file.rules {
        let list = match patterns {
            Patterns::Many(v) => v,
            Patterns::One(p) => vec![p],
        };
        for p in list {
            regex::Regex::new(&p).map_err(|e| format!("{path}: rules.{label}: {e}"))?;
            out.push((label.clone(), p));
        }
    }
    Ok(out)
}

impl Classifier {
    /// Loads rule files in order (`wasmta:bounce_rules.toml`, or KumoMTA's IANA rules
    /// path where it does not exist, is the built-in set); errors name the file and label.
    pub fn load(files: &[String]) -> Result<Classifier, String> {
        let mut rules = vec![];
        for f in files {
            if f == BUILTIN_NAME || is_kumomta_default(f) {
                rules.extend(rules_of("bounce_rules.toml", BUILTIN)?);
                continue;
            }
            let text = std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?;
            rules.extend(rules_of(f, &text)?);
        }
        let set = regex::RegexSet::new(rules.iter().map(|(_, p)| p)).map_err(|e| e.to_string())?;
        Ok(Classifier { set, labels: rules.into_iter().map(|(l, _)| l).collect() })
    }

    /// The label of a response line (`"550 5.1.1 no such user"`).
    pub fn classify(&self, response: &str) -> &str {
        self.set.matches(response).iter().next().map_or("Uncategorized", |i| &self.labels[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_rules_classify_real_responses() {
        let c = Classifier::load(&[BUILTIN_NAME.to_string()]).unwrap();
        assert_eq!(
            c.classify("550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown"),
            "InvalidRecipient"
        );
        assert_eq!(c.classify("552 5.2.2 mailbox full"), "QuotaIssues");
        assert_eq!(c.classify("550 5.1.10 example.com publishes a null MX"), "BadDomain");
        assert_eq!(c.classify("451 4.4.1 No answer from host"), "NoAnswerFromHost");
        assert_eq!(c.classify("551 5.4.7 Next delivery time would be 7 days after creation"), "MessageExpired");
        assert_eq!(c.classify("550 5.7.1 Service unavailable, client host blocked"), "AuthenticationFailed");
        assert_eq!(c.classify("250 ok"), "Uncategorized");
        let kumo = Classifier::load(&["/opt/kumomta/share/bounce_classifier/iana.toml".to_string()]).unwrap();
        assert_eq!(kumo.classify("550 5.1.1 x"), "InvalidRecipient");
        // file order, not alphabetical: PolicyRelated (7.38) comes before AuthenticationFailed
        assert_eq!(c.classify("550 5.7.38 x"), "PolicyRelated");
    }

    #[test]
    fn custom_rules_come_first_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("mine.toml");
        std::fs::write(&f, "[rules]\nSpamBlock = ['blocked using Spamhaus']\n").unwrap();
        let c = Classifier::load(&[f.display().to_string(), BUILTIN_NAME.to_string()]).unwrap();
        assert_eq!(c.classify("550 5.7.1 Service unavailable; blocked using Spamhaus"), "SpamBlock");
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[rules]\nX = ['(unclosed']\n").unwrap();
        let e = Classifier::load(&[bad.display().to_string()]).unwrap_err();
        assert!(e.contains("bad.toml: rules.X"), "{e}");
        assert!(Classifier::load(&["rules.yaml".into()]).is_err());
    }
}
