-- policy-extras.log_hooks: our implementation of KumoMTA's log_hooks helper, for wasmta.
-- Same functions, registrations and defaults as KumoMTA's module of the same name; it
-- reads no files. Call it at the top level of the policy, before the queue helper's setup.
--
--   local log_hooks = require 'policy-extras.log_hooks'
--   log_hooks:new_json {
--     name = 'webhook',
--     url = 'http://10.0.0.1:4242/log',              -- each record is POSTed here as JSON
--     log_parameters = { headers = { 'Subject' } },   -- passed on to kumo.configure_log_hook
--     queue_config = { retry_interval = '1m', max_retry_interval = '20m' },  -- the defaults
--   }
--   log_hooks:new { name = ..., constructor = function(domain, tenant, campaign) ... end,
--                   batch_size = 1, min_batch_size = 1, max_batch_latency = '0s' }
--   log_hooks:new_disposition_hook { name = 'ndr', hook = function(msg, log_record) ... end }
--
-- new/new_json queue each log record as a message in the queue '<name>.log_hook', which
-- delivers through the custom_lua constructor event 'make.<name>.log_hook'; the
-- connection's send(message) returns a disposition text, or calls kumo.reject (4xx: try
-- again later, 5xx: give up). With batch_size > 1 the connection's send_batch(messages)
-- gets several at once. new_json with batch_size > 1 puts up to batch_size records in one
-- message (wasmta's records_per_message: the spool and queue work once per batch) and
-- POSTs its data, the JSON array of them.
--
-- wasmta does better than KumoMTA's new_json here: an endpoint that is down is not a
-- reason to lose records. A connection error, a 5xx, 408 or 429 answer is retried on the
-- hook queue's schedule; only other 4xx answers (the endpoint refuses the record) give up.
--
-- new_disposition_hook registers kumo.configure_log_disposition_hook and the event
-- log_disposition_<name>(msg, log_record), called for each matching record about a
-- message before the code that logged it goes on (for a Bounce: while the spool still
-- holds the message, so msg:get_data() works).
local utils = require 'policy-extras.policy_utils'
local mod = {}

local function clean(err)
  local text = string.match(tostring(err), '^[^\n]*')
  text = string.gsub(text, '^runtime error: ', '', 1)
  return (string.gsub(text, '^.-kumo%.[%w_.]+: ', '', 1))
end

-- The options each function takes: anything else is a typo, refused by name.
local known = {
  new = { name = 1, constructor = 1, batch_size = 1, min_batch_size = 1, max_batch_latency = 1, log_parameters = 1, queue_config = 1 },
  new_json = { name = 1, url = 1, batch_size = 1, min_batch_size = 1, max_batch_latency = 1, log_parameters = 1, queue_config = 1 },
  new_disposition_hook = { name = 1, hook = 1, log_parameters = 1 },
}

local function check_options(options, what, required)
  if type(options) ~= 'table' then
    error(string.format('log_hooks:%s: expected a table of options', what), 0)
  end
  if type(options.name) ~= 'string' or options.name == '' then
    error(string.format('log_hooks:%s: name must be a non-empty string', what), 0)
  end
  local function fail(text, ...)
    error(string.format("log_hooks:%s{name='%s'}: " .. text, what, options.name, ...), 0)
  end
  for key in pairs(options) do
    if not known[what][key] then
      fail('unknown option %s', tostring(key))
    end
  end
  for key, kind in pairs(required) do
    if type(options[key]) ~= kind then
      fail('%s must be a %s', key, kind)
    end
  end
  if options.log_parameters ~= nil and type(options.log_parameters) ~= 'table' then
    fail('log_parameters must be a table')
  end
  for _, key in ipairs { 'batch_size', 'min_batch_size' } do
    local v = options[key]
    local n = type(v) == 'number' and math.tointeger(v) or nil -- 10.0 is 10
    if v ~= nil and (n == nil or n < 1) then
      local shown = type(v) == 'string' and string.format('%q (a string)', v) or tostring(v)
      fail('%s must be a whole number of at least 1, not %s', key, shown)
    end
    options[key] = n
  end
  if (options.min_batch_size or 1) > (options.batch_size or 1) then
    fail('min_batch_size (%d) must not exceed batch_size (%d)', options.min_batch_size, options.batch_size or 1)
  end
  local latency = options.max_batch_latency
  if latency ~= nil then
    local ok, err = pcall(kumo.make_queue_config, { protocol = { custom_lua = { constructor = 'x', max_batch_latency = latency } } })
    if not ok then
      fail('max_batch_latency must be a duration such as "100ms": %s', clean(err))
    end
  end
end

-- Runs f(...); an error in it is raised again at the line of the policy that called the
-- helper (f raises without a position).
local function at_caller(f, ...)
  local ok, err = pcall(f, ...)
  if not ok then
    error(err, 3)
  end
end

local defined_hooks = {}

local function new_hook(options, what)
  if what == 'new' then
    check_options(options, what, { constructor = 'function' }) -- new_json checked its own
  end
  if options.queue_config ~= nil and type(options.queue_config) ~= 'table' then
    error(string.format("log_hooks:%s{name='%s'}: queue_config must be a table", what, options.name), 0)
  end
  local name = options.name
  if defined_hooks[name] then
    error(string.format("log_hooks:%s{name='%s'}: a log hook of this name is already defined", what, name), 0)
  end
  defined_hooks[name] = true
  -- a "TLD" no real domain has, so the queue never collides with SMTP destinations
  local domain_name = name .. '.log_hook'
  local constructor_name = 'make.' .. domain_name

  local queue_config = utils.merge_into(options.queue_config, { retry_interval = '1m', max_retry_interval = '20m' })
  queue_config.protocol = {
    custom_lua = {
      constructor = constructor_name,
      batch_size = options.batch_size,
      min_batch_size = options.min_batch_size,
      max_batch_latency = options.max_batch_latency,
    },
  }
  local ok, err = pcall(kumo.make_queue_config, queue_config)
  if not ok then
    error(string.format("log_hooks:%s{name='%s'}: queue_config: %s", what, name, clean(err)), 0)
  end
  -- every record goes to the hook's queue without a should_enqueue_log_record call
  local hook_parameters = { name = name, queue = domain_name }
  if options.records_per_message then
    -- new_json: the records of a batch travel as one message (its data a JSON array), so
    -- the spool and the queue work once per batch; the queue sends one message at a time
    local custom = queue_config.protocol.custom_lua
    hook_parameters.records_per_message = custom.batch_size
    hook_parameters.min_records_per_message = custom.min_batch_size
    hook_parameters.max_batch_latency = custom.max_batch_latency
    -- a backlog (after an outage) still goes out batch_size records per POST: the queue
    -- counts each record of a message against batch_size, and send_batch joins the arrays
    queue_config.protocol.custom_lua = { constructor = constructor_name, batch_size = custom.batch_size }
  end

  kumo.on('pre_init', function()
    kumo.configure_log_hook(utils.merge_into(options.log_parameters, hook_parameters))
  end)

  -- KumoMTA's helper answers should_enqueue_log_record for its hooks; wasmta's hook above
  -- names its queue instead, so the event is not called for its records (a Lua call per
  -- record was much of what a hook cost). The handler stays for anyone who calls the
  -- event (wasmta policy test): it reads no record, since wasmta never offers records
  -- about delivering records (KumoMTA's loop check).
  kumo.on('should_enqueue_log_record', function(msg, hook_name)
    if hook_name ~= name then
      return -- another hook's record
    end
    msg:set_meta('queue', domain_name)
    return true
  end)

  kumo.on('get_queue_config', function(domain, _tenant, _campaign, _routing_domain)
    if domain == domain_name then
      return kumo.make_queue_config(queue_config)
    end
  end)

  kumo.on(constructor_name, options.constructor)
end

-- Registers a log hook delivered by options.constructor(domain, tenant, campaign), which
-- returns a connection object with a send(message) method.
function mod:new(options)
  at_caller(new_hook, options, 'new')
end

-- The answer of a webhook as a disposition: success returns it; a refusal that may pass
-- (5xx, 408 Request Timeout, 429 Too Many Requests) is retried later; any other answer
-- is permanent.
local function disposition(response)
  local text = string.format('%d %s: %s', response:status_code(), response:status_reason(), response:text())
  if response:status_is_success() then
    return text
  end
  local code = response:status_code()
  if response:status_is_server_error() or code == 408 or code == 429 then
    kumo.reject(451, text)
  end
  kumo.reject(550, text)
end

-- Registers a log hook that POSTs each record (JSON) to options.url; with batch_size > 1,
-- several records as one JSON array.
local function new_json(options)
  check_options(options, 'new_json', { url = 'string' })
  local url = options.url
  local ok, err = pcall(kumo.http.build_url, url, {})
  if ok and not url:match '^[Hh][Tt][Tt][Pp][Ss]?://' then
    ok, err = false, string.format('%q is not an http:// or https:// URL', url)
  end
  if not ok then
    error(string.format("log_hooks:new_json{name='%s'}: url: %s", options.name, clean(err)), 0)
  end
  local hook = utils.merge_into(options, {})
  -- called when a record is delivered, never while the policy loads
  hook.constructor = function(_domain, _tenant, _campaign)
    local client = kumo.http.build_client {}
    local connection = {}
    local function post(body)
      local response = client:post(url):header('Content-Type', 'application/json'):body(body):send()
      return disposition(response)
    end
    -- with batching, a message already holds a batch: its data is the JSON array
    function connection:send(message)
      return post(message:get_data())
    end
    if (options.batch_size or 1) > 1 then
      function connection:send_batch(messages)
        local parts = {}
        for i, message in ipairs(messages) do
          parts[i] = string.sub(message:get_data(), 2, -2) -- the records inside its [ ]
        end
        return post('[' .. table.concat(parts, ',') .. ']')
      end
    end
    return connection
  end
  if (options.batch_size or 1) > 1 then
    hook.records_per_message = true
  end
  new_hook(hook, 'new_json')
end

function mod:new_json(options)
  at_caller(new_json, options)
end

-- Registers hook(msg, log_record), called synchronously for each disposition record
-- (event log_disposition_<name>); log_parameters (e.g. per_record) are passed on to
-- kumo.configure_log_disposition_hook.
local function new_disposition_hook(options)
  check_options(options, 'new_disposition_hook', { hook = 'function' })
  local name = options.name
  kumo.on('pre_init', function()
    kumo.configure_log_disposition_hook(utils.merge_into(options.log_parameters, { name = name }))
  end)
  kumo.on('log_disposition_' .. name, options.hook)
end

function mod:new_disposition_hook(options)
  at_caller(new_disposition_hook, options)
end

return mod
