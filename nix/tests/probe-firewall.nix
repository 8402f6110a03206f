# Test-only: the harness's result.json has no networking.firewall, so the
# server configurations import this to see what the module opened, as
# environment.etc."harness/firewall.json" (read by expect.py).
{ config, ... }:
{
  environment.etc."harness/firewall.json".text = builtins.toJSON {
    allowedTCPPorts = config.networking.firewall.allowedTCPPorts or [ ];
  };
}
