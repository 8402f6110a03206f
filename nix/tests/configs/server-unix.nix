# A unix socket that grit serve creates itself, under /run.
{
  imports = [ ../probe-firewall.nix ];
  services.grit.server = {
    enable = true;
    listen = "unix:/run/grit-api/api.sock";
  };
  services.grit.pipelines.nightly.manifest = ../manifests/nightly.toml;
}
