-- policy-extras.queue: our implementation of KumoMTA's queue helper, for wasmta.
-- Same API, file format and behaviour as KumoMTA's module of the same name.
--
--   local queue_module = require 'policy-extras.queue'
--   local queue_helper = queue_module:setup({ '/opt/kumomta/etc/queues.toml' })
--   kumo.on('smtp_server_message_received', function(msg) queue_helper:apply(msg) end)
--
-- Files are TOML when the name ends in .toml, JSON otherwise, or inline Lua tables:
--
--   scheduling_header = "X-Schedule"   # msg:import_scheduling_header(name, true)
--   tenant_header = "X-Tenant"         # remove_tenant_header = true removes it
--   campaign_header = "X-Campaign"     # remove_campaign_header = true removes it
--   default_tenant = "default-tenant"  # used when there is no tenant header
--   [tenant.'mytenant']                # queue options, require_authz = ["id", ...],
--   egress_pool = 'pool-1'             # overall_max_message_rate = "100/s",
--   [tenant.'mytenant'.campaigns.'c']  # queue options, overall_max_message_rate
--   [queue.default]                    # the base for every queue
--   [queue.'gmail.com']                # queue options, routing_domain, overall_max_message_rate
--   [queue.'gmail.com'.'mytenant']     # domain + tenant (any key that is no queue option)
--   [queue.'gmail.com'.'mytenant'.'c'] # domain + tenant + campaign
--
-- A queue's options are, later overriding earlier: queue.default, queue[domain] (wildcards
-- such as '*.example.com' allowed), tenant[t], tenant[t].campaigns[c], queue[domain][t],
-- queue[domain][t][c]. Across files tenants merge key by key and queue blocks recursively.
--
-- wasmta: overall_max_message_rate becomes the resolved queue's max_message_rate (the
-- scheduled queue's rate, so it limits each domain!tenant!campaign queue, not the tenant's
-- traffic as a whole as KumoMTA's throttle_insert_ready_queue throttle does); the most
-- specific level setting max_message_rate or overall_max_message_rate wins.
local utils = require 'policy-extras.policy_utils'
local mod = {}

local TOP_OPTIONS = { scheduling_header = 'string', tenant_header = 'string', remove_tenant_header = 'boolean',
  campaign_header = 'string', remove_campaign_header = 'boolean', default_tenant = 'string' }

-- Helper-only keys per kind of block, and what their nested blocks are.
local RATE_AND_ROUTE = { overall_max_message_rate = true, routing_domain = true }
local LEVELS = {
  tenant = { keys = { require_authz = true, overall_max_message_rate = true }, named = 'campaigns', child = 'campaign' },
  domain = { keys = RATE_AND_ROUTE, named = 'tenants', child = 'domain_tenant', implicit = true },
  domain_tenant = { keys = RATE_AND_ROUTE, named = 'campaigns', child = 'campaign', implicit = true },
  campaign = { keys = RATE_AND_ROUTE },
}

local function label(file, i)
  return type(file) == 'table' and string.format('inline table #%d', i) or file
end

local function describe(files)
  local names = {}
  for i, f in ipairs(files) do
    table.insert(names, label(f, i))
  end
  return table.concat(names, ', ')
end

local function clean(err)
  return (string.gsub(tostring(err), '^.-kumo%.make_[%w_]+: ', '', 1))
end

local function read(file)
  if type(file) == 'table' then
    return file
  end
  local ok, data = pcall(utils.load_json_or_toml_file, file)
  if not ok then
    local text = tostring(data)
    error(string.find(text, file, 1, true) and text or (file .. ': ' .. text), 0)
  end
  return data
end

local function check_helper_key(k, v, where)
  if k == 'require_authz' then
    local ok = type(v) == 'table'
    for _, id in pairs(ok and v or {}) do
      ok = ok and type(id) == 'string'
    end
    if not ok then
      error(string.format('%s: require_authz must be a list of strings', where), 0)
    end
  elseif type(v) ~= 'string' then
    error(string.format('%s: %s must be a string', where, k), 0)
  elseif k == 'overall_max_message_rate' then
    local ok, err = pcall(kumo.make_queue_config, { max_message_rate = v })
    if not ok then
      error(string.format('%s: overall_max_message_rate: %s', where, clean(err)), 0)
    end
  end
end

