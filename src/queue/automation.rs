//! Applying automation rules (KumoMTA's TSA, in process): every transient failure or
//! bounce from a ready queue is matched against the rules of the latest shaping data;
//! a rule that fires applies its actions to the right ready or scheduled queue for its
//! duration, logs it, and the effect expires by itself. With `configure_redis_throttles`
//! a fired action is also published to the fleet ([`super::fleet_rules`]), and every node
//! applies it, with the same log line, for what is left of its duration.

use super::ready::ReadyQueue;
use crate::message::Message;
use crate::message::queue_name::QueueNameParts;
use crate::protocol::reply::Reply;
use crate::shaping::automation::{Action, Rule, Trigger};
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Which scheduled queues an effect covers.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Scope {
    /// The (routing) domain; none: every domain.
    pub domain: Option<String>,
    pub tenant: Option<String>,
    pub campaign: Option<String>,
    /// The exact queue (plain `Bounce`), or every queue of the tenant/campaign.
    #[serde(skip)]
    pub exact: bool,
}

impl Scope {
    /// Whether mail of a queue with these parts is covered.
    pub fn covers(&self, parts: &QueueNameParts) -> bool {
        let domain = parts.routing_domain.as_deref().unwrap_or(&parts.domain);
        if self.domain.as_deref().is_some_and(|d| !domain.eq_ignore_ascii_case(d)) {
            return false;
        }
        if self.exact {
            return parts.tenant == self.tenant && parts.campaign == self.campaign;
        }
        (self.tenant.is_none() || parts.tenant == self.tenant)
            && (self.campaign.is_none() || parts.campaign == self.campaign)
    }
}

/// One held effect, as the admin API lists it.
#[derive(Debug, Clone)]
pub struct Hold {
    pub id: String,
    pub scope: Scope,
    /// For ready-queue suspensions: the queue name.
    pub name: Option<String>,
    pub until: Instant,
    pub reason: String,
    /// For bounces: messages bounced so far, by scheduled queue.
    pub bounced: std::collections::BTreeMap<String, usize>,
    /// For bounces: the messages queued when it was made, being bounced now...
    pub matched: usize,
    /// ...and how many of them are bounced so far.
    pub done: usize,
    /// Made by an operator (the admin API), not by a shaping rule: what it bounces gets
    /// AdminBounce records, as the queued mail it bounced at once.
    pub admin: bool,
}

fn hold(scope: Scope, name: Option<String>, until: Instant, reason: String) -> Hold {
    Hold {
        id: uuid::Uuid::new_v4().to_string(),
        scope,
        name,
        until,
        reason,
        bounced: Default::default(),
        matched: 0,
        done: 0,
        admin: false,
    }
}

#[derive(Default)]
struct Effects {
    suspended_ready: Vec<Hold>,
    suspended_sched: Vec<Hold>,
    bounces: Vec<Hold>,
    /// Site or domain -> (option, value, until).
    site_config: HashMap<String, Vec<(String, Value, Instant)>>,
    domain_config: HashMap<String, Vec<(String, Value, Instant)>>,
}

/// What one rule action does, as the fleet shares it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Effect {
    SuspendReady { queue: String },
    SiteConfig { site: String, name: String, value: Value },
    DomainConfig { domain: String, name: String, value: Value },
    SuspendSched { scope: Scope, exact: bool },
    Bounce { scope: Scope, exact: bool },
}

/// One action a rule fired: its effect, the reason held messages get, and the log line.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Fired {
    pub id: String,
    pub effect: Effect,
    pub why: String,
    pub note: String,
}

/// The automation state of the process.
pub struct Automation {
    /// Where the rules come from (the latest shaping data) and the epoch actions move.
    runtime: std::sync::Arc<crate::policy::Runtime>,
    effects: Mutex<Effects>,
    /// (rule, site) -> recent match times, for threshold triggers.
    matches: Mutex<HashMap<(usize, String), VecDeque<Instant>>>,
    /// The fleet's rules in Redis, when shared.
    fleet: std::sync::OnceLock<Arc<super::fleet_rules::FleetRules>>,
}

fn live<T>(v: &mut Vec<T>, until: impl Fn(&T) -> Instant) {
    let now = Instant::now();
    v.retain(|x| until(x) > now);
}

