//! Automation rules shared by the fleet through Redis (KumoMTA's TSA, without a daemon):
//! a node whose rule fires writes each action into one Redis hash, with its expiry on the
//! Redis server's clock; every node reads the hash every 250 ms and applies the actions it
//! has not seen yet for the time they have left, so a node that starts later picks up
//! the ones still live. One hash, one key: a Redis Cluster serves it like one server.

use super::automation::Fired;
use super::manager::Shared;
use crate::shaping::redis::Redis;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const KEY: &str = "wasmta:automation";
/// How often the hash is read.
pub const POLL: Duration = Duration::from_millis(250);

/// Stores an action: ARGV id, duration ms, JSON. The value is "<until ms>|<JSON>".
const PUBLISH: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local untl = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.0f', untl) .. '|' .. ARGV[3])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) + 1000 then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + 1000)
end
return 1
"#;

/// Reads the live actions (dropping the expired): { now ms, id, value, id, value, ... }.
const READ: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local out = { string.format('%.0f', now) }
for i = 1, #all, 2 do
  local untl = tonumber(string.match(all[i + 1], '^(%d+)|'))
  if not untl or untl <= now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
  end
end
return out
"#;

/// The fleet side of this node's automation.
pub struct FleetRules {
    redis: Arc<Redis>,
    node: String,
    /// Actions applied here (fired or read), until they expire.
    seen: Mutex<HashMap<String, Instant>>,
    publish: redis::Script,
    read: redis::Script,
}

/// An action as stored: the node it fired on and what it does.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    node: String,
    fired: Fired,
}

impl FleetRules {
    /// Publishes actions fired here (in the background: a slow Redis never holds up the
    /// delivery whose answer fired the rule).
    pub fn publish(self: &Arc<Self>, fired: Vec<Fired>, duration: Duration) {
        let until = Instant::now() + duration;
        self.seen.lock().extend(fired.iter().map(|f| (f.id.clone(), until)));
        let this = self.clone();
        tokio::spawn(async move {
            for f in fired {
                let (id, note) = (f.id.clone(), f.note.clone());
                let json = match serde_json::to_string(&Stored { node: this.node.clone(), fired: f }) {
                    Ok(j) => j,
                    Err(e) => {
                        tracing::error!("automation: {note}: not shared with the fleet: {e}");
                        continue;
                    }
                };
                let mut invocation = this.publish.key(KEY);
                invocation.arg(&id).arg(duration.as_millis() as u64).arg(json);
                if let Err(e) = this.redis.script::<i64>("automation publish", invocation).await {
                    tracing::error!("automation: {note}: not shared with the fleet: {e}");
                }
            }
        });
    }

    /// The live actions not applied here yet, each with the time it has left.
    async fn unseen(&self) -> Result<Vec<(Stored, Duration)>, String> {
        let reply: Vec<String> = self.redis.script("automation read", self.read.key(KEY)).await?;
        let Some((now, rest)) = reply.split_first() else { return Ok(vec![]) };
        let now: u64 = now.parse().map_err(|_| format!("automation read: bad time {now:?}"))?;
        let mut seen = self.seen.lock();
        let at = Instant::now();
        seen.retain(|_, until| *until > at);
        let mut out = vec![];
        for pair in rest.chunks(2) {
            let [id, value] = pair else { continue };
            if seen.contains_key(id) {
                continue;
            }
            let Some((until, json)) = value.split_once('|') else { continue };
            let left = Duration::from_millis(until.parse::<u64>().unwrap_or(0).saturating_sub(now));
            match serde_json::from_str::<Stored>(json) {
                Ok(stored) => {
                    seen.insert(id.clone(), at + left);
                    out.push((stored, left));
                }
                Err(e) => {
                    // another version's action: said once, then skipped
                    seen.insert(id.clone(), at + left);
                    tracing::error!("automation: action {id} from the fleet could not be read: {e}");
                }
            }
        }
        Ok(out)
    }
}

/// Starts sharing `shared`'s automation through `redis`; `node` names this node.
pub(super) fn start(shared: &Arc<Shared>, redis: Arc<Redis>, node: &str) {
    let fleet = Arc::new(FleetRules {
        redis,
        node: node.to_string(),
        seen: Default::default(),
        publish: redis::Script::new(PUBLISH),
        read: redis::Script::new(READ),
    });
    shared.automation.share(fleet.clone());
    let shared = Arc::downgrade(shared);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(POLL).await;
            let Some(shared) = shared.upgrade() else { return };
            if shared.stopping() {
                return;
            }
            // errors are counted and logged by the Redis layer; the next read tries again
            let Ok(actions) = fleet.unseen().await else { continue };
            if actions.is_empty() {
                continue;
            }
            for (stored, left) in &actions {
                shared.automation.apply(&stored.fired, *left, Some(&stored.node));
            }
            // paths refresh their options; ready queues look at suspensions per message
            shared.policy.runtime().epoch.bump();
        }
    });
}
