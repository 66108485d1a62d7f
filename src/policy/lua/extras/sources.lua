-- policy-extras.sources: our implementation of KumoMTA's sources helper, for wasmta.
-- Same API, file format and behaviour as KumoMTA's module of the same name.
--
--   local sources = require 'policy-extras.sources'
--   sources:setup({ '/opt/kumomta/etc/sources.toml' })
--
-- It registers get_egress_source and get_egress_pool. Each file is TOML when its name ends
-- in .toml and JSON otherwise; an inline Lua table is used as it is. Format:
--
--   [source."ip-1"]                 # any kumo.make_egress_source option; name = "ip-1"
--   source_address = "10.0.0.1"
--   ehlo_domain = "mta1.example.com"
--
--   [pool."BestReputation"."ip-1"]  # a member of pool BestReputation, weight 1
--   [pool."Medium"."ip-2"]
--   weight = 2                      # optional; 0 leaves the source unused
--
-- Across files a source's options are merged key by key and pool members are added (a
-- member named again takes the later weight). A pool exists only once it has a member.
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

-- kumo.make_* errors begin 'file:line: kumo.make_x: '; the key and problem are what matter
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

local function load_file(file, where, target)
  local data = read(file)
  for key in pairs(data) do
    if key ~= 'source' and key ~= 'pool' then
      error(string.format("%s: unknown key '%s' (expected [source.\"name\"] or [pool.\"name\"] sections)", where, key), 0)
    end
  end

  for name, params in pairs(data.source or {}) do
    if type(params) ~= 'table' then
      error(string.format("%s: source '%s' must be a table of egress source options", where, name), 0)
    end
    local merged = target.sources[name] or {}
    for k, v in pairs(params) do
      -- each option is checked on its own, so the error names the key
      local ok, err = pcall(kumo.make_egress_source, { name = 'dummy', [k] = v })
      if not ok then
        error(string.format("%s: source '%s': %s", where, name, clean(err)), 0)
      end
      merged[k] = v
    end
    merged.name = name
    target.sources[name] = merged
  end

  for pool, members in pairs(data.pool or {}) do
    if type(members) ~= 'table' then
      error(string.format("%s: pool '%s' must be a table of sources", where, pool), 0)
    end
    local names = utils.table_keys(members)
    table.sort(names)
    for _, source in ipairs(names) do
      local entry = members[source]
      if type(entry) ~= 'table' then
        error(string.format("%s: pool '%s' source '%s' must be a table (only 'weight' may be set)", where, pool, source), 0)
      end
      for k, v in pairs(entry) do
        if k ~= 'weight' then
          error(string.format("%s: pool '%s' source '%s': unknown key '%s' (only 'weight' may be set)", where, pool, source, k), 0)
        end
        if type(v) ~= 'number' or v < 0 then
          error(string.format("%s: pool '%s' source '%s': weight must be a number >= 0", where, pool, source), 0)
        end
      end
      target.pools[pool] = target.pools[pool] or { name = pool, entries = {} }
      local entries = target.pools[pool].entries
      local new = { name = source, weight = entry.weight }
      local replaced = false
      for i, e in ipairs(entries) do
        if e.name == source then
          entries[i], replaced = new, true
        end
      end
      if not replaced then
        table.insert(entries, new)
      end
    end
  end
end

local function load_data(files)
  local target = { sources = {}, pools = {} }
  for i, file in ipairs(files) do
    load_file(file, label(file, i), target)
  end
  return target
end

-- Loads the files, memoized; registers get_egress_source and get_egress_pool.
function mod:setup(data_files)
  if mod.CONFIGURED then
    error('sources module has already been configured', 2)
  end
  local cached_load_data = kumo.memoize(load_data, {
    name = 'sources_data',
    ttl = '5 minutes',
    capacity = 10,
    invalidate_with_epoch = true,
  })
  local function get_data()
    return cached_load_data(data_files)
  end
  mod.CONFIGURED = { data_files = data_files, get_data = get_data }

  kumo.on('get_egress_source', function(name)
    local params = get_data().sources[name]
    if not params then
      if name == 'unspecified' then
        return nil -- wasmta's built-in definition applies
      end
      error(string.format("source '%s' is not defined in your sources files (%s)", name, describe(data_files)), 0)
    end
    return kumo.make_egress_source(params)
  end)

  kumo.on('get_egress_pool', function(name)
    local params = get_data().pools[name]
    if not params then
      if name == 'unspecified' then
        return nil
      end
      error(string.format("pool '%s' is not defined in your sources files (%s)", name, describe(data_files)), 0)
    end
    return kumo.make_egress_pool(params)
  end)
end

-- `wasmta check`: every source and pool must make a valid object, and every pool member
-- must be a defined source.
kumo.on('validate_config', function()
  if not mod.CONFIGURED then
    return
  end
  local files = mod.CONFIGURED.data_files
  local context = 'sources helper (' .. describe(files) .. ')'
  local ok, data = pcall(load_data, files)
  if not ok then
    kumo.validation_failed(context .. ': ' .. tostring(data))
    return
  end
  for name, params in pairs(data.sources) do
    local good, err = pcall(kumo.make_egress_source, params)
    if not good then
      kumo.validation_failed(string.format("%s: source '%s': %s", context, name, clean(err)))
    end
  end
  for name, params in pairs(data.pools) do
    local good, err = pcall(kumo.make_egress_pool, params)
    if not good then
      kumo.validation_failed(string.format("%s: pool '%s': %s", context, name, clean(err)))
    end
    for _, entry in ipairs(params.entries) do
      if not data.sources[entry.name] and entry.name ~= 'unspecified' then
        kumo.validation_failed(
          string.format("%s: pool '%s' references source '%s' which is not defined", context, name, entry.name)
        )
      end
    end
  end
end)

return mod
