# NEGATIVE: openFirewall with a unix socket: no port to open (exit 2).
{
  services.grit.server = {
    enable = true;
    listen = "unix:/run/grit-server/api.sock";
    openFirewall = true;
  };
  services.grit.pipelines.nightly.manifest = ../manifests/nightly.toml;
}
