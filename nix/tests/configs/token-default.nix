# For the grit-token test in check.sh: the default token secret (in the
# server's state directory), a server user that exists on a Debian host.
{
  services.grit.server = {
    enable = true;
    user = "nobody";
    group = "nogroup";
  };
  services.grit.pipelines.nightly = {
    manifest = ../manifests/nightly.toml;
    user = "nobody";
    group = "nogroup";
  };
}
