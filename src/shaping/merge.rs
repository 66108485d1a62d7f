//! Shaping data merged from several files, and the lookup of one egress path's options
//! in KumoMTA's precedence: default → matching providers → provider `sources.<source>` →
//! site entry (MX rollup) → exact-domain entry → site `sources.<source>` → domain
//! `sources.<source>`. Only `additional_*` tables merge key by key; other keys replace.

use super::automation::{Rule, parse_rule};
use super::file::{MatchRule, Provider, Section, ShapingFile};
use crate::config::queue::SmtpProtocol;
use crate::dns::Dns;
use crate::dns::mx::{SiteError, resolve_site};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// The kinds of problem a load option (`Ignore`, `Warn`, `Error`) decides about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issue {
    /// Two rolled-up entries resolve to the same site.
    AliasedSite,
    /// An entry's MX lookup failed.
    DnsFail,
    /// A rolled-up entry's domain has a null MX.
    NullMx,
    /// An entry matches more than one provider.
    ProviderOverlap,
}

/// Merged shaping data.
#[derive(Debug, Default)]
pub struct Shaping {
    default: Section,
    by_site: HashMap<String, Section>,
    by_domain: HashMap<String, Section>,
    providers: Vec<(String, Provider)>,
    /// Problems the load options sort into errors, warnings or nothing.
    pub issues: Vec<(Issue, String)>,
    /// Automation rules by entry: `default`, `provider:<name>`, `site:<site>`, `domain:<domain>`.
    rules: HashMap<String, Vec<Arc<Rule>>>,
    /// Resolved egress paths, by (domain, source, site).
    cache: parking_lot::Mutex<HashMap<PathKey, Map<String, Value>>>,
}

/// (domain, source, site).
type PathKey = (String, String, String);

/// Entries kept in the lookup cache before it starts over.
const CACHE_LIMIT: usize = 100_000;

/// Lays `over` on `base`.
pub fn merge_params(base: &mut Map<String, Value>, over: &Map<String, Value>) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(Value::Object(b)), Value::Object(o)) if k.starts_with("additional_") => {
                b.extend(o.clone());
            }
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

fn merge_section(base: &mut Section, over: &Section) {
    if over.replace_base {
        *base = over.clone();
        return;
    }
    merge_params(&mut base.params, &over.params);
    for (src, v) in &over.sources {
        match (base.sources.get_mut(src), v) {
            (Some(Value::Object(b)), Value::Object(o)) => merge_params(b, o),
            _ => {
                base.sources.insert(src.clone(), v.clone());
            }
        }
    }
    base.automation.extend(over.automation.iter().cloned());
    base.mx_rollup = over.mx_rollup;
}

fn source_params(section: &Section, source: &str) -> Option<Map<String, Value>> {
    section.sources.get(source).and_then(Value::as_object).cloned()
}

