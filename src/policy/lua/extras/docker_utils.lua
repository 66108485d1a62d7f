-- policy-extras.docker_utils: the helper KumoMTA ships for container deployments,
-- written for wasmta.
--
--   local docker_utils = require 'policy-extras.docker_utils'
--   relay_hosts = { docker_utils.resolve_docker_network() }
local mod = {}

-- The /24 network of this container: the first IPv4 address of HOSTNAME (which docker
-- sets to the container's name), its last octet replaced. Without HOSTNAME, localhost's.
function mod.resolve_docker_network()
  local host = os.getenv('HOSTNAME') or 'localhost'
  for _, addr in ipairs(kumo.dns.lookup_addr(host)) do
    local prefix = string.match(addr, '^(%d+%.%d+%.%d+)%.%d+$')
    if prefix then
      return prefix .. '.0/24'
    end
  end
  error(string.format("policy-extras.docker_utils: %s has no IPv4 address to derive the docker network from", host), 2)
end

-- The traffic-shaping-automation (TSA) daemons of a docker deployment: one URL per
-- address of the service name (default 'tsa', deployed with endpoint_mode dnsrr), for the
-- shaping helper's publish and subscribe lists. wasmta does not talk to TSA yet: the
-- shaping helper says so when it is given these.
function mod.resolve_tsa_endpoints(name, port)
  name = name or 'tsa'
  port = port or 8008
  local urls = {}
  for _, addr in ipairs(kumo.dns.lookup_addr(name)) do
    local host = string.find(addr, ':', 1, true) and ('[' .. addr .. ']') or addr
    table.insert(urls, string.format('http://%s:%d', host, port))
  end
  return urls
end

return mod