impl Automation {
    /// No effects yet; rules from `runtime`'s shaping data.
    pub fn new(runtime: std::sync::Arc<crate::policy::Runtime>) -> Self {
        Automation { runtime, effects: Mutex::default(), matches: Mutex::default(), fleet: Default::default() }
    }

    /// Looks at a delivery response from `rq` for `message`.
    pub fn observe(&self, rq: &ReadyQueue, message: &Message, reply: &Reply) {
        let Some(data) = self.runtime.shaping.latest() else { return };
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
        let parts = QueueNameParts::parse(&message.queue_name());
        let domain = parts.routing_domain.clone().unwrap_or_else(|| parts.domain.clone());
        let scope = |tenant: bool, campaign: bool, exact: bool| Scope {
            domain: Some(domain.clone()),
            tenant: if tenant || exact { parts.tenant.clone() } else { None },
            campaign: if campaign || exact { parts.campaign.clone() } else { None },
            exact,
        };
        let mut fired = vec![];
        for action in &rule.actions {
            let suspended = format!("suspended by an automation rule of {}: {line}", rule.origin);
            let bounced = format!("bounced by an automation rule of {}: {line}", rule.origin);
            let (effect, target, why) = match action {
                Action::Suspend => {
                    (Effect::SuspendReady { queue: rq.name.clone() }, format!("ready queue {}", rq.name), suspended)
                }
                Action::SetConfig { name, value } => (
                    Effect::SiteConfig { site: rq.site.name.clone(), name: name.clone(), value: value.clone() },
                    format!("site {} ({name} = {value})", rq.site.name),
                    String::new(),
                ),
                Action::SetDomainConfig { name, value } => (
                    Effect::DomainConfig {
                        domain: rq.routing_domain.to_ascii_lowercase(),
                        name: name.clone(),
                        value: value.clone(),
                    },
                    format!("domain {} ({name} = {value})", rq.routing_domain),
                    String::new(),
                ),
                Action::SuspendTenant | Action::SuspendCampaign => {
                    let s = scope(true, matches!(action, Action::SuspendCampaign), false);
                    let target = format!("scheduled queues of {s:?}");
                    (Effect::SuspendSched { exact: s.exact, scope: s }, target, suspended)
                }
                Action::Bounce | Action::BounceTenant | Action::BounceCampaign => {
                    let s = match action {
                        Action::Bounce => scope(false, false, true),
                        Action::BounceTenant => scope(true, false, false),
                        _ => scope(true, true, false),
                    };
                    let target = format!("mail for {s:?}");
                    (Effect::Bounce { exact: s.exact, scope: s }, target, bounced)
                }
            };
            let note = format!(
                "a rule of shaping entry {} matched {line:?}: {action:?} on {target} for {:?}",
                rule.origin, rule.duration
            );
            let f = Fired { id: uuid::Uuid::new_v4().to_string(), effect, why, note };
            self.apply(&f, rule.duration, None);
            fired.push(f);
        }
        // paths refresh their options now, with the override
        self.runtime.epoch.bump();
        if let Some(fleet) = self.fleet.get() {
            fleet.publish(fired, rule.duration);
        }
    }

