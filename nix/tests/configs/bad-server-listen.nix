# NEGATIVE: a listen address that is neither HOST:PORT nor unix:/PATH (exit 2).
{
  services.grit.server = {
    enable = true;
    listen = "9009";
  };
  services.grit.pipelines.nightly.manifest = ../manifests/nightly.toml;
}
