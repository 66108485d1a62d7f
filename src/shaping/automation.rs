//! Automation rules in shaping files (KumoMTA's TSA rules, applied in process): `regex`
//! on delivery responses, `action`, `trigger` (`Immediate` or `{Threshold = "N/period"}`),
//! `duration`, `match_internal`. This module parses and matches them; the queue manager
//! applies what they decide (`crate::queue::automation`).

use serde_json::Value;
use std::time::Duration;

/// What a matching rule does, for its duration.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Suspend the ready queue (source → site).
    Suspend,
    /// Override an egress path option for the site (rolled up).
    SetConfig { name: String, value: Value },
    /// Override an egress path option for the exact domain.
    SetDomainConfig { name: String, value: Value },
    /// Suspend the scheduled queues of the message's tenant (for its domain).
    SuspendTenant,
    /// Suspend the scheduled queue of the message's campaign (for its tenant and domain).
    SuspendCampaign,
    /// Bounce what is queued for the message's scheduled queue, and what arrives.
    Bounce,
    /// Bounce the tenant's mail for the domain.
    BounceTenant,
    /// Bounce the campaign's mail for the domain.
    BounceCampaign,
}

/// When a rule acts.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// At the first match.
    Immediate,
    /// At the `count`th match within `period` (per site).
    Threshold { count: u64, period: Duration },
}

/// One parsed rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub regexes: Vec<fancy_regex::Regex>,
    pub actions: Vec<Action>,
    pub trigger: Trigger,
    pub duration: Duration,
    pub match_internal: bool,
    /// The shaping section it came from (for logs).
    pub origin: String,
}

fn strings(v: &Value, what: &str) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) => {
            a.iter().map(|x| x.as_str().map(str::to_string).ok_or(format!("{what}: expected strings"))).collect()
        }
        _ => Err(format!("{what}: expected a string or a list of strings")),
    }
}

fn action(v: &Value) -> Result<Action, String> {
    if let Some(name) = v.as_str() {
        return Ok(match name {
            "Suspend" => Action::Suspend,
            "SuspendTenant" => Action::SuspendTenant,
            "SuspendCampaign" => Action::SuspendCampaign,
            "Bounce" => Action::Bounce,
            "BounceTenant" => Action::BounceTenant,
            "BounceCampaign" => Action::BounceCampaign,
            other => return Err(format!("action: unknown action {other:?}")),
        });
    }
    let Some((kind, body)) = v.as_object().and_then(|m| if m.len() == 1 { m.iter().next() } else { None }) else {
        return Err("action: expected a name or a table like {SetConfig={name=..., value=...}}".into());
    };
    let name = body.get("name").and_then(Value::as_str).ok_or(format!("action: {kind} needs name"))?.to_string();
    let value = body.get("value").cloned().ok_or(format!("action: {kind} needs value"))?;
    // the value must be valid for that egress path option
    let mut probe = serde_json::Map::new();
    probe.insert(name.clone(), value.clone());
    super::file::validate_params(&probe).map_err(|e| format!("action: {kind}: {e}"))?;
    match kind.as_str() {
        "SetConfig" => Ok(Action::SetConfig { name, value }),
        "SetDomainConfig" => Ok(Action::SetDomainConfig { name, value }),
        other => Err(format!("action: unknown action {other:?}")),
    }
}

