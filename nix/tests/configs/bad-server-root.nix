# NEGATIVE: the server as root (exit 2).
{
  services.grit.server = {
    enable = true;
    user = "root";
    group = "root";
  };
  services.grit.pipelines.nightly = {
    manifest = ../manifests/nightly.toml;
    user = "root";
    group = "root";
  };
}
