// Example routing component in Go (world routing), part (b) of
// plugins/example-policy.lua and the twin of plugins/rust/router: domains of the form
// <port>.smarthost.test go to 127.0.0.1:<port> with TLS disabled and at most two
// connections; get_egress_path_config answers other domains from an embedded table;
// everything else keeps wasmta's defaults (None: not mine).
//
// wasmta:world routing
package main

import (
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

func (Plugin) GetQueueConfig(parts QueueNameParts) (Option[QueueConfig], *Rejection) {
	domain, ok := parts.RoutingDomain.Get()
	if !ok {
		domain = parts.Domain.Value
	}
	port, ok := smarthostPort(domain)
	if !ok {
		return None[QueueConfig](), nil
	}
	mx := []MxEntry{{Name: "127.0.0.1:" + strconv.Itoa(port)}}
	return Some(QueueConfig{
		RetryInterval: Some("1s"),
		Protocol:      Some(DeliveryProtocolSmtp(mx)),
	}), nil
}

func (Plugin) GetEgressPool(name string) (Option[EgressPool], *Rejection) {
	return None[EgressPool](), nil
}

func (Plugin) GetEgressSource(name string) (Option[EgressSource], *Rejection) {
	return None[EgressSource](), nil
}

func (Plugin) GetEgressPathConfig(routingDomain, egressSource, siteName string) (Option[EgressPathConfig], *Rejection) {
	if _, ok := smarthostPort(routingDomain); ok {
		return Some(EgressPathConfig{
			ConnectionLimit:           Some("2"),
			EnableTls:                 Some(TlsModeDisabled),
			MaxDeliveriesPerConnection: Some(uint32(100)),
			EhloDomain:                Some("router.wasm.test"),
			ProviderName:              Some("wasm-router"),
		}), nil
	}
	e, ok := egressTable[routingDomain]
	if !ok {
		return None[EgressPathConfig](), nil
	}
	cfg := EgressPathConfig{ConnectionLimit: Some(e.connectionLimit)}
	if e.maxMessageRate != "" {
		cfg.MaxMessageRate = Some(e.maxMessageRate)
	}
	if e.deliveriesPerConn != 0 {
		cfg.MaxDeliveriesPerConnection = Some(e.deliveriesPerConn)
	}
	return Some(cfg), nil
}

func main() {}
