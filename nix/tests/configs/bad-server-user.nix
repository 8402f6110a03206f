# NEGATIVE: a served pipeline runs as another user than the server (exit 2).
{
  users.users.etl = {
    isSystemUser = true;
    group = "etl";
  };
  users.groups.etl = { };
  services.grit.server.enable = true;
  services.grit.pipelines.etl = {
    manifest = ../manifests/nightly.toml;
    user = "etl";
    group = "etl";
  };
}
