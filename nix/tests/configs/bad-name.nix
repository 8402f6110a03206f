# NEGATIVE: a pipeline name that cannot be part of a unit name (exit 2).
{
  services.grit.pipelines."my pipeline".manifest = ../manifests/nightly.toml;
}
