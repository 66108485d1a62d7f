//! Applying automation rules (KumoMTA's TSA, in process): every transient failure or
//! bounce from a ready queue is matched against the rules of the latest shaping data;
//! a rule that fires applies its actions to the right ready or scheduled queue for its
//! duration, logs it, and the effect expires by itself.

use super::ready::ReadyQueue;
use crate::message::Message;
use crate::message::queue_name::QueueNameParts;
use crate::shaping::automation::{Action, Rule, Trigger};
use crate::smtp::protocol::reply::Reply;
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Which scheduled queues an effect covers.
#[derive(Debug, Clone, PartialEq)]
struct Scope {
    domain: String,
    tenant: Option<String>,
    campaign: Option<String>,
    /// The exact queue (plain `Bounce`), or every queue of the tenant/campaign.
    exact: bool,
}

impl Scope {
    fn covers(&self, parts: &QueueNameParts) -> bool {
        let domain = parts.routing_domain.as_deref().unwrap_or(&parts.domain);
        if !domain.eq_ignore_ascii_case(&self.domain) {
            return false;
        }
        if self.exact {
            return parts.tenant == self.tenant && parts.campaign == self.campaign;
        }
        (self.tenant.is_none() || parts.tenant == self.tenant)
            && (self.campaign.is_none() || parts.campaign == self.campaign)
    }
}

#[derive(Default)]
struct Effects {
    /// Ready queue name -> until.
    suspended_ready: HashMap<String, Instant>,
    suspended_sched: Vec<(Scope, Instant)>,
    bounces: Vec<(Scope, Instant, String)>,
    /// Site or domain -> (option, value, until).
    site_config: HashMap<String, Vec<(String, Value, Instant)>>,
    domain_config: HashMap<String, Vec<(String, Value, Instant)>>,
}

/// The automation state of the process.
#[derive(Default)]
pub struct Automation {
    effects: Mutex<Effects>,
    /// (rule, site) -> recent match times, for threshold triggers.
    matches: Mutex<HashMap<(usize, String), VecDeque<Instant>>>,
}

fn live<T>(v: &mut Vec<T>, until: impl Fn(&T) -> Instant) {
    let now = Instant::now();
    v.retain(|x| until(x) > now);
}

impl Automation {
    /// Looks at a delivery response from `rq` for `message`.
    pub fn observe(&self, rq: &ReadyQueue, message: &Message, reply: &Reply) {
        let Some(data) = crate::shaping::store::latest() else { return };
        let hosts: Vec<String> = rq.site.hosts.iter().map(|h| h.name.clone()).collect();
        let rules = data.shaping.automation_rules(&rq.routing_domain, &rq.site.name, &hosts);
        if rules.is_empty() {
            return;
        }
        let line = reply.to_line();
        for rule in rules {
            if rule.matches(&line) && self.triggered(&rule, &rq.site.name) {
                self.fire(&rule, rq, message, &line);
            }
        }
    }

    fn triggered(&self, rule: &Arc<Rule>, site: &str) -> bool {
        let Trigger::Threshold { count, period } = rule.trigger else { return true };
        let now = Instant::now();
        let mut m = self.matches.lock();
        let seen = m.entry((Arc::as_ptr(rule) as usize, site.to_string())).or_default();
        seen.push_back(now);
        while seen.front().is_some_and(|t| now.duration_since(*t) > period) {
            seen.pop_front();
        }
        if seen.len() as u64 >= count {
            seen.clear();
            return true;
        }
        false
    }

