//! Host bindings generated from `wit/` (world `policy`): the resource types map to our
//! own `Message` and `ConnMeta`, host imports may trap and are synchronous except those that
//! wait (DNS, shaping, HTTP, throttles, which may ask Redis), exports are called asynchronously.

wasmtime::component::bindgen!({
    path: "wit",
    world: "policy",
    imports: {
        "wasmta:policy/host.lookup-mx": async | trappable,
        "wasmta:policy/host.shaped-egress-path-config": async | trappable,
        "wasmta:policy/http.send": async | trappable,
        "wasmta:policy/host.throttle": async | trappable,
        default: trappable,
    },
    exports: { default: async },
    // records become the JSON the `config` types decode by their field names (records.rs)
    additional_derives: [serde::Serialize, serde::Deserialize],
    with: {
        "wasmta:policy/types.message": crate::message::Message,
        "wasmta:policy/types.conn-meta": crate::policy::ConnMeta,
    },
});