-- One block as { params = queue options, children = nested blocks, helper-only keys }.
-- A key is a queue option when kumo.make_queue_config accepts it on its own; in domain
-- blocks an unknown key holding a table names a tenant (one level down, a campaign).
local function classify(raw, kind, where)
  local level = LEVELS[kind]
  if type(raw) ~= 'table' then
    error(string.format('%s: expected a table of queue options', where), 0)
  end
  local block = { params = {}, children = {} }
  for k, v in pairs(raw) do
    local path = string.format("%s.'%s'", where, tostring(k))
    if level.keys[k] then
      check_helper_key(k, v, where)
      block[k] = v
    elseif k == level.named then
      if type(v) ~= 'table' then
        error(string.format('%s: %s must be a table', where, k), 0)
      end
      for name, child in pairs(v) do
        block.children[name] = classify(child, level.child, string.format("%s.'%s'", where, name))
      end
    else
      local ok, err = pcall(kumo.make_queue_config, { [k] = v })
      if ok then
        block.params[k] = v
      elseif level.implicit and type(v) == 'table' and string.find(tostring(err), 'unknown field', 1, true) then
        block.children[k] = classify(v, level.child, path)
      else
        error(string.format('%s: %s', where, clean(err)), 0)
      end
    end
  end
  return block
end

-- Splits one file into options, raw tenants and raw queue blocks, checking every block.
local function split_file(data, where)
  local parts = { options = {}, tenants = {}, queues = {} }
  for k, v in pairs(data) do
    if k == 'tenant' or k == 'tenants' or k == 'queue' or k == 'queues' then
      if type(v) ~= 'table' then
        error(string.format('%s: %s must be a table', where, k), 0)
      end
      local into = (k == 'tenant' or k == 'tenants') and parts.tenants or parts.queues
      for name, block in pairs(v) do
        classify(block, into == parts.tenants and 'tenant' or 'domain', string.format("%s: %s.'%s'", where, k, name))
        into[name] = block
      end
    elseif TOP_OPTIONS[k] then
      if type(v) ~= TOP_OPTIONS[k] then
        error(string.format('%s: %s must be a %s', where, k, TOP_OPTIONS[k]), 0)
      end
      parts.options[k] = v
    else
      error(string.format("%s: unknown key '%s'", where, tostring(k)), 0)
    end
  end
  return parts
end

local function load_queue_config(files)
  local options, tenants, queues = {}, {}, {}
  for i, file in ipairs(files) do
    local parts = split_file(read(file), label(file, i))
    utils.merge_into(parts.options, options)
    for name, block in pairs(parts.tenants) do
      tenants[name] = utils.merge_into(block, tenants[name] or {})
    end
    for name, block in pairs(parts.queues) do
      queues[name] = utils.recursive_merge_into(block, queues[name] or {})
    end
  end
  local where = 'queue helper (' .. describe(files) .. ')'
  local data = { options = options, tenants = {}, queues = {} }
  for name, block in pairs(tenants) do
    data.tenants[name] = classify(block, 'tenant', string.format("%s: tenant.'%s'", where, name))
  end
  for name, block in pairs(queues) do
    data.queues[name] = classify(block, 'domain', string.format("%s: queue.'%s'", where, name))
  end
  -- the cached copy is plain data; each Lua context compiles its domain map once per load
  data.token = string.format('%d-%d', os.time(), math.random(1, 1 << 40))
  return data
end

local compiled = {}
local function compile(data)
  if compiled.token ~= data.token then
    compiled = { token = data.token, queues = kumo.domain_map.new(data.queues) }
  end
  return compiled.queues
end

-- Returns the queue options (nil when nothing applies) and the routing_domain.
local function resolve_config(data, domain, tenant, campaign)
  local queues = compile(data)
  local d = domain and queues[domain]
  local t = tenant and data.tenants[tenant]
  local dt = d and tenant and d.children[tenant]
  local levels = {
    queues['default'] or false,
    d or false,
    t or false,
    t and campaign and t.children[campaign] or false,
    dt or false,
    dt and campaign and dt.children[campaign] or false,
  }
  local params, rate, routing_domain = {}, nil, nil
  for _, block in ipairs(levels) do
    if block then
      utils.merge_into(block.params, params)
      rate = block.params.max_message_rate or block.overall_max_message_rate or rate
      routing_domain = block.routing_domain or routing_domain
    end
  end
  params.max_message_rate = rate
  return (not utils.table_is_empty(params)) and params or nil, routing_domain
end

