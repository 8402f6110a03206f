# For the wrapper test in check.sh: a user and group that exist on a Debian
# host, and an environment file in check.sh's scratch directory.
let
  root = builtins.getEnv "GRIT_CHECK_ROOT";
in
{
  services.grit.pipelines.nightly = {
    manifest = ../manifests/nightly.toml;
    user = "nobody";
    group = "nogroup";
    environmentFile = "${root}/secret.env";
    environment.FROM_NIX = "a b $HOME";
  };
}
