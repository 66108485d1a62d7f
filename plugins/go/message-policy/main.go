// Example policy component in Go (world message-policy), part (c) of
// plugins/example-policy.lua and the twin of plugins/rust/message-policy: reject with
// 550 5.7.1 when the message carries X-Block, with 552 5.3.4 when it is larger than
// 64 KiB, set the tenant meta from X-Tenant, and add X-Wasm-Policy: checked.
//
// wasmta:world message-policy
package main

import "wasmta.local/plugins/message-policy/wasmta"

const policySizeLimit = 65536

// Plugin holds the exported event handlers.
type Plugin struct{}

func init() { wasmta.Register(Plugin{}) }

func (Plugin) SmtpServerMessageReceived(msg wasmta.Message, conn wasmta.ConnMeta) *wasmta.Rejection {
	if reason, ok := msg.GetFirstNamedHeaderValue("X-Block").Get(); ok {
		return wasmta.Reject(550, "5.7.1", "blocked by wasm policy: "+reason)
	}
	if msg.DataSize() > policySizeLimit {
		return wasmta.Reject(552, "5.3.4", "message exceeds the policy size limit")
	}
	if tenant, ok := msg.GetFirstNamedHeaderValue("X-Tenant").Get(); ok {
		if err := msg.SetMetaString("tenant", tenant); err != nil {
			return wasmta.Reject(451, "4.3.0", err.Error())
		}
	}
	msg.PrependHeader("X-Wasm-Policy", "checked")
	wasmta.Log(wasmta.LevelDebug, "message "+msg.Id()+" checked")
	return nil
}

func main() {}