function mod:setup(file_names)
  return self:setup_with_options { skip_queue_config_hook = false, file_names = file_names }
end

function mod:setup_with_options(options)
  if mod.CONFIGURED then
    error('queues module has already been configured', 2)
  end
  local cached_load_data = kumo.memoize(load_queue_config, { name = 'queue_helper_data', ttl = '1 minute', capacity = 10 })
  local function get_data()
    return cached_load_data(options.file_names)
  end

  local helper = { file_names = options.file_names }

  function helper:resolve_config(domain, tenant, campaign)
    return (resolve_config(get_data(), domain, tenant, campaign))
  end

  function helper:apply(msg)
    local data = get_data()
    local o = data.options
    if o.scheduling_header then
      msg:import_scheduling_header(o.scheduling_header, true)
    end
    if o.campaign_header then
      local campaign = msg:get_first_named_header_value(o.campaign_header)
      if campaign then
        msg:set_meta('campaign', campaign)
        if o.remove_campaign_header then
          msg:remove_all_named_headers(o.campaign_header)
        end
      end
    end
    local tenant, source
    if o.tenant_header then
      tenant = msg:get_first_named_header_value(o.tenant_header)
      if tenant then
        source = string.format("'%s' header", o.tenant_header)
        if o.remove_tenant_header then
          msg:remove_all_named_headers(o.tenant_header)
        end
      end
    end
    if not tenant and o.default_tenant then
      tenant, source = o.default_tenant, 'default_tenant option'
    end
    if tenant then
      local config = data.tenants[tenant]
      if not config then
        kumo.reject(500, string.format("tenant '%s' specified by %s is not defined in your queue config", tenant, source))
      end
      if config.require_authz then
        local authz_id = msg:get_meta 'authz_id'
        if not authz_id then
          kumo.reject(500, string.format("tenant '%s' requires SMTP AUTH", tenant))
        end
        if not utils.table_contains(config.require_authz, authz_id) then
          kumo.reject(500, string.format("authz_id '%s' is not authorized to send as tenant '%s'", authz_id, tenant))
        end
      end
      msg:set_meta('tenant', tenant)
    end
    local recipient = msg:recipient()
    if recipient then
      local _, routing_domain =
        resolve_config(data, recipient.domain, msg:get_meta 'tenant', msg:get_meta 'campaign')
      if routing_domain then
        msg:set_meta('routing_domain', routing_domain)
      end
    end
  end

  mod.CONFIGURED = { options = options, get_data = get_data, resolve_config = helper.resolve_config }

  if not options.skip_queue_config_hook then
    kumo.on('get_queue_config', function(domain, tenant, campaign, _routing_domain)
      local params = resolve_config(get_data(), domain, tenant, campaign)
      if params then
        return kumo.make_queue_config(params)
      end
    end)
  end
  return helper
end

-- `wasmta check`: the files load, and every egress_pool they name is a pool of the
-- sources helper (when it is in use).
kumo.on('validate_config', function()
  if not mod.CONFIGURED then
    return
  end
  local files = mod.CONFIGURED.options.file_names
  local context = 'queue helper (' .. describe(files) .. ')'
  local ok, data = pcall(load_queue_config, files)
  if not ok then
    kumo.validation_failed(context .. ': ' .. tostring(data))
    return
  end
  -- only when the policy uses the sources helper (requiring it here would register its
  -- handlers outside load time)
  local sources = package.loaded['policy-extras.sources']
  if type(sources) ~= 'table' or not sources.CONFIGURED then
    return
  end
  local good, source_data = pcall(sources.CONFIGURED.get_data)
  if not good then
    return -- the sources helper reports its own load errors
  end
  local function check(block, kind, what)
    local pool = block.params.egress_pool
    if pool and pool ~= 'unspecified' and not source_data.pools[pool] then
      kumo.validation_failed(
        string.format("%s: %s uses pool '%s' which is not present in your sources helper data", context, what, pool)
      )
    end
    local child = LEVELS[kind].child
    for name, block2 in pairs(block.children) do
      check(block2, child, string.format("%s %s '%s'", what, child == 'campaign' and 'campaign' or 'tenant', name))
    end
  end
  for name, block in pairs(data.tenants) do
    check(block, 'tenant', string.format("tenant '%s'", name))
  end
  for name, block in pairs(data.queues) do
    check(block, 'domain', string.format("domain '%s'", name))
  end
end)

return mod
