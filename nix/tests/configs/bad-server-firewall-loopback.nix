# NEGATIVE: openFirewall while listening on loopback (the default listen)
# (exit 2).
{
  services.grit.server = {
    enable = true;
    openFirewall = true;
  };
  services.grit.pipelines.nightly.manifest = ../manifests/nightly.toml;
}
