# User namespaces switched off system-wide: a warning, not an error.
{
  security.allowUserNamespaces = false;
  services.grit.pipelines.nightly.manifest = ../manifests/nightly.toml;
}
