-- policy-extras.listener_domains: our implementation of KumoMTA's listener_domains helper,
-- for wasmta. Same API and file format as KumoMTA's module of the same name.
--
--   local listener_domains = require 'policy-extras.listener_domains'
--   kumo.on('get_listener_domain', listener_domains:setup({ '/opt/kumomta/etc/listener_domains.toml' }))
--
-- Files are TOML when the name ends in .toml, JSON otherwise, or inline Lua tables:
--
--   ["example.com"]          # any kumo.make_listener_domain option
--   relay_to = true          # accept mail addressed to example.com from anyone
--   ["send.example.com"]
--   relay_from = [ '10.0.0.0/24' ]        # relay anywhere for this sender domain from these peers
--   relay_from_authz = [ 'username1' ]    # ... or from peers that authenticated as these ids
--   ["*.example.com"]        # wildcard; does not match example.com itself
--   log_oob = true           # log_arf = true likewise; setting false excludes from a wildcard
--   ["*"]                    # every other domain
--   [listener."127.0.0.1:25"."*.example.com"]   # for one listener only
--   log_oob = false
--
-- Top-level domains belong to listener "*". Across files the options of one (listener,
-- domain) pair are merged key by key. A lookup merges, key by key, the (listener, domain)
-- entry over the ("*", domain) entry over the ("*", "*") entry (KumoMTA's code returns the
-- first of these that exists, but its own test expects this merge), then hands the result
-- to kumo.make_listener_domain; nil when none exists.
local utils = require 'policy-extras.policy_utils'
local mod = {}

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

-- Checks each option on its own (so the error names it) and merges it into target.
local function add_entry(target, listener, domain, params, where)
  if type(params) ~= 'table' then
    error(string.format("%s: listener '%s' domain '%s' must be a table of listener domain options", where, listener, domain), 0)
  end
  target[listener] = target[listener] or {}
  local entry = target[listener][domain] or {}
  for k, v in pairs(params) do
    local ok, err = true, nil
    if k == 'relay_from_authz' then
      ok = type(v) == 'table'
      for _, id in pairs(ok and v or {}) do
        ok = ok and type(id) == 'string'
      end
      err = 'expected a list of authorization ids (strings)'
    else
      ok, err = pcall(kumo.make_listener_domain, { [k] = v })
    end
    if not ok then
      error(
        string.format(
          "%s: ListenerConfig: invalid value for field '%s' (listener '%s', domain '%s')\n%s",
          where, tostring(k), listener, domain, clean(err)
        ),
        0
      )
    end
    entry[k] = v
  end
  target[listener][domain] = entry
end

local function load_data(files)
  local by_listener = {}
  for i, file in ipairs(files) do
    local where = label(file, i)
    for key, value in pairs(read(file)) do
      if key == 'listener' then
        if type(value) ~= 'table' then
          error(string.format("%s: 'listener' must be a table of listener addresses", where), 0)
        end
        for listener, domains in pairs(value) do
          if type(domains) ~= 'table' then
            error(string.format("%s: listener '%s' must be a table of domains", where, listener), 0)
          end
          for domain, params in pairs(domains) do
            add_entry(by_listener, listener, domain, params, where)
          end
        end
      else
        add_entry(by_listener, '*', key, value, where)
      end
    end
  end
  -- the cached copy is plain data; each Lua context compiles its domain maps once per load
  return { by_listener = by_listener, token = string.format('%d-%d', os.time(), math.random(1, 1 << 40)) }
end

local compiled = {}
local function compile(data)
  if compiled.token ~= data.token then
    local maps = {}
    for listener, domains in pairs(data.by_listener) do
      maps[listener] = kumo.domain_map.new(domains)
    end
    compiled = { token = data.token, maps = maps }
  end
  return compiled.maps
end

-- The merged options for (domain, listener), or nil when no entry applies.
local function lookup(maps, domain, listener)
  local levels = {
    maps['*'] and maps['*']['*'] or false,
    maps['*'] and maps['*'][domain] or false,
    listener ~= '*' and maps[listener] and maps[listener][domain] or false,
  }
  local merged = nil
  for _, entry in ipairs(levels) do
    if entry then
      merged = utils.merge_into(entry, merged or {})
    end
  end
  return merged
end

-- relay_from_authz is ours, not make_listener_domain's: when the session authenticated as
-- one of the listed ids, the peer's own address becomes the relay_from list.
local function apply_authz(params, conn_meta)
  local authz = params.relay_from_authz
  params.relay_from_authz = nil
  if not authz or not conn_meta then
    return params
  end
  local authz_id = conn_meta:get_meta 'authz_id'
  local received_from = conn_meta:get_meta 'received_from'
  if authz_id and received_from and utils.table_contains(authz, authz_id) then
    local peer_ip = utils.split_ip_port(received_from)
    params.relay_from = { peer_ip }
  end
  return params
end

-- Returns the get_listener_domain handler: function(domain, listener, conn_meta).
function mod:setup(data_files)
  if mod.CONFIGURED then
    error('listener_domains module has already been configured', 2)
  end
  local cached_load_data = kumo.memoize(load_data, {
    name = 'listener_domains_data',
    ttl = '5 minutes',
    capacity = 10,
    invalidate_with_epoch = true,
  })
  mod.CONFIGURED = { data_files = data_files }

  return function(domain, listener, conn_meta)
    local maps = compile(cached_load_data(data_files))
    local params = lookup(maps, domain, listener)
    if not params then
      return nil
    end
    return kumo.make_listener_domain(apply_authz(params, conn_meta))
  end
end

-- `wasmta check`: the files load and every option is valid.
kumo.on('validate_config', function()
  if not mod.CONFIGURED then
    return
  end
  local files = mod.CONFIGURED.data_files
  local ok, err = pcall(load_data, files)
  if not ok then
    kumo.validation_failed(string.format('listener_domains helper (%s): %s', describe(files), tostring(err)))
  end
end)

return mod
