// Example deferred-queue router in Go (world deferred-router), part (a) of
// plugins/example-policy.lua and the twin of plugins/rust/deferred-router: refuse
// blocklisted senders with 550 5.7.1, then set the tenant, campaign and queue meta from
// the X-Tenant, X-Campaign and X-Queue headers.
//
// wasmta:world deferred-router
package main

import "wasmta.local/plugins/deferred-router/wasmta"

var blockedSenders = map[string]bool{"spammer@bulk.example": true}
var blockedDomains = map[string]bool{"blocked.example": true}
var routingHeaders = [][2]string{{"X-Tenant", "tenant"}, {"X-Campaign", "campaign"}, {"X-Queue", "queue"}}

// Plugin holds the exported event handlers.
type Plugin struct{}

func init() { wasmta.Register(Plugin{}) }

func (Plugin) SmtpServerMessageDeferredInject(msg wasmta.Message, conn wasmta.ConnMeta) *wasmta.Rejection {
	sender := msg.Sender()
	if blockedSenders[sender.Email] || blockedDomains[sender.Domain] {
		return wasmta.Reject(550, "5.7.1", "sender "+sender.Email+" is blocklisted")
	}
	for _, h := range routingHeaders {
		if value, ok := msg.GetFirstNamedHeaderValue(h[0]).Get(); ok {
			if err := msg.SetMetaString(h[1], value); err != nil {
				return wasmta.Reject(451, "4.3.0", err.Error())
			}
		}
	}
	return nil
}

func main() {}
