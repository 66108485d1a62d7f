-- policy-extras.dkim_sign: our implementation of KumoMTA's dkim_sign helper, for wasmta.
-- Same API, file format and signing rules as KumoMTA's module of the same name.
--
--   local dkim_sign = require 'policy-extras.dkim_sign'
--   local dkim_signer = dkim_sign:setup({ '/opt/kumomta/etc/dkim_data.toml' })
--   kumo.on('smtp_server_message_received', function(msg) ... dkim_signer(msg) end)  -- last
--
-- Files are TOML when the name ends in .toml, JSON otherwise, or inline Lua tables:
--
--   [base]
--   selector = "dkim1024"                     # default selector
--   headers = ["From", "To", "Subject"]       # default headers to sign
--   additional_signatures = ["MyESPName"]     # signature blocks applied to every message
--   vault_mount = "secret"                    # keys from HashiCorp Vault instead of disk,
--   vault_path_prefix = "dkim"                #   at <prefix>/<domain>/<selector>.key
--   [domain."example.com"]                    # matched against the From header's domain;
--   selector = "s1"                           #   wildcards such as "*.example.com" work
--   algo = "sha256"                           # or "ed25519"
--   filename = "/path/to/key"                 # default /opt/kumomta/etc/dkim/<domain>/<selector>.key
--   [signature."MyESPName"]                   # same keys as a domain block, plus:
--   domain = "myesp.com"                      # the signing domain (required)
--   policy = "OnlyIfMissingDomainBlock"       # only when no domain block signed; else always
--
-- header_canonicalization and body_canonicalization may be set in any block. A domain
-- block's policy is accepted and, as in KumoMTA, not acted on. Across files, base and each
-- domain and signature block merge key by key. setup loads and checks the files at once.
--
-- Signers are cached by their parameters (kumo.dkim.*), so a key file is read once per
-- ttl, not once per message. Keys from HashiCorp Vault are not supported by wasmta: the
-- signer raises an error saying so.
local utils = require 'policy-extras.policy_utils'
local mod = {}

local DKIM_PATH = '/opt/kumomta/etc/dkim'
-- algo -> the kumo.dkim function that makes its signer
local ALGOS = { sha256 = 'rsa_sha256_signer', ed25519 = 'ed25519_signer' }

local BLOCK_KEYS = {
  selector = 'string', headers = 'list', algo = 'string', filename = 'string', policy = 'string',
  header_canonicalization = 'string', body_canonicalization = 'string',
}
local SIGNATURE_KEYS = utils.merge_into(BLOCK_KEYS, { domain = 'string' })
-- [base] holds the defaults of every block (its algo, filename, ... apply where a block
-- does not say), plus the keys only it has
local BASE_KEYS = utils.merge_into(BLOCK_KEYS, {
  additional_signatures = 'list', vault_mount = 'string', vault_path_prefix = 'string',
})

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

-- Checks one block's keys. KumoMTA silently ignores an unknown key (a misspelt `selectr`
-- signs with the default selector); here it is an error naming the file and the key.
local function check_block(block, keys, where)
  if type(block) ~= 'table' then
    error(string.format('%s: expected a table', where), 0)
  end
  for k, v in pairs(block) do
    local kind = keys[k]
    if not kind then
      local known = {}
      for name in pairs(keys) do
        table.insert(known, name)
      end
      table.sort(known)
      error(string.format("%s: unknown key '%s' (known keys: %s)", where, tostring(k), table.concat(known, ', ')), 0)
    elseif kind == 'list' then
      local ok = type(v) == 'table'
      for _, item in pairs(ok and v or {}) do
        ok = ok and type(item) == 'string'
      end
      if not ok then
        error(string.format('%s: %s must be a list of strings', where, k), 0)
      end
    elseif type(v) ~= kind then
      error(string.format('%s: %s must be a %s', where, k, kind), 0)
    end
  end
  if block.algo and not ALGOS[block.algo] then
    error(string.format("%s: invalid algo '%s' (expected \"sha256\" or \"ed25519\")", where, block.algo), 0)
  end
end

