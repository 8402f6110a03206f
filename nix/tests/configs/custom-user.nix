# A user and group of the admin's, and a store outside /var/lib.
{
  users.users.etl = {
    isSystemUser = true;
    group = "etl";
  };
  users.groups.etl = { };

  services.grit.pipelines.etl = {
    manifest = ../manifests/nightly.toml;
    user = "etl";
    group = "etl";
    dataDir = "/srv/grit/etl";
    startAt = [
      "Mon..Fri *-*-* 06:00:00"
      "Sat *-*-* 12:00:00"
    ];
  };
}
