-- policy-extras.rollup: our implementation of KumoMTA's rollup helper, for wasmta.
-- Same functions and behaviour as KumoMTA's module of the same name; it reads no files.
--
--   local rollup = require 'policy-extras.rollup'
--
-- MX host suffix rollup: messages whose recipient domain's MX hosts all end in a suffix
-- (with the trailing dot) get that suffix's routing_domain, so they share its ready queue:
--
--   kumo.on('smtp_server_message_received', function(msg)
--     rollup.reroute_based_on_mx_host_suffix(msg, { ['.olc.protection.outlook.com.'] = 'outlook.com' })
--   end)
--
-- IP rollup: the routing domain (which must end in .ip_rollup) is chosen by the most
-- preferred MX hosts; get_queue_config then pins delivery to those hosts' addresses:
--
--   rollup.reroute_using_ip_rollup(msg, { ['.mail.protection.outlook.com.'] = 'outlook.ip_rollup' })
--   kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
--     local params = {}
--     rollup.apply_ip_rollup_to_queue_config(domain, routing_domain, params)
--     return kumo.make_queue_config(params)
--   end)
--
-- Shaping for the result uses the routing domain: ["outlook.ip_rollup"] mx_rollup = false.
-- DNS failures are logged and leave the message as it was.
local utils = require 'policy-extras.policy_utils'
local mod = {}

-- True when every host ends in suffix (and there is at least one host).
local function all_hosts_match(hosts, suffix)
  if not hosts or #hosts == 0 then
    return false
  end
  for _, host in ipairs(hosts) do
    if not utils.ends_with(host, suffix) then
      return false
    end
  end
  return true
end

-- The mapping's suffixes, longest (most specific) first, so the choice never depends on
-- table order when more than one would match.
local function suffixes(mapping)
  local list = utils.table_keys(mapping)
  table.sort(list, function(a, b)
    if #a ~= #b then
      return #a > #b
    end
    return a < b
  end)
  return list
end

local function first_match(hosts, mapping)
  for _, suffix in ipairs(suffixes(mapping)) do
    if all_hosts_match(hosts, suffix) then
      return mapping[suffix]
    end
  end
  return nil
end

-- The most preferred (lowest preference value) MX hosts of domain.
local function most_preferred_hosts(domain)
  local mx = kumo.dns.lookup_mx(domain)
  local best, hosts = nil, nil
  for pref, pref_hosts in pairs(mx.by_pref or {}) do
    local n = tonumber(pref)
    if n and (best == nil or n < best) then
      best, hosts = n, pref_hosts
    end
  end
  return hosts or {}
end

local function recipient_domain(msg)
  local list = msg:recipient_list()
  local first = list and list[1]
  if not first then
    error('the message has no recipient', 0)
  end
  return first.domain
end

-- Sets meta routing_domain to the mapping value whose suffix every MX host of the first
-- recipient's domain ends in (unless that is the recipient domain itself).
function mod.reroute_based_on_mx_host_suffix(msg, mapping)
  local ok, err = pcall(function()
    local domain = recipient_domain(msg)
    local routing_domain = first_match(kumo.dns.lookup_mx(domain).hosts, mapping)
    if routing_domain and routing_domain ~= domain then
      msg:set_meta('routing_domain', routing_domain)
    end
  end)
  if not ok then
    kumo.log_warn(string.format('while checking mx host pattern: %s', tostring(err)))
  end
end

local warned = {}

-- Sets meta routing_domain to the mapping value whose suffix every most preferred MX host
-- ends in; clears it when none matches. Mapping values must end in .ip_rollup.
function mod.reroute_using_ip_rollup(msg, mapping)
  local ok, err = pcall(function()
    local routing_domain = first_match(most_preferred_hosts(recipient_domain(msg)), mapping)
    if routing_domain and not utils.ends_with(routing_domain, '.ip_rollup') and not warned[routing_domain] then
      warned[routing_domain] = true
      kumo.log_warn(
        string.format(
          "rollup.reroute_using_ip_rollup: routing domain '%s' does not end in .ip_rollup, "
            .. 'so apply_ip_rollup_to_queue_config will not pin its hosts',
          routing_domain
        )
      )
    end
    msg:set_meta('routing_domain', routing_domain)
  end)
  if not ok then
    kumo.log_warn(string.format('while checking ip_rollup: %s', tostring(err)))
  end
end

-- For a routing domain ending in .ip_rollup, sets params.protocol to deliver to the most
-- preferred MX hosts of domain, one mx_list entry per address, hosts in MX order and each
-- host's addresses sorted, so equal sets of hosts give the same ready queue.
function mod.apply_ip_rollup_to_queue_config(domain, routing_domain, params)
  if routing_domain == nil or not utils.ends_with(routing_domain, '.ip_rollup') then
    return
  end
  local mx_list = {}
  for _, host in ipairs(most_preferred_hosts(domain)) do
    local addrs = kumo.dns.lookup_addr(host)
    table.sort(addrs)
    for _, addr in ipairs(addrs) do
      table.insert(mx_list, { name = host, addr = addr })
    end
  end
  params.protocol = { smtp = { mx_list = mx_list } }
end

return mod
