-- wasmta default policy: a KumoMTA-style init.lua that runs with no outside services.
-- Listener on 127.0.0.1:2525, embedded spool and logs under ./data, HTTP on 127.0.0.1:8000.
-- Relaying is allowed from localhost only (the KumoMTA default relay_hosts).
-- Environment: WASMTA_SPOOL, WASMTA_LOGS, WASMTA_LISTEN, WASMTA_HTTP_LISTEN, WASMTA_SMARTHOST.

kumo.on('init', function()
  kumo.define_spool {
    name = 'data',
    path = os.getenv('WASMTA_SPOOL') or 'data/spool',
    kind = 'RocksDB',
  }
  kumo.define_spool {
    name = 'meta',
    path = os.getenv('WASMTA_SPOOL') or 'data/spool',
    kind = 'RocksDB',
  }
  kumo.configure_local_logs {
    log_dir = os.getenv('WASMTA_LOGS') or 'data/logs',
    max_segment_duration = '1 minute',
  }
  kumo.start_http_listener {
    listen = os.getenv('WASMTA_HTTP_LISTEN') or '127.0.0.1:8000',
  }
  kumo.start_esmtp_listener {
    listen = os.getenv('WASMTA_LISTEN') or '127.0.0.1:2525',
    hostname = 'wasmta.localhost',
    relay_hosts = { '127.0.0.1', '::1' },
  }
end)

kumo.on('smtp_server_message_received', function(msg, conn_meta)
  -- tenant and campaign from headers, as many KumoMTA configs do
  local tenant = msg:get_first_named_header_value('X-Tenant')
  if tenant then
    msg:set_meta('tenant', tenant)
    msg:remove_all_named_headers('X-Tenant')
  end
end)

-- WASMTA_SMARTHOST=host:port relays all mail there instead of looking up MX records
-- (the README's quick start points it at `wasmta sink`; in production, your relay).
local smarthost = os.getenv('WASMTA_SMARTHOST')
if smarthost and smarthost ~= '' then
  kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
    return kumo.make_queue_config {
      protocol = { smtp = { mx_list = { smarthost } } },
    }
  end)
end
