-- policy-extras.shaping: KumoMTA's shaping helper API, written for wasmta.
-- local shaping = require 'policy-extras.shaping'
-- kumo.on('get_egress_path_config', shaping:setup({ '/etc/wasmta/shaping.toml' }))
local mod = {}

local DEFAULT_FILE = 'wasmta:default-shaping.toml'

-- Returns { get_egress_path_config, setup_publish, load_shaping_data, should_enqueue_log_record }.
function mod:setup_with_automation(options)
  options = options or {}
  for _, unsupported in ipairs({ 'publish', 'subscribe' }) do
    if options[unsupported] then
      kumo.log_warn('policy-extras.shaping: ' .. unsupported .. ' (TSA automation) is not supported by wasmta yet')
    end
  end
  local files = {}
  if not options.no_default_files then
    table.insert(files, DEFAULT_FILE)
  end
  for _, f in ipairs(options.extra_files or {}) do
    table.insert(files, f)
  end

  -- the core keeps one load per (files, options), shared by every context, and reloads
  -- it when a file changes (then bumps the config epoch); asking each time is cheap
  local function load_shaping_data()
    return kumo.shaping.load(files, options.load_validation_options)
  end

  local function get_egress_path_config(domain, egress_source, site_name)
    return load_shaping_data():get_egress_path_config(domain, egress_source, site_name)
  end

  -- `wasmta check` (like `kumod --validate`) loads the files and reports every error
  kumo.on('validate_config', function()
    local ok, data = pcall(load_shaping_data)
    if not ok then
      kumo.validation_failed(tostring(data))
      return
    end
    for _, e in ipairs(data:get_errors()) do
      kumo.validation_failed(e)
    end
  end)

  return {
    get_egress_path_config = get_egress_path_config,
    setup_publish = function() end,
    load_shaping_data = load_shaping_data,
    -- KumoMTA's publishes log records to TSA; without TSA no hook record is claimed, so
    -- other should_enqueue_log_record handlers decide
    should_enqueue_log_record = function(msg, hook_name)
      return nil
    end,
  }
end

-- Returns a get_egress_path_config handler using the default file plus extra_files.
function mod:setup(extra_files)
  return mod:setup_with_automation({ extra_files = extra_files }).get_egress_path_config
end

return mod
