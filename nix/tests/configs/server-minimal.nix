# The server with its defaults, serving the one pipeline declared: no
# oneshot unit or timer for it, the admin command stays, grit-token appears.
{
  imports = [ ../probe-firewall.nix ];
  services.grit.server.enable = true;
  services.grit.pipelines.nightly.manifest = ../manifests/nightly.toml;
}
