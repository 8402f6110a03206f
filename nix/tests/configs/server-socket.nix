# A unix socket owned by systemd (socket activation).
{
  imports = [ ../probe-firewall.nix ];
  services.grit.server = {
    enable = true;
    listen = "unix:/run/grit-server/api.sock";
    socketActivation = true;
  };
  services.grit.pipelines.nightly.manifest = ../manifests/nightly.toml;
}