local function load_dkim_data(files)
  local data = { base = {}, domain = {}, signature = {} }
  for i, file in ipairs(files) do
    local where = label(file, i)
    for key, value in pairs(read(file)) do
      if key == 'base' then
        check_block(value, BASE_KEYS, where .. ': [base]')
        utils.merge_into(value, data.base)
      elseif key == 'domain' or key == 'signature' then
        if type(value) ~= 'table' then
          error(string.format('%s: %s must be a table of named blocks', where, key), 0)
        end
        local keys = key == 'domain' and BLOCK_KEYS or SIGNATURE_KEYS
        for name, block in pairs(value) do
          check_block(block, keys, string.format('%s: [%s."%s"]', where, key, name))
          data[key][name] = utils.merge_into(block, data[key][name] or {})
        end
      else
        error(string.format("%s: unknown section '%s' (base, domain, signature)", where, tostring(key)), 0)
      end
    end
  end

  local context = 'dkim_sign helper (' .. describe(files) .. ')'
  local base = data.base
  for _, name in ipairs(base.additional_signatures or {}) do
    local sig = data.signature[name]
    if not sig then
      error(string.format("%s: dkim policy lists base.additional_signature '%s' but that signature is not defined in any signature block", context, name), 0)
    end
    if not sig.domain then
      error(string.format("%s: dkim signature '%s' is missing its signing domain", context, name), 0)
    end
    if not sig.selector and not base.selector then
      error(string.format("%s: dkim signature '%s' is missing a selector and no default selector is defined in base", context, name), 0)
    end
  end
  for name, block in pairs(data.domain) do
    if not block.selector and not base.selector then
      error(string.format("%s: dkim domain '%s' is missing a selector and no default selector is defined in base", context, name), 0)
    end
  end
  -- the cached copy is plain data; each Lua context compiles its domain map once per load
  data.token = string.format('%d-%d', os.time(), math.random(1, 1 << 40))
  return data
end

local compiled = {}
local function compile(data)
  if compiled.token ~= data.token then
    compiled = { token = data.token, domains = kumo.domain_map.new(data.domain) }
  end
  return compiled.domains
end

-- The signer parameters for one block signing as domain.
local function signer_params(base, block, domain)
  local selector = block.selector or base.selector
  local params = {
    domain = domain,
    selector = selector,
    headers = block.headers or base.headers,
    header_canonicalization = block.header_canonicalization or base.header_canonicalization,
    body_canonicalization = block.body_canonicalization or base.body_canonicalization,
  }
  if base.vault_mount then
    params.key = {
      vault_mount = base.vault_mount,
      vault_path = block.filename
        or string.format('%s/%s/%s.key', base.vault_path_prefix or 'dkim', domain, selector),
    }
  else
    params.key = block.filename or string.format('%s/%s/%s.key', DKIM_PATH, domain, selector)
  end
  return params
end

-- Returns function(msg) that signs msg; call it last in the reception events.
function mod:setup(dkim_data_files)
  local cached_load_data = kumo.memoize(load_dkim_data, {
    name = 'dkim_signing_data',
    ttl = '5 minutes',
    capacity = 10,
  })
  -- load now, so a broken file stops the policy (and `wasmta check`) with its error
  cached_load_data(dkim_data_files)

  local function sign(msg, params, algo)
    local signer = kumo.dkim[ALGOS[algo or 'sha256']](params)
    msg:dkim_sign(signer)
  end

  return function(msg)
    local data = cached_load_data(dkim_data_files)
    local base = data.base
    -- a message without a single From address has no domain block to match
    local ok, from_domain = pcall(function()
      local from = msg:from_header()
      return from and from.domain
    end)
    local signed_domain = false
    if ok and from_domain then
      local domain = string.lower(from_domain)
      local block = compile(data)[domain]
      if block then
        sign(msg, signer_params(base, block, domain), block.algo)
        signed_domain = true
      end
    end
    for _, name in ipairs(base.additional_signatures or {}) do
      local sig = data.signature[name]
      if not (sig.policy == 'OnlyIfMissingDomainBlock' and signed_domain) then
        sign(msg, signer_params(base, sig, sig.domain), sig.algo)
      end
    end
  end
end

return mod
