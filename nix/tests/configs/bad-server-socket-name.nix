# NEGATIVE: socket activation with a host name, which ListenStream= does
# not resolve (exit 2).
{
  services.grit.server = {
    enable = true;
    listen = "localhost:9009";
    socketActivation = true;
  };
  services.grit.pipelines.nightly.manifest = ../manifests/nightly.toml;
}
