# NEGATIVE: port out of range (exit 2).
{
  services.grit.server = {
    enable = true;
    listen = "0.0.0.0:70000";
  };
  services.grit.pipelines.nightly.manifest = ../manifests/nightly.toml;
}
