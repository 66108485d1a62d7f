-- policy-extras.policy_utils: small helpers KumoMTA policies use, written for wasmta.
-- Same function names and behaviour as KumoMTA's module of the same name.
local mod = {}

-- Deep equality of two values (tables compared key by key).
function mod.equals(a, b)
  if a == b then
    return true
  end
  if type(a) ~= 'table' or type(b) ~= 'table' then
    return false
  end
  for k, v in pairs(a) do
    if not mod.equals(v, b[k]) then
      return false
    end
  end
  for k, _ in pairs(b) do
    if a[k] == nil then
      return false
    end
  end
  return true
end

function mod.dumps(value, indent)
  indent = indent or ''
  if type(value) ~= 'table' then
    if type(value) == 'string' then
      return string.format('%q', value)
    end
    return tostring(value)
  end
  local keys = {}
  for k in pairs(value) do
    table.insert(keys, k)
  end
  table.sort(keys, function(x, y)
    return tostring(x) < tostring(y)
  end)
  local parts = {}
  local inner = indent .. '  '
  for _, k in ipairs(keys) do
    local key = type(k) == 'string' and k or ('[' .. tostring(k) .. ']')
    table.insert(parts, inner .. key .. ' = ' .. mod.dumps(value[k], inner))
  end
  if #parts == 0 then
    return '{}'
  end
  return '{\n' .. table.concat(parts, ',\n') .. '\n' .. indent .. '}'
end

function mod.assert_eq(a, b, message)
  if not mod.equals(a, b) then
    error(string.format('%s%s ~= %s', message and (message .. ': ') or '', mod.dumps(a), mod.dumps(b)), 2)
  end
end

function mod.assert_ne(a, b, message)
  if mod.equals(a, b) then
    error(string.format('%s%s == %s', message and (message .. ': ') or '', mod.dumps(a), mod.dumps(b)), 2)
  end
end

function mod.assert_matches(text, pattern, message)
  if not string.match(text, pattern) then
    error(string.format('%s%q does not match %q', message and (message .. ': ') or '', text, pattern), 2)
  end
end

-- Copies the keys of src into dest (shallow).
function mod.merge_into(src, dest)
  if src then
    for k, v in pairs(src) do
      dest[k] = v
    end
  end
  return dest
end

-- Copies src into dest, merging nested tables instead of replacing them.
function mod.recursive_merge_into(src, dest)
  if src then
    for k, v in pairs(src) do
      if type(v) == 'table' and type(dest[k]) == 'table' then
        mod.recursive_merge_into(v, dest[k])
      else
        dest[k] = v
      end
    end
  end
  return dest
end

function mod.table_contains(tbl, value)
  for _, v in pairs(tbl) do
    if v == value then
      return true
    end
  end
  return false
end

function mod.table_keys(tbl)
  local keys = {}
  for k in pairs(tbl) do
    table.insert(keys, k)
  end
  return keys
end

function mod.table_is_empty(tbl)
  return next(tbl) == nil
end

function mod.starts_with(text, prefix)
  return string.sub(text, 1, #prefix) == prefix
end

function mod.ends_with(text, suffix)
  return suffix == '' or string.sub(text, -#suffix) == suffix
end

-- Loads a .json or .toml file (by its extension) into a table.
function mod.load_json_or_toml_file(filename)
  if mod.ends_with(filename, '.toml') then
    return kumo.toml_load(filename)
  end
  return kumo.json_load(filename)
end

-- Splits "ip:port" or "[v6]:port" into ip and port (port may be nil).
function mod.split_ip_port(text)
  local v6, port = string.match(text, '^%[(.+)%]:(%d+)$')
  if v6 then
    return v6, tonumber(port)
  end
  local ip
  ip, port = string.match(text, '^([^:]+):(%d+)$')
  if ip then
    return ip, tonumber(port)
  end
  return text, nil
end

return mod