    fn fire(&self, rule: &Rule, rq: &ReadyQueue, message: &Message, line: &str) {
        let until = Instant::now() + rule.duration;
        let parts = QueueNameParts::parse(&message.queue_name());
        let domain = parts.routing_domain.clone().unwrap_or_else(|| parts.domain.clone());
        let scope = |tenant: bool, campaign: bool, exact: bool| Scope {
            domain: domain.clone(),
            tenant: if tenant || exact { parts.tenant.clone() } else { None },
            campaign: if campaign || exact { parts.campaign.clone() } else { None },
            exact,
        };
        let mut e = self.effects.lock();
        for action in &rule.actions {
            let target = match action {
                Action::Suspend => {
                    e.suspended_ready.insert(rq.name.clone(), until);
                    format!("ready queue {}", rq.name)
                }
                Action::SetConfig { name, value } => {
                    let list = e.site_config.entry(rq.site.name.clone()).or_default();
                    list.retain(|(n, _, _)| n != name);
                    list.push((name.clone(), value.clone(), until));
                    format!("site {} ({name} = {value})", rq.site.name)
                }
                Action::SetDomainConfig { name, value } => {
                    let list = e.domain_config.entry(rq.routing_domain.to_ascii_lowercase()).or_default();
                    list.retain(|(n, _, _)| n != name);
                    list.push((name.clone(), value.clone(), until));
                    format!("domain {} ({name} = {value})", rq.routing_domain)
                }
                Action::SuspendTenant | Action::SuspendCampaign => {
                    let s = scope(true, matches!(action, Action::SuspendCampaign), false);
                    let target = format!("scheduled queues of {s:?}");
                    e.suspended_sched.push((s, until));
                    target
                }
                Action::Bounce | Action::BounceTenant | Action::BounceCampaign => {
                    let s = match action {
                        Action::Bounce => scope(false, false, true),
                        Action::BounceTenant => scope(true, false, false),
                        _ => scope(true, true, false),
                    };
                    let target = format!("mail for {s:?}");
                    e.bounces.push((s, until, format!("bounced by an automation rule of {}: {line}", rule.origin)));
                    target
                }
            };
            tracing::warn!(
                "automation: a rule of shaping entry {} matched {line:?}: {action:?} on {target} for {:?}",
                rule.origin,
                rule.duration
            );
            crate::metrics::counter("automation_actions_total", "Automation rule actions applied.", &[])
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (what, origin, duration) = (format!("{action:?} on {target}"), rule.origin.clone(), rule.duration);
            tokio::spawn(async move {
                tokio::time::sleep(duration).await;
                tracing::info!("automation: {what} (rule of {origin}) expired");
                crate::policy::bump_config_epoch();
            });
        }
        drop(e);
        // paths refresh their options now, with the override
        crate::policy::bump_config_epoch();
    }

    /// Until when the ready queue `name` is suspended.
    pub fn ready_suspended(&self, name: &str) -> Option<Instant> {
        let mut e = self.effects.lock();
        match e.suspended_ready.get(name) {
            Some(until) if *until > Instant::now() => Some(*until),
            Some(_) => {
                e.suspended_ready.remove(name);
                None
            }
            None => None,
        }
    }

    /// Until when the scheduled queue with these parts is suspended.
    pub fn sched_suspended(&self, parts: &QueueNameParts) -> Option<Instant> {
        let mut e = self.effects.lock();
        live(&mut e.suspended_sched, |x| x.1);
        e.suspended_sched.iter().filter(|(s, _)| s.covers(parts)).map(|(_, u)| *u).max()
    }

    /// Why mail for these parts is to be bounced now.
    pub fn bounce(&self, parts: &QueueNameParts) -> Option<String> {
        let mut e = self.effects.lock();
        live(&mut e.bounces, |x| x.1);
        e.bounces.iter().find(|(s, _, _)| s.covers(parts)).map(|(_, _, why)| why.clone())
    }

    /// The egress path options automation overrides for this site and domain.
    pub fn overrides(&self, site: &str, domain: &str) -> Vec<(String, Value)> {
        let mut e = self.effects.lock();
        if e.site_config.is_empty() && e.domain_config.is_empty() {
            return vec![];
        }
        let mut out = vec![];
        let domain = domain.to_ascii_lowercase();
        let Effects { site_config, domain_config, .. } = &mut *e;
        for (map, key) in [(site_config, site.to_string()), (domain_config, domain)] {
            if let Some(list) = map.get_mut(&key) {
                live(list, |x| x.2);
                out.extend(list.iter().map(|(n, v, _)| (n.clone(), v.clone())));
                if list.is_empty() {
                    map.remove(&key);
                }
            }
        }
        out
    }

    /// Time left until `until`, at most a second (suspended loops re-check that often).
    pub fn nap(until: Instant) -> Duration {
        until.saturating_duration_since(Instant::now()).min(Duration::from_secs(1))
    }
}