    /// Holds one fired action for `duration` (fired here, or on node `from`), logs it
    /// and lets it expire by itself; the caller bumps the epoch.
    pub(super) fn apply(&self, fired: &Fired, duration: Duration, from: Option<&str>) {
        let until = Instant::now() + duration;
        let mut e = self.effects.lock();
        let why = fired.why.clone();
        match &fired.effect {
            Effect::SuspendReady { queue } => {
                e.suspended_ready.push(hold(Scope::default(), Some(queue.clone()), until, why))
            }
            Effect::SiteConfig { site, name, value } | Effect::DomainConfig { domain: site, name, value } => {
                let map = match &fired.effect {
                    Effect::SiteConfig { .. } => &mut e.site_config,
                    _ => &mut e.domain_config,
                };
                let list = map.entry(site.clone()).or_default();
                list.retain(|(n, _, _)| n != name);
                list.push((name.clone(), value.clone(), until));
            }
            Effect::SuspendSched { scope, exact } => {
                e.suspended_sched.push(hold(Scope { exact: *exact, ..scope.clone() }, None, until, why))
            }
            Effect::Bounce { scope, exact } => {
                e.bounces.push(hold(Scope { exact: *exact, ..scope.clone() }, None, until, why))
            }
        }
        drop(e);
        let origin = from.map(|n| format!(" (fired on node {n})")).unwrap_or_default();
        tracing::warn!("automation: {}{origin}", fired.note);
        crate::metrics::core::automation_actions().fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (what, epoch) = (fired.note.clone(), self.runtime.epoch.clone());
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            tracing::info!("automation: expired: {what}");
            epoch.bump();
        });
    }

    /// Shares the rules that fire here with the fleet (and applies theirs).
    pub(super) fn share(&self, fleet: Arc<super::fleet_rules::FleetRules>) {
        if self.fleet.set(fleet).is_err() {
            tracing::warn!("automation: already shared with the fleet");
        }
    }

    /// Until when the ready queue `name` is suspended.
    pub fn ready_suspended(&self, name: &str) -> Option<Instant> {
        let mut e = self.effects.lock();
        if e.suspended_ready.is_empty() {
            return None;
        }
        live(&mut e.suspended_ready, |x| x.until);
        e.suspended_ready.iter().filter(|h| h.name.as_deref() == Some(name)).map(|h| h.until).max()
    }

    /// Until when the scheduled queue with these parts is suspended.
    pub fn sched_suspended(&self, parts: &QueueNameParts) -> Option<Instant> {
        let mut e = self.effects.lock();
        live(&mut e.suspended_sched, |x| x.until);
        e.suspended_sched.iter().filter(|h| h.scope.covers(parts)).map(|h| h.until).max()
    }

    /// Why mail for these parts is to be bounced now, and whether an operator said so.
    pub fn bounce(&self, parts: &QueueNameParts) -> Option<(String, bool)> {
        let mut e = self.effects.lock();
        live(&mut e.bounces, |x| x.until);
        e.bounces.iter().find(|h| h.scope.covers(parts)).map(|h| (h.reason.clone(), h.admin))
    }

    /// Adds the messages bounce hold `id` bounced when it was made, by queue.
    pub fn note_bounced(&self, id: &str, counts: &std::collections::BTreeMap<String, usize>) {
        let mut e = self.effects.lock();
        if let Some(h) = e.bounces.iter_mut().find(|h| h.id == id) {
            for (queue, n) in counts {
                *h.bounced.entry(queue.clone()).or_default() += n;
                h.done += n;
            }
        }
    }

    /// Sets how many queued messages bounce `id` is bouncing.
    pub fn note_matched(&self, id: &str, n: usize) {
        if let Some(h) = self.effects.lock().bounces.iter_mut().find(|h| h.id == id) {
            h.matched = n;
        }
    }

    /// Counts `n` messages of queue `name` bounced by the bounce hold covering `parts`.
    pub fn count_bounced(&self, name: &str, parts: &QueueNameParts, n: usize) {
        let mut e = self.effects.lock();
        if let Some(h) = e.bounces.iter_mut().find(|h| h.scope.covers(parts)) {
            *h.bounced.entry(name.to_string()).or_default() += n;
        }
    }

    /// Holds an admin effect: `kind` is "bounce", "suspend" or "suspend-ready-q".
    pub fn add(&self, kind: &str, scope: Scope, name: Option<String>, duration: Duration, reason: String) -> Hold {
        let mut h = hold(scope, name, Instant::now() + duration, reason);
        h.admin = true;
        let mut e = self.effects.lock();
        match kind {
            "bounce" => e.bounces.push(h.clone()),
            "suspend" => e.suspended_sched.push(h.clone()),
            _ => e.suspended_ready.push(h.clone()),
        }
        h
    }

    /// The live holds of one kind.
    pub fn list(&self, kind: &str) -> Vec<Hold> {
        let mut e = self.effects.lock();
        let list = match kind {
            "bounce" => &mut e.bounces,
            "suspend" => &mut e.suspended_sched,
            _ => &mut e.suspended_ready,
        };
        live(list, |x| x.until);
        list.clone()
    }

    /// Ends a hold early and returns it; `None` when there is no such id.
    pub fn cancel(&self, kind: &str, id: &str) -> Option<Hold> {
        let mut e = self.effects.lock();
        let list = match kind {
            "bounce" => &mut e.bounces,
            "suspend" => &mut e.suspended_sched,
            _ => &mut e.suspended_ready,
        };
        let at = list.iter().position(|h| h.id == id)?;
        Some(list.remove(at))
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
