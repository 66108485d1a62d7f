// Example routing component in Go (world routing), part (b) of
// plugins/example-policy.lua and the twin of plugins/rust/router: domains of the form
// <port>.smarthost.test go to 127.0.0.1:<port> with TLS disabled and at most two
// connections; get_egress_path_config answers other domains from an embedded table;
// everything else keeps wasmta's defaults (None: not mine).
//
// wasmta:world routing
package main

import (
	"wasmta.local/plugins/router/wasmta"
	"strconv"
	"strings"
)

type egress struct {
	connectionLimit   string
	maxMessageRate    string
	deliveriesPerConn uint32
}

var egressTable = map[string]egress{
	"gmail.com": {connectionLimit: "5", maxMessageRate: "50/s"},
	"yahoo.com": {connectionLimit: "3", deliveriesPerConn: 20},
}

func smarthostPort(domain string) (int, bool) {
	prefix, ok := strings.CutSuffix(domain, ".smarthost.test")
	if !ok {
		return 0, false
	}
	port, err := strconv.ParseUint(prefix, 10, 16)
	return int(port), err == nil
}

// Plugin holds the exported event handlers.
type Plugin struct{}

func init() { wasmta.Register(Plugin{}) }

func (Plugin) GetQueueConfig(parts wasmta.QueueNameParts) (wasmta.Option[wasmta.QueueConfig], *wasmta.Rejection) {
	domain, ok := parts.RoutingDomain.Get()
	if !ok {
		domain = parts.Domain.Value
	}
	port, ok := smarthostPort(domain)
	if !ok {
		return wasmta.None[wasmta.QueueConfig](), nil
	}
	mx := []wasmta.MxEntry{{Name: "127.0.0.1:" + strconv.Itoa(port)}}
	return wasmta.Some(wasmta.QueueConfig{
		RetryInterval: wasmta.Some("1s"),
		Protocol:      wasmta.Some(wasmta.DeliveryProtocolSmtp(mx)),
	}), nil
}

func (Plugin) GetEgressPool(name string) (wasmta.Option[wasmta.EgressPool], *wasmta.Rejection) {
	return wasmta.None[wasmta.EgressPool](), nil
}

func (Plugin) GetEgressSource(name string) (wasmta.Option[wasmta.EgressSource], *wasmta.Rejection) {
	return wasmta.None[wasmta.EgressSource](), nil
}

func (Plugin) GetEgressPathConfig(routingDomain, egressSource, siteName string) (wasmta.Option[wasmta.EgressPathConfig], *wasmta.Rejection) {
	if _, ok := smarthostPort(routingDomain); ok {
		return wasmta.Some(wasmta.EgressPathConfig{
			ConnectionLimit:           wasmta.Some("2"),
			EnableTls:                 wasmta.Some(wasmta.TlsModeDisabled),
			MaxDeliveriesPerConnection: wasmta.Some(uint32(100)),
			EhloDomain:                wasmta.Some("router.wasm.test"),
			ProviderName:              wasmta.Some("wasm-router"),
		}), nil
	}
	e, ok := egressTable[routingDomain]
	if !ok {
		return wasmta.None[wasmta.EgressPathConfig](), nil
	}
	cfg := wasmta.EgressPathConfig{ConnectionLimit: wasmta.Some(e.connectionLimit)}
	if e.maxMessageRate != "" {
		cfg.MaxMessageRate = wasmta.Some(e.maxMessageRate)
	}
	if e.deliveriesPerConn != 0 {
		cfg.MaxDeliveriesPerConnection = wasmta.Some(e.deliveriesPerConn)
	}
	return wasmta.Some(cfg), nil
}

func main() {}
