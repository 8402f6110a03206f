# NEGATIVE: keys the module derives, set by hand in settings and
# serverSettings (exit 2).
{
  services.grit.server = {
    enable = true;
    settings.listen = "0.0.0.0:9009";
  };
  services.grit.pipelines.nightly = {
    manifest = ../manifests/nightly.toml;
    serverSettings = {
      db = "/elsewhere";
      jobs = 4;
    };
  };
}
