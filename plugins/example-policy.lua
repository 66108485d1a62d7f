-- The example policy. plugins/rust/{message-policy,deferred-router,router} and
-- plugins/go/{message-policy,deferred-router,router} implement exactly this as Wasm
-- components; tests/wasm.rs sends one corpus through the Lua, Rust and Go versions and
-- compares the SMTP replies and the log records.

-- (c) smtp_server_message_received: reject on a header or a size rule, tag the tenant,
-- add a header.
local POLICY_SIZE_LIMIT = 65536
kumo.on('smtp_server_message_received', function(msg)
  local reason = msg:get_first_named_header_value('X-Block')
  if reason then
    kumo.reject(550, '5.7.1 blocked by wasm policy: ' .. reason)
  end
  if #msg:get_data() > POLICY_SIZE_LIMIT then
    kumo.reject(552, '5.3.4 message exceeds the policy size limit')
  end
  local tenant = msg:get_first_named_header_value('X-Tenant')
  if tenant then
    msg:set_meta('tenant', tenant)
  end
  msg:prepend_header('X-Wasm-Policy', 'checked')
end)

-- (a) smtp_server_message_deferred_inject: refuse blocklisted senders, then route by
-- tenant, campaign and queue from headers.
local BLOCKED_SENDERS = { ['spammer@bulk.example'] = true }
local BLOCKED_DOMAINS = { ['blocked.example'] = true }
kumo.on('smtp_server_message_deferred_inject', function(msg)
  local sender = msg:sender()
  if BLOCKED_SENDERS[sender.email] or BLOCKED_DOMAINS[sender.domain] then
    kumo.reject(550, '5.7.1 sender ' .. sender.email .. ' is blocklisted')
  end
  for _, pair in ipairs { { 'X-Tenant', 'tenant' }, { 'X-Campaign', 'campaign' }, { 'X-Queue', 'queue' } } do
    local value = msg:get_first_named_header_value(pair[1])
    if value then
      msg:set_meta(pair[2], value)
    end
  end
end)

-- (b) routing: domains '<port>.smarthost.test' go to 127.0.0.1:<port>; egress paths come
-- from an embedded table.
local EGRESS = {
  ['gmail.com'] = { connection_limit = 5, max_message_rate = '50/s' },
  ['yahoo.com'] = { connection_limit = 3, max_deliveries_per_connection = 20 },
}
local function smarthost_port(domain)
  return domain and domain:match('^(%d+)%.smarthost%.test$')
end
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  local port = smarthost_port(routing_domain or domain)
  if port then
    return kumo.make_queue_config {
      retry_interval = '1s',
      protocol = { smtp = { mx_list = { '127.0.0.1:' .. port } } },
    }
  end
end)
kumo.on('get_egress_path_config', function(routing_domain, egress_source, site_name)
  if smarthost_port(routing_domain) then
    return kumo.make_egress_path {
      connection_limit = 2,
      enable_tls = 'Disabled',
      max_deliveries_per_connection = 100,
      ehlo_domain = 'router.wasm.test',
      provider_name = 'wasm-router',
    }
  end
  local e = EGRESS[routing_domain]
  if e then
    return kumo.make_egress_path(e)
  end
end)
