# NEGATIVE: server.pipelines names a pipeline that is not declared, and one
# that is disabled (exit 2).
{
  services.grit.server = {
    enable = true;
    pipelines = [
      "nightly"
      "nigthly"
      "off"
    ];
  };
  services.grit.pipelines.nightly.manifest = ../manifests/nightly.toml;
  services.grit.pipelines.off = {
    enable = false;
    manifest = ../manifests/nightly.toml;
  };
}
