# A manifest path and a daily timer; everything else default.
{
  services.grit.pipelines.nightly = {
    manifest = ../manifests/nightly.toml;
    startAt = "daily";
  };
}
