# NEGATIVE: two served pipelines with one store and conflicting environment
# values; they would share one process (exit 2).
{
  services.grit.server.enable = true;
  services.grit.pipelines.a = {
    manifest = ../manifests/nightly.toml;
    dataDir = "/var/lib/grit/shared";
    environment.TZ = "UTC";
  };
  services.grit.pipelines.b = {
    manifest = ../manifests/nightly.toml;
    dataDir = "/var/lib/grit/shared";
    environment.TZ = "Europe/Berlin";
  };
}
