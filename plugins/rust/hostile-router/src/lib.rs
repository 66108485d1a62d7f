//! A routing component (world `routing`) that traps for the domain `trap.example`, in
//! `get_queue_config` and `get_egress_path_config`; every other domain keeps the defaults.
//! wasmta's sandbox tests use it to show a policy failure during delivery requeues the
//! message as a transient failure (reliability-tests T-49).

wit_bindgen::generate!({ path: "../../../wit", world: "routing" });

use exports::wasmta::policy::egress::Guest as Egress;
use exports::wasmta::policy::queue_config::Guest as Queues;
use wasmta::policy::types::{EgressPathConfig, EgressPool, EgressSource, QueueConfig, QueueNameParts, Rejection};

struct Router;

impl Queues for Router {
    fn get_queue_config(parts: QueueNameParts) -> Result<Option<QueueConfig>, Rejection> {
        if parts.domain.as_deref() == Some("trap.example") {
            panic!("hostile router traps for trap.example");
        }
        Ok(None)
    }
}

impl Egress for Router {
    fn get_egress_pool(_name: String) -> Result<Option<EgressPool>, Rejection> {
        Ok(None)
    }

    fn get_egress_source(_name: String) -> Result<Option<EgressSource>, Rejection> {
        Ok(None)
    }

    fn get_egress_path_config(
        domain: String,
        _source: String,
        _site: String,
    ) -> Result<Option<EgressPathConfig>, Rejection> {
        if domain == "trap.example" {
            panic!("hostile router traps for trap.example");
        }
        Ok(None)
    }
}

export!(Router);