impl Shaping {
    /// Merges parsed files (in order) and resolves rolled-up domains to their sites.
    pub async fn build(files: Vec<ShapingFile>, dns: &dyn Dns) -> Shaping {
        let mut out = Shaping { default: Section { mx_rollup: true, ..Default::default() }, ..Default::default() };
        let mut domains: Vec<(String, Section)> = vec![];
        for f in files {
            if let Some(d) = &f.default {
                merge_section(&mut out.default, d);
            }
            for (name, s) in f.domains {
                match domains.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, base)) => merge_section(base, &s),
                    None => domains.push((name, s)),
                }
            }
            for (name, p) in f.providers {
                match out.providers.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, base)) => {
                        merge_section(&mut base.section, &p.section);
                        if !p.matches.is_empty() {
                            base.matches = p.matches;
                        }
                        base.connection_limit = p.connection_limit.or(base.connection_limit.take());
                        base.max_message_rate = p.max_message_rate.or(base.max_message_rate.take());
                    }
                    None => out.providers.push((name, p)),
                }
            }
        }
        for (name, s) in domains {
            if !s.mx_rollup {
                out.check_overlap(&name, &[]);
                out.by_domain.insert(name, s);
                continue;
            }
            match resolve_site(dns, &name, &SmtpProtocol::default()).await {
                Ok(site) => {
                    let hosts: Vec<String> = site.hosts.iter().map(|h| h.name.clone()).collect();
                    out.check_overlap(&name, &hosts);
                    if out.by_site.contains_key(&site.name) {
                        out.issues.push((
                            Issue::AliasedSite,
                            format!(
                                "{name}: rolls up to site {} which another entry already names (aliased_site)",
                                site.name
                            ),
                        ));
                    }
                    match out.by_site.get_mut(&site.name) {
                        Some(base) => merge_section(base, &s),
                        None => {
                            out.by_site.insert(site.name, s);
                        }
                    }
                }
                Err(SiteError::NullMx) => {
                    out.issues.push((
                        Issue::NullMx,
                        format!("{name}: has a null MX and cannot use mx_rollup (null_mx); keyed by domain"),
                    ));
                    out.by_domain.insert(name, s);
                }
                Err(e) => {
                    out.issues.push((
                        Issue::DnsFail,
                        format!("{name}: MX lookup failed ({e:?}); keyed by domain (dns_fail)"),
                    ));
                    out.by_domain.insert(name, s);
                }
            }
        }
        out.compile_rules();
        out
    }

    fn compile_rules(&mut self) {
        let mut rules = HashMap::new();
        let mut add = |key: String, section: &Section| {
            let compiled: Vec<Arc<Rule>> =
                section.automation.iter().filter_map(|r| parse_rule(r, &key).ok()).map(Arc::new).collect();
            if !compiled.is_empty() {
                rules.insert(key, compiled);
            }
        };
        add("default".into(), &self.default);
        for (name, p) in &self.providers {
            add(format!("provider:{name}"), &p.section);
        }
        for (site, s) in &self.by_site {
            add(format!("site:{site}"), s);
        }
        for (domain, s) in &self.by_domain {
            add(format!("domain:{domain}"), s);
        }
        self.rules = rules;
    }

    /// The automation rules for a delivery to `domain` at `site` (whose MX hosts are
    /// `hosts`), in KumoMTA's order: default, providers, site, domain.
    pub fn automation_rules(&self, domain: &str, site: &str, hosts: &[String]) -> Vec<Arc<Rule>> {
        if self.rules.is_empty() {
            return vec![];
        }
        let domain = domain.to_ascii_lowercase();
        let mut out = vec![];
        let mut take = |key: &str| out.extend(self.rules.get(key).into_iter().flatten().cloned());
        take("default");
        for (name, p) in &self.providers {
            if Self::provider_matches(&p.matches, &domain, hosts) {
                take(&format!("provider:{name}"));
            }
        }
        take(&format!("site:{site}"));
        take(&format!("domain:{domain}"));
        out
    }

    /// Every egress source named in a `sources` table, sorted.
    pub fn referenced_sources(&self) -> Vec<String> {
        let mut out: Vec<String> = std::iter::once(&self.default)
            .chain(self.providers.iter().map(|(_, p)| &p.section))
            .chain(self.by_site.values())
            .chain(self.by_domain.values())
            .flat_map(|s| s.sources.keys().cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// (domain and site entries, providers).
    pub fn counts(&self) -> (usize, usize) {
        (self.by_site.len() + self.by_domain.len(), self.providers.len())
    }

    /// Records an entry that more than one provider matches.
    fn check_overlap(&mut self, name: &str, hosts: &[String]) {
        let matching: Vec<&str> = self
            .providers
            .iter()
            .filter(|(_, p)| Self::provider_matches(&p.matches, name, hosts))
            .map(|(n, _)| n.as_str())
            .collect();
        if matching.len() > 1 {
            let text = format!("{name}: matches more than one provider ({}) (provider_overlap)", matching.join(", "));
            self.issues.push((Issue::ProviderOverlap, text));
        }
    }

    fn provider_matches(rules: &[MatchRule], domain: &str, mx_hosts: &[String]) -> bool {
        let domain_match =
            rules.iter().any(|r| matches!(r, MatchRule::DomainSuffix(s) if domain.ends_with(s.as_str())));
        let mx_rules: Vec<&MatchRule> = rules.iter().filter(|r| !matches!(r, MatchRule::DomainSuffix(_))).collect();
        let mx_match = !mx_rules.is_empty()
            && !mx_hosts.is_empty()
            && mx_hosts.iter().all(|h| {
                mx_rules.iter().any(|r| match r {
                    MatchRule::MxSuffix(s) => h.ends_with(s.as_str()),
                    MatchRule::HostName(n) => h == n,
                    MatchRule::DomainSuffix(_) => false,
                })
            });
        domain_match || mx_match
    }

    /// The merged `make_egress_path` options for `domain` sent from `source` to `site`.
    /// Egress paths from shaping refresh on the configuration epoch.
    pub async fn egress_path_params(
        &self,
        domain: &str,
        source: &str,
        site: &str,
        dns: &dyn Dns,
    ) -> Map<String, Value> {
        let key = (domain.to_ascii_lowercase(), source.to_string(), site.to_string());
        if let Some(hit) = self.cache.lock().get(&key) {
            return hit.clone();
        }
        let params = self.resolve_params(&key.0, source, site, dns).await;
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, params.clone());
        params
    }

    /// [`Shaping::egress_path_params`] without the cache.
    pub async fn resolve_params(&self, domain: &str, source: &str, site: &str, dns: &dyn Dns) -> Map<String, Value> {
        let domain = domain.to_ascii_lowercase();
        let mut params = self.default.params.clone();
        if !self.providers.is_empty() {
            let hosts: Vec<String> = match resolve_site(dns, &domain, &SmtpProtocol::default()).await {
                Ok(s) => s.hosts.into_iter().map(|h| h.name).collect(),
                Err(_) => vec![],
            };
            for (name, p) in &self.providers {
                if !Self::provider_matches(&p.matches, &domain, &hosts) {
                    continue;
                }
                merge_params(&mut params, &p.section.params);
                if let Some(sp) = source_params(&p.section, source) {
                    merge_params(&mut params, &sp);
                }
                let mut shared = Map::new();
                if let Some(limit) = &p.connection_limit {
                    shared.insert(
                        "additional_connection_limits".into(),
                        serde_json::json!({ format!("shaping-provider-{name}-{source}-limit"): limit }),
                    );
                }
                if let Some(rate) = &p.max_message_rate {
                    shared.insert(
                        "additional_message_rate_throttles".into(),
                        serde_json::json!({ format!("shaping-provider-{name}-{source}-rate"): rate }),
                    );
                }
                shared.insert("provider_name".into(), Value::String(name.clone()));
                merge_params(&mut params, &shared);
            }
        }
        let site_entry = self.by_site.get(site);
        let domain_entry = self.by_domain.get(&domain);
        for entry in [site_entry, domain_entry].into_iter().flatten() {
            merge_params(&mut params, &entry.params);
        }
        for entry in [site_entry, domain_entry].into_iter().flatten() {
            if let Some(sp) = source_params(entry, source) {
                merge_params(&mut params, &sp);
            }
        }
        params.entry("refresh_strategy").or_insert_with(|| Value::String("Epoch".into()));
        params
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::TestZones;
    use serde_json::json;

    fn parse(name: &str, text: &str) -> ShapingFile {
        ShapingFile::parse(name, text).unwrap()
    }

    #[tokio::test]
    async fn precedence_follows_kumomta() {
        let dns = TestZones::parse(
            "gmail.com. MX 5 gmail-smtp-in.l.google.com.\ngooglemail.com. MX 5 gmail-smtp-in.l.google.com.\n",
        )
        .unwrap();
        let base = parse(
            "a.toml",
            r#"
["default"]
connection_limit = 10
max_deliveries_per_connection = 100
additional_connection_limits = { a = 1 }
[provider."google"]
match = [{MXSuffix = ".google.com"}]
connection_limit = 20
provider_connection_limit = 5
[provider."google".sources."ip-1"]
connection_limit = 21
["gmail.com"]
connection_limit = 30
additional_connection_limits = { b = 2 }
["gmail.com".sources."ip-1"]
max_deliveries_per_connection = 7
"#,
        );
        let over = parse("b.toml", "[\"gmail.com\"]\nidle_timeout = \"9s\"\n");
        let s = Shaping::build(vec![base, over], &dns).await;
        assert!(s.issues.is_empty(), "{:?}", s.issues);
        assert_eq!(s.referenced_sources(), vec!["ip-1".to_string()]);
        let site = "gmail-smtp-in.l.google.com";
        let p = s.egress_path_params("gmail.com", "ip-1", site, &dns).await;
        assert_eq!(p["connection_limit"], 30, "the site entry beats the provider's source override");
        assert_eq!(p["max_deliveries_per_connection"], 7, "the site's source override comes last");
        assert_eq!(p["idle_timeout"], "9s", "later files merge over earlier ones");
        assert_eq!(p["provider_name"], "google");
        assert_eq!(p["additional_connection_limits"], json!({"a": 1, "b": 2, "shaping-provider-google-ip-1-limit": 5}));
        assert_eq!(p["refresh_strategy"], "Epoch");
        // googlemail.com rolls up to the same site, so gets gmail.com's entry too
        let p = s.egress_path_params("googlemail.com", "other", site, &dns).await;
        assert_eq!(p["connection_limit"], 30);
        assert_eq!(p["max_deliveries_per_connection"], 100);
        // an unrelated domain gets the default
        let p = s.egress_path_params("example.net", "ip-1", "mx.example.net", &dns).await;
        assert_eq!(p["connection_limit"], 10);
        assert!(p.get("provider_name").is_none());
    }

    #[tokio::test]
    async fn replace_base_discards_earlier_values_and_rollup_falls_back() {
        let dns = TestZones::default();
        let a = parse("a.toml", "[\"x.example\"]\nmx_rollup = false\nconnection_limit = 3\nmax_ready = 9\n");
        let b = parse("b.toml", "[\"x.example\"]\nmx_rollup = false\nreplace_base = true\nconnection_limit = 4\n");
        let c = parse("c.toml", "[\"unresolvable.example\"]\nconnection_limit = 6\n");
        let s = Shaping::build(vec![a, b, c], &dns).await;
        let p = s.egress_path_params("x.example", "s", "x.example", &dns).await;
        assert_eq!(p["connection_limit"], 4);
        assert!(p.get("max_ready").is_none(), "replace_base dropped the earlier file's keys");
        let p = s.egress_path_params("unresolvable.example", "s", "whatever", &dns).await;
        assert_eq!(p["connection_limit"], 6);
        assert!(s.issues.iter().any(|(i, w)| *i == Issue::DnsFail && w.contains("dns_fail")), "{:?}", s.issues);
    }
}
