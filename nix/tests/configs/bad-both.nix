# NEGATIVE: manifest and settings both set; the assertion must fail (exit 2).
{
  services.grit.pipelines.twice = {
    manifest = ../manifests/nightly.toml;
    settings.step = [
      {
        name = "x";
        script = "true";
      }
    ];
  };
}
