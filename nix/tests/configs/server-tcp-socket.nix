# Socket activation on a privileged TCP port: systemd binds it, so the
# server needs no capability at all.
{
  imports = [ ../probe-firewall.nix ];
  services.grit.server = {
    enable = true;
    listen = "[::]:80";
    socketActivation = true;
    openFirewall = true;
  };
  services.grit.pipelines.nightly.manifest = ../manifests/nightly.toml;
}
