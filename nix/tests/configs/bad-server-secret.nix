# NEGATIVE: the token secret in the world-readable Nix store (exit 2).
{
  services.grit.server = {
    enable = true;
    tokenSecretFile = "${../manifests/nightly.toml}";
  };
  services.grit.pipelines.nightly.manifest = ../manifests/nightly.toml;
}
