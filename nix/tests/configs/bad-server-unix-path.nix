# NEGATIVE: a socket path outside /run without socket activation: the
# hardened unit could not create it (exit 2).
{
  services.grit.server = {
    enable = true;
    listen = "unix:/var/lib/grit/api.sock";
  };
  services.grit.pipelines.nightly.manifest = ../manifests/nightly.toml;
}
