//! Host bindings generated from `wit/` (world `policy`): the resource types map to our
//! own `Message` and `ConnMeta`, host imports are synchronous and may trap, exports are
//! called asynchronously.

wasmtime::component::bindgen!({
    path: "wit",
    world: "policy",
    imports: { default: trappable },
    exports: { default: async },
    with: {
        "wasmta:policy/types.message": crate::message::Message,
        "wasmta:policy/types.conn-meta": crate::policy::ConnMeta,
    },
});