/// Parses one rule table.
pub fn parse_rule(v: &Value, origin: &str) -> Result<Rule, String> {
    let Some(m) = v.as_object() else { return Err("automation: each rule is a table".into()) };
    for k in m.keys() {
        if !["regex", "action", "trigger", "duration", "match_internal"].contains(&k.as_str()) {
            return Err(format!("automation: unknown key {k:?}"));
        }
    }
    let regexes = strings(m.get("regex").ok_or("automation: regex is required")?, "regex")?
        .iter()
        .map(|r| fancy_regex::Regex::new(r).map_err(|e| format!("regex: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let actions = match m.get("action").ok_or("automation: action is required")? {
        Value::Array(a) => a.iter().map(action).collect::<Result<Vec<_>, _>>()?,
        one => vec![action(one)?],
    };
    let trigger = match m.get("trigger") {
        None => Trigger::Immediate,
        Some(Value::String(s)) if s == "Immediate" => Trigger::Immediate,
        Some(Value::Object(t)) if t.contains_key("Threshold") => {
            let spec = t["Threshold"].as_str().ok_or("trigger: Threshold is a string like \"10/hr\"")?;
            let s = super::throttle::ThrottleSpec::parse(spec).map_err(|e| format!("trigger: {e}"))?;
            Trigger::Threshold { count: s.limit, period: s.period }
        }
        Some(other) => {
            return Err(format!("trigger: expected \"Immediate\" or {{Threshold=\"N/period\"}}, got {other}"));
        }
    };
    let duration = match m.get("duration") {
        None => return Err("automation: duration is required".into()),
        Some(Value::String(d)) => crate::config::units::parse_duration(d).map_err(|e| format!("duration: {e}"))?,
        Some(Value::Number(n)) if n.as_f64().is_some_and(|f| f >= 0.0) => {
            Duration::from_secs_f64(n.as_f64().unwrap_or_default())
        }
        Some(other) => return Err(format!("duration: expected a duration like \"2 hours\", got {other}")),
    };
    let match_internal = match m.get("match_internal") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(format!("match_internal: expected true or false, got {other}")),
    };
    Ok(Rule { regexes, actions, trigger, duration, match_internal, origin: origin.to_string() })
}

impl Rule {
    /// Whether the rule matches a response line (`451 4.7.0 text`).
    pub fn matches(&self, response: &str) -> bool {
        if !self.match_internal && response.split_once(' ').is_some_and(|(_, rest)| is_internal(rest)) {
            return false;
        }
        self.regexes.iter().any(|r| r.is_match(response).unwrap_or(false))
    }
}

fn is_internal(text: &str) -> bool {
    // "4.3.0 KumoMTA internal: ..." or "KumoMTA internal: ..."
    text.starts_with("KumoMTA internal:")
        || text.split_once(' ').is_some_and(|(_, t)| t.starts_with("KumoMTA internal:"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_kumomtas_rule_forms() {
        let r = parse_rule(
            &json!({"regex": ["deferred", "busy"], "action": [{"SetConfig": {"name": "max_message_rate", "value": "1/minute"}}, "Suspend"], "duration": "90m"}),
            "default",
        )
        .unwrap();
        assert_eq!(r.actions.len(), 2);
        assert_eq!(r.trigger, Trigger::Immediate);
        assert_eq!(r.duration, Duration::from_secs(5400));
        let r = parse_rule(
            &json!({"regex": "RL0000", "action": "Suspend", "trigger": {"Threshold": "2/hr"}, "duration": "2 hours"}),
            "x",
        )
        .unwrap();
        assert_eq!(r.trigger, Trigger::Threshold { count: 2, period: Duration::from_secs(3600) });
        for bad in [
            json!({"regex": "(", "action": "Suspend", "duration": "1h"}),
            json!({"regex": "x", "action": "Explode", "duration": "1h"}),
            json!({"regex": "x", "action": "Suspend"}),
            json!({"regex": "x", "action": {"SetConfig": {"name": "connection_limt", "value": 1}}, "duration": "1h"}),
            json!({"regex": "x", "action": "Suspend", "duration": "1h", "extra": 1}),
        ] {
            assert!(parse_rule(&bad, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn internal_responses_match_only_when_asked() {
        let r = parse_rule(&json!({"regex": "later", "action": "Suspend", "duration": "1m"}), "x").unwrap();
        assert!(r.matches("451 4.7.1 try later"));
        assert!(!r.matches("451 4.4.4 KumoMTA internal: try later"));
        let r =
            parse_rule(&json!({"regex": "later", "action": "Suspend", "duration": "1m", "match_internal": true}), "x")
                .unwrap();
        assert!(r.matches("451 4.4.4 KumoMTA internal: try later"));
    }
}
